-- codegen_lsp: Neovim client of `codegen-lsp serve` (a CodeGen model running locally).
--
--   require("codegen_lsp").setup({ server = { maxNewTokens = 48 } })
--
-- setup() validates the options, starts the server for the configured filetypes and installs
-- the ghost-text autocmds (one augroup, "codegen_lsp") and insert-mode keys. See
-- :help codegen-lsp.

local client = require("codegen_lsp.client")
local config = require("codegen_lsp.config")
local keymaps = require("codegen_lsp.keymaps")
local suggestion = require("codegen_lsp.suggestion")

local M = {}

M.AUGROUP = "codegen_lsp"
M.GENERATE_FUNCTION_COMMAND = "codegen.generateFunction"

local is_setup = false

local function notify(message, level)
  vim.notify("codegen-lsp: " .. message, level or vim.log.levels.INFO)
end

local function define_highlight()
  vim.cmd("highlight default link CodegenSuggestion Comment")
end

local function attach_if_wanted(bufnr)
  if vim.tbl_contains(config.options.filetypes, vim.bo[bufnr].filetype) then
    client.attach(bufnr)
  end
end

local function create_autocmds()
  local group = vim.api.nvim_create_augroup(M.AUGROUP, { clear = true })
  local function on(event, desc, callback, pattern)
    vim.api.nvim_create_autocmd(event, { group = group, pattern = pattern, desc = desc, callback = callback })
  end
  local function attached(fn)
    return function(args)
      if client.is_attached(args.buf) then
        fn(args)
      end
    end
  end
  on("FileType", "codegen-lsp: start the server for this buffer", function(args)
    attach_if_wanted(args.buf)
  end, config.options.filetypes)
  on("InsertEnter", "codegen-lsp: ask for a suggestion", attached(suggestion.on_insert_enter))
  on("TextChangedI", "codegen-lsp: update or ask for a suggestion", attached(suggestion.on_text_changed))
  on("CursorMovedI", "codegen-lsp: drop the suggestion on cursor move", attached(suggestion.on_cursor_moved))
  on({ "InsertLeave", "BufLeave" }, "codegen-lsp: clear the suggestion", suggestion.on_leave)
  on("ColorScheme", "codegen-lsp: define CodegenSuggestion", define_highlight)
  local was_ready = false
  on("User", "codegen-lsp: ask again when the model becomes ready", function()
    local st = client.status().state
    local ready = st == "ready" or st == "generating"
    if ready and not was_ready then
      suggestion.on_ready()
    end
    was_ready = ready
  end, "CodegenStatus")
end

--- Configure and start; see :help codegen_lsp.setup(). Calling it again applies new options.
function M.setup(opts)
  config.setup(opts)
  suggestion.setup(config.options)
  define_highlight()
  create_autocmds()
  keymaps.setup(config.options.keymaps)
  is_setup = true
  if client.get() then
    client.notify_settings()
  end
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) then
      attach_if_wanted(bufnr)
    end
  end
end

--- Whether setup() ran.
function M.is_setup()
  return is_setup
end

--- Switch ghost-text suggestions on or off (`on` nil flips); returns the new state.
function M.toggle(on)
  local enabled = suggestion.toggle(on)
  notify("suggestions " .. (enabled and "on" or "off"))
  return enabled
end

--- Ask the server to write the body of the function at the cursor (it applies the edit).
function M.generate_function()
  local bufnr = vim.api.nvim_get_current_buf()
  if not client.is_attached(bufnr) then
    notify("the server is not attached to this buffer", vim.log.levels.WARN)
    return
  end
  local pos = vim.api.nvim_win_get_cursor(0)
  local line = vim.api.nvim_buf_get_lines(bufnr, pos[1] - 1, pos[1], false)[1] or ""
  local position = {
    line = pos[1] - 1,
    character = client.char_index(line, pos[2], client.offset_encoding()),
  }
  local params = {
    command = M.GENERATE_FUNCTION_COMMAND,
    arguments = { vim.uri_from_bufnr(bufnr), position },
  }
  client.request(bufnr, "workspace/executeCommand", params, function(err)
    if err then
      notify("generating the function failed: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    end
  end)
end

--- The status line text: "codegen-lsp: ready", "codegen-lsp: loading 40%", ...
function M.status_text()
  local status, progress = client.status()
  local text = "codegen-lsp: " .. status.state
  if progress and progress.percentage then
    text = ("%s %d%%"):format(text, progress.percentage)
  end
  if not suggestion.enabled() then
    text = text .. " (suggestions off)"
  end
  return text
end

--- Ask the server for its status and show it (:CodegenStatus).
function M.show_status()
  client.request_status(function(status, err)
    if status then
      local message = status.message and status.message ~= "" and (" - " .. status.message) or ""
      notify(("%s%s%s"):format(status.state, message, suggestion.enabled() and "" or " (suggestions off)"))
    else
      notify(M.status_text() .. " (" .. tostring(err) .. ")", vim.log.levels.WARN)
    end
  end)
end

return M
