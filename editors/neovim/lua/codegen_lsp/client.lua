-- The LSP client of codegen_lsp: starting `codegen-lsp serve` (one process per Neovim, shared
-- by every buffer), requests with cancellation, and the server's status.
--
-- Works on Neovim 0.7 (vim.lsp.start_client + buf_attach_client, `client.request`) and on
-- 0.8+ (vim.lsp.start; 0.11 method calls `client:request`).

local config = require("codegen_lsp.config")

local M = {}

M.name = "codegen_lsp"
M.STATUS_METHOD = "codegen/status"

local has_0_8 = vim.fn.has("nvim-0.8") == 1
local has_0_11 = vim.fn.has("nvim-0.11") == 1
local uv = vim.uv or vim.loop

local state = {
  client_id = nil,
  -- Bumped on every status change, so an answer can tell whether it is stale.
  seq = 0,
  -- Last `codegen/status` from the server: { state = ..., message = ... }.
  status = { state = "stopped", message = "server not started" },
  -- Last `$/progress` value of a model load still running.
  progress = nil,
}

--- Call method `name` of an LSP client object on any supported Neovim version.
local function call(client, name, ...)
  if has_0_11 then
    return client[name](client, ...)
  end
  return client[name](...)
end
M.call = call

local function set_status(status)
  state.seq = state.seq + 1
  state.status = { state = status.state or "error", message = status.message or "" }
  if state.status.state ~= "loading" then
    state.progress = nil
  end
  local opts = { pattern = "CodegenStatus", modeline = false }
  if has_0_8 then
    opts.data = vim.deepcopy(state.status)
  end
  vim.api.nvim_exec_autocmds("User", opts)
end

--- The server's last reported status: { state = "loading"|"ready"|"generating"|"error"|"stopped", message }.
function M.status()
  return vim.deepcopy(state.status), state.progress and vim.deepcopy(state.progress)
end

--- The command that starts the server (`cmd`, else `python -m codegen_lsp serve` when
--- `python` is set, else `codegen-lsp serve` from PATH), or nil and a reason.
function M.command()
  local opts = config.options
  if opts.cmd then
    return vim.deepcopy(opts.cmd)
  end
  if opts.python then
    return { opts.python, "-m", "codegen_lsp", "serve" }
  end
  local exe = vim.fn.exepath("codegen-lsp")
  if exe ~= "" then
    return { exe, "serve" }
  end
  return nil,
    "`codegen-lsp` is not on PATH; install it from a checkout (pip install -e . in a "
      .. "virtual environment, see the README) or set `cmd` or `python`"
end

local function root_dir(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local dir = name ~= "" and vim.fn.fnamemodify(name, ":p:h") or vim.fn.getcwd()
  while dir and dir ~= "" do
    for _, marker in ipairs(config.options.root_markers) do
      if uv.fs_stat(dir .. "/" .. marker) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ":h")
    if parent == dir then
      break
    end
    dir = parent
  end
  return vim.fn.getcwd()
end

local function on_progress(err, result, ctx, cfg)
  if result and type(result.value) == "table" then
    state.progress = result.value.kind ~= "end" and result.value or nil
  end
  return vim.lsp.handlers["$/progress"](err, result, ctx, cfg)
end

local function client_config(cmd, bufnr)
  local definitions = require("codegen_lsp.definitions")
  return {
    name = M.name,
    cmd = cmd,
    cmd_env = config.options.cmd_env,
    root_dir = root_dir(bufnr),
    init_options = { codegen = config.server_settings() },
    -- experimental.codegenDefinitions: the other language servers resolve names for prompts
    capabilities = definitions.capabilities(),
    handlers = {
      [definitions.RESOLVE] = definitions.on_resolve,
      [M.STATUS_METHOD] = function(_, result)
        if type(result) == "table" then
          set_status(result)
        end
      end,
      ["$/progress"] = on_progress,
    },
    on_init = function(client)
      state.client_id = client.id
      set_status({ state = "loading", message = "server started" })
      local seq = state.seq
      -- Ask once, in case a notification went out before the handlers were in place.
      M.request_status(function(status)
        if status and state.seq == seq then
          set_status(status)
        end
      end, client)
    end,
    on_exit = function(code, signal)
      state.client_id = nil
      local message = ("server exited (code %s, signal %s)"):format(code, signal)
      vim.schedule(function()
        set_status({ state = code == 0 and "stopped" or "error", message = message })
      end)
    end,
  }
end

--- The running client object, or nil.
function M.get()
  if not state.client_id then
    return nil
  end
  local client = vim.lsp.get_client_by_id(state.client_id)
  if client and not (client.is_stopped and call(client, "is_stopped")) then
    return client
  end
  return nil
end

--- True when the server is attached to `bufnr`.
function M.is_attached(bufnr)
  return state.client_id ~= nil and vim.lsp.buf_is_attached(bufnr, state.client_id)
end

--- Start the server if needed and attach it to `bufnr`; returns the client id or nil, err.
function M.attach(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  if vim.bo[bufnr].buftype ~= "" then
    return nil, "not a file buffer"
  end
  local cmd, err = M.command()
  if not cmd then
    if state.status.message ~= err then
      vim.notify("codegen-lsp: " .. err, vim.log.levels.ERROR)
    end
    set_status({ state = "error", message = err })
    return nil, err
  end
  local cfg = client_config(cmd, bufnr)
  local id
  if has_0_8 then
    id = vim.lsp.start(cfg, {
      bufnr = bufnr,
      -- One server (one model in memory) for every buffer, whatever its root.
      reuse_client = function(client)
        return client.name == M.name
      end,
    })
  else
    local client = M.get()
    id = client and client.id or vim.lsp.start_client(cfg)
    if id then
      vim.lsp.buf_attach_client(bufnr, id)
    end
  end
  if not id then
    set_status({ state = "error", message = "the server did not start: " .. table.concat(cmd, " ") })
    return nil, "start failed"
  end
  state.client_id = id
  return id
end

--- Send `method` to the server for `bufnr`; `handler(err, result)` runs unless cancelled.
--- Returns a function that cancels the request, or nil when no server runs.
function M.request(bufnr, method, params, handler)
  local client = M.get()
  if not client then
    return nil
  end
  local ok, request_id = call(client, "request", method, params, function(err, result)
    handler(err, result)
  end, bufnr)
  if not ok or not request_id then
    return nil
  end
  return function()
    call(client, "cancel_request", request_id)
  end
end

--- Ask the server for its status; `callback(status_or_nil, err)`.
function M.request_status(callback, client)
  client = client or M.get()
  if not client then
    callback(nil, "no codegen-lsp client is running")
    return
  end
  call(client, "request", M.STATUS_METHOD, vim.empty_dict(), function(err, result)
    if err or type(result) ~= "table" then
      callback(nil, err and (err.message or vim.inspect(err)) or "no result")
      return
    end
    callback(result, nil)
  end)
end

--- Send the current server settings (after setup() changed them).
function M.notify_settings()
  local client = M.get()
  if client then
    call(client, "notify", "workspace/didChangeConfiguration", {
      settings = { codegen = config.server_settings() },
    })
  end
end

--- Tell the server a suggestion (`kind` "all") or a word or line of one was accepted.
function M.notify_accept(kind)
  local client = M.get()
  if client then
    call(client, "notify", "codegen/didAccept", { kind = kind })
  end
end

--- Stop the server.
function M.stop()
  local client = M.get()
  if client then
    call(client, "stop")
  end
end

--- The position encoding the server and client agreed on.
function M.offset_encoding()
  local client = M.get()
  return client and client.offset_encoding or "utf-16"
end

--- Column `byte_col` of `line` as an index in `encoding` units.
function M.char_index(line, byte_col, encoding)
  if encoding == "utf-8" then
    return byte_col
  end
  if has_0_11 then
    return vim.str_utfindex(line, encoding, byte_col, false)
  end
  local utf32, utf16 = vim.str_utfindex(line, byte_col)
  return encoding == "utf-32" and utf32 or utf16
end

--- Index `index` (in `encoding` units) of `line` as a byte column, clamped to the line.
function M.byte_col(line, index, encoding)
  if encoding == "utf-8" then
    return math.min(index, #line)
  end
  if has_0_11 then
    return vim.str_byteindex(line, encoding, index, false)
  end
  local ok, col = pcall(vim.str_byteindex, line, index, encoding == "utf-16")
  return ok and col or #line
end

return M
