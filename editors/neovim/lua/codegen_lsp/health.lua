-- :checkhealth codegen_lsp - Neovim version, setup(), server command and version, whether the
-- server runs and has its model loaded (asked with the `codegen/status` request).

local client = require("codegen_lsp.client")

local M = {}

-- vim.health.start/ok/... on 0.10+, the health module's report_* functions before.
local health = vim.health or require("health")
local report = {
  start = health.start or health.report_start,
  ok = health.ok or health.report_ok,
  info = health.info or health.report_info,
  warn = health.warn or health.report_warn,
  error = health.error or health.report_error,
}

local function version_of(cmd)
  if cmd[#cmd] ~= "serve" then
    return nil, "cannot tell: the command does not end in `serve`"
  end
  local version_cmd = vim.list_slice(cmd, 1, #cmd - 1)
  table.insert(version_cmd, "--version")
  local out = vim.fn.system(version_cmd)
  if vim.v.shell_error ~= 0 then
    return nil, ("`%s` failed: %s"):format(table.concat(version_cmd, " "), vim.trim(out))
  end
  return vim.trim(out)
end

local function check_server_command()
  local cmd, err = client.command()
  if not cmd then
    report.error(err, {
      "from a codegen-lsp checkout: pip install -e . (torch first, see its README)",
      "or setup({ cmd = { '/path/to/codegen-lsp', 'serve' } })",
    })
    return
  end
  if vim.fn.executable(cmd[1]) ~= 1 then
    report.error(("server command not executable: %s"):format(cmd[1]))
    return
  end
  report.ok("server command: " .. table.concat(cmd, " "))
  local version, verr = version_of(cmd)
  if version then
    report.ok("server version: " .. version)
  else
    report.warn("server version: " .. verr)
  end
end

local function check_running()
  local lsp_client = client.get()
  if not lsp_client then
    report.warn("the server is not running", { "open a file of a configured filetype to start it" })
    return
  end
  report.ok(("server running (client id %d, position encoding %s)"):format(
    lsp_client.id,
    lsp_client.offset_encoding or "utf-16"
  ))
  local response = client.call(lsp_client, "request_sync", client.STATUS_METHOD, vim.empty_dict(), 3000,
    vim.api.nvim_get_current_buf())
  if not response or response.err or type(response.result) ~= "table" then
    local why = response and response.err and (response.err.message or vim.inspect(response.err)) or "no answer"
    report.error("`codegen/status` request failed: " .. why)
    return
  end
  local status = response.result
  local message = status.message and status.message ~= "" and (": " .. status.message) or ""
  if status.state == "ready" or status.state == "generating" then
    report.ok("model loaded" .. message)
  elseif status.state == "loading" then
    report.warn("model still loading" .. message)
  else
    report.error(("model not loaded (%s)%s"):format(tostring(status.state), message))
  end
end

function M.check()
  report.start("codegen-lsp")
  if vim.fn.has("nvim-0.7") == 1 then
    report.ok("Neovim " .. tostring(vim.version().major) .. "." .. tostring(vim.version().minor))
  else
    report.error("Neovim 0.7 or newer is required")
  end
  if require("codegen_lsp").is_setup() then
    report.ok("setup() called")
  else
    report.warn("setup() not called", { "require('codegen_lsp').setup({})" })
  end
  check_server_command()
  check_running()
end

return M
