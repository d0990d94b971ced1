-- Insert-mode keys: accept / accept_word / accept_line / next / prev / dismiss.
--
-- Each key is an expr mapping. With a suggestion shown it runs the action through <Cmd>
-- (buffers cannot be edited from an expr mapping); otherwise it returns
-- <Plug>(codegen-lsp-fallback-NAME), which is the mapping the key had before setup() or,
-- if it had none, the key itself. So <Tab> still indents when there is nothing to accept.

local client = require("codegen_lsp.client")
local suggestion = require("codegen_lsp.suggestion")

local M = {}

-- action name -> { call to run, whether it needs a suggestion on screen, description }
local ACTIONS = {
  accept = { "accept('all')", true, "Accept the suggestion" },
  accept_word = { "accept('word')", true, "Accept the next word of the suggestion" },
  accept_line = { "accept('line')", true, "Accept the rest of the line of the suggestion" },
  next = { "cycle(1)", false, "Next suggestion (or ask for one)" },
  prev = { "cycle(-1)", false, "Previous suggestion (or ask for one)" },
  dismiss = { "dismiss()", true, "Dismiss the suggestion" },
}

-- lhs -> the global insert-mode mapping it had before setup() (maparg dict, or nil)
local installed = {}

local function plug(name)
  return ("<Plug>(codegen-lsp-fallback-%s)"):format(name)
end

--- Map `lhs` again as the maparg() dict `prev` describes (only what vim.keymap.set can say).
local function remap(lhs, prev)
  vim.keymap.set("i", lhs, prev.callback or prev.rhs, {
    expr = prev.expr == 1,
    remap = prev.noremap == 0,
    silent = prev.silent == 1,
    nowait = prev.nowait == 1,
    desc = prev.desc,
  })
end

--- Run action `name` if it applies now; the expr mapping's result.
function M.keys_for(name)
  local action = ACTIONS[name]
  local applies
  if action[2] then
    applies = suggestion.is_visible()
  else
    applies = suggestion.enabled() and client.is_attached(vim.api.nvim_get_current_buf())
  end
  if applies then
    return ("<Cmd>lua require('codegen_lsp.suggestion').%s<CR>"):format(action[1])
  end
  return plug(name)
end

--- Remove our mappings and put back the ones they replaced.
function M.teardown()
  for lhs, entry in pairs(installed) do
    pcall(vim.keymap.del, "i", lhs)
    pcall(vim.keymap.del, "i", plug(entry.name))
    if entry.prev then
      remap(lhs, entry.prev)
    end
  end
  installed = {}
end

--- Install the keys of `keymaps` (name -> lhs or false).
function M.setup(keymaps)
  M.teardown()
  for name, lhs in pairs(keymaps) do
    if lhs then
      local prev = vim.fn.maparg(lhs, "i", false, true)
      if vim.tbl_isempty(prev) or prev.buffer == 1 then
        prev = nil
      end
      if prev then
        remap(plug(name), prev)
      else
        vim.keymap.set("i", plug(name), lhs, { remap = false, desc = "codegen-lsp: the key itself" })
      end
      vim.keymap.set("i", lhs, function()
        return M.keys_for(name)
      end, { expr = true, remap = true, silent = true, desc = "codegen-lsp: " .. ACTIONS[name][3] })
      installed[lhs] = { name = name, prev = prev }
    end
  end
end

return M
