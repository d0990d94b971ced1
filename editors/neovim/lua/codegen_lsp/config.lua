-- Options of codegen_lsp: defaults, validation (vim.validate) and the merged result.
--
-- `server` mirrors the settings of `codegen-lsp serve` one to one (same names as the
-- server's `codegen.*` settings); keys left nil are not sent, so the server's defaults apply.

local M = {}

---@class codegen_lsp.Options
M.defaults = {
  -- Command that starts the server; nil: `{python, "-m", "codegen_lsp", "serve"}` when
  -- `python` is set, else `codegen-lsp serve` from PATH.
  cmd = nil,
  -- Python interpreter that has codegen-lsp installed (used when cmd is nil).
  python = nil,
  -- Extra environment for the server process.
  cmd_env = nil,
  -- Filetypes the server is started for.
  filetypes = {
    "python", "javascript", "javascriptreact", "typescript", "typescriptreact", "go",
    "rust", "c", "cpp", "cs", "java", "kotlin", "scala", "swift", "php", "sh", "ruby", "lua",
    "sql",
  },
  -- Files or directories whose nearest ancestor is the workspace root.
  root_markers = { ".git", "pyproject.toml", "setup.py", "package.json", "go.mod", "Cargo.toml" },
  suggestion = {
    -- Show ghost text while typing in insert mode.
    enabled = true,
    -- Request a suggestion automatically after each change; false: only on `next`.
    auto_trigger = true,
    -- Milliseconds of typing pause before a request.
    debounce = 75,
    -- Highlight group of the ghost text.
    hl_group = "CodegenSuggestion",
  },
  -- Insert-mode keys; false disables one. Each falls through to the key's previous mapping,
  -- or to the key itself, when no suggestion is shown.
  keymaps = {
    accept = "<Tab>",
    accept_word = "<M-w>",
    accept_line = "<M-l>",
    next = "<M-]>",
    prev = "<M-[>",
    dismiss = "<C-]>",
  },
  -- Server settings (initializationOptions.codegen); nil means the server's default.
  server = {},
}

local SERVER_ENUMS = {
  dtype = { "auto", "float32", "bfloat16", "float16" },
  quantize = { "auto", "none", "int8" },
  multiline = { "auto", "always", "never" },
  fim = { "auto", "on", "off" },
  header = { "auto", "on", "off" },
  speculation = { "auto", "off", "lookup", "draft" },
}

-- The server's settings (codegen_lsp/server/settings.py) and their Lua types, in its order;
-- tests/test_settings_schema.py checks this table and SERVER_ENUMS against that declaration.
-- "list": a list of strings; "map": { languageId = boolean }.
M.server_types = {
  { "model", "string" },
  { "device", "string" },
  { "dtype", "string" },
  { "quantize", "string" },
  { "threads", "number" },
  { "allowDownload", "boolean" },
  { "cacheMemoryMB", "number" },
  { "prefixReuse", "boolean" },
  { "memoryLimitMB", "number" },
  { "draftModel", "string" },
  { "endpoint", "string" },
  { "remoteModel", "string" },
  { "apiKeyEnv", "string" },
  { "requestTimeoutMs", "number" },
  { "caBundle", "string" },
  { "maxNewTokens", "number" },
  { "temperature", "number" },
  { "topP", "number" },
  { "topK", "number" },
  { "candidates", "number" },
  { "stopSequences", "list" },
  { "timeLimitMs", "number" },
  { "speculation", "string" },
  { "contextTokens", "number" },
  { "multiline", "string" },
  { "answerEarly", "boolean" },
  { "contextFiles", "number" },
  { "contextFileTokens", "number" },
  { "fim", "string" },
  { "header", "string" },
  { "languages", "map" },
}

-- vim.validate's (name, value, validator, optional_or_msg) form is 0.11+; 0.7 has the spec form,
-- which 0.11 deprecates. Errors name the option and carry no file position.
local function check(name, value, validator, optional_or_msg)
  local ok, err = pcall(function()
    if vim.fn.has("nvim-0.11") == 1 then
      vim.validate(name, value, validator, optional_or_msg)
    else
      vim.validate({ [name] = { value, validator, optional_or_msg } })
    end
  end)
  if not ok then
    error("codegen_lsp.setup: " .. tostring(err):gsub("^[^:]*:%d+: ", ""), 0)
  end
end

local function one_of(values)
  return function(v)
    return v == nil or vim.tbl_contains(values, v)
  end, "one of " .. table.concat(values, "|")
end

local function key_or_false(v)
  return v == false or type(v) == "string"
end

local function list_of_strings(v)
  if v == nil then
    return true
  end
  if type(v) ~= "table" then
    return false
  end
  for _, item in ipairs(v) do
    if type(item) ~= "string" then
      return false
    end
  end
  return true
end

local function map_of_booleans(v)
  if v == nil then
    return true
  end
  if type(v) ~= "table" then
    return false
  end
  for key, value in pairs(v) do
    if type(key) ~= "string" or type(value) ~= "boolean" then
      return false
    end
  end
  return true
end

local function validate_server(server)
  local known = {}
  for _, entry in ipairs(M.server_types) do
    local name, kind = entry[1], entry[2]
    known[name] = true
    local enum = SERVER_ENUMS[name]
    if enum then
      check("server." .. name, server[name], one_of(enum))
    elseif kind == "list" then
      check("server." .. name, server[name], list_of_strings, "a list of strings")
    elseif kind == "map" then
      check("server." .. name, server[name], map_of_booleans, "a table of languageId = true/false")
    else
      check("server." .. name, server[name], kind, true)
    end
  end
  for name in pairs(server) do
    if not known[name] then
      error(("codegen_lsp.setup: unknown server setting %q"):format(name), 0)
    end
  end
end

--- Check `opts` (a partial Options table); raises an error naming the first bad field.
function M.validate(opts)
  check("cmd", opts.cmd, "table", true)
  check("python", opts.python, "string", true)
  check("cmd_env", opts.cmd_env, "table", true)
  check("filetypes", opts.filetypes, list_of_strings, "a list of strings")
  check("root_markers", opts.root_markers, list_of_strings, "a list of strings")
  check("suggestion", opts.suggestion, "table", true)
  check("keymaps", opts.keymaps, "table", true)
  check("server", opts.server, "table", true)
  local s = opts.suggestion or {}
  check("suggestion.enabled", s.enabled, "boolean", true)
  check("suggestion.auto_trigger", s.auto_trigger, "boolean", true)
  check("suggestion.debounce", s.debounce, "number", true)
  check("suggestion.hl_group", s.hl_group, "string", true)
  for name, key in pairs(opts.keymaps or {}) do
    if M.defaults.keymaps[name] == nil then
      error(("codegen_lsp.setup: unknown keymap %q"):format(name), 0)
    end
    check("keymaps." .. name, key, key_or_false, "a key (string) or false")
  end
  validate_server(opts.server or {})
end

M.options = vim.deepcopy(M.defaults)

--- Validate `opts` and merge them over the defaults; returns the merged options.
function M.setup(opts)
  opts = opts or {}
  M.validate(opts)
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace, never merge.
  for _, key in ipairs({ "cmd", "filetypes", "root_markers" }) do
    if opts[key] then
      M.options[key] = opts[key]
    end
  end
  if opts.server then
    for _, key in ipairs({ "stopSequences", "languages" }) do
      if opts.server[key] then
        M.options.server[key] = opts.server[key]
      end
    end
  end
  return M.options
end

--- The server settings to send (only those set).
function M.server_settings()
  return vim.deepcopy(M.options.server)
end

return M
