-- What the editor's other language servers know, for codegen-lsp's prompts, and the prompt view.
--
-- The server sends `codegen/resolveDefinitions` ({textDocument, names = {{name, position}}});
-- for each name this asks the other clients attached to the buffer (pyright, gopls, ...) for
-- `textDocument/definition` and answers `codegen/didResolveDefinitions` with the definition's
-- location and its file's lines from there on (the server cuts them to a head). Nothing here
-- blocks: every request is asynchronous, and a name nobody answers is simply left out.
-- See docs/server.md for the protocol.

local M = {}

M.RESOLVE = "codegen/resolveDefinitions"
M.RESOLVED = "codegen/didResolveDefinitions"
M.LAST_PROMPT = "codegen/lastPrompt"
M.TEXT_LINES = 120 -- lines of the definition's file sent from its line on

local function client_mod()
  return require("codegen_lsp.client")
end

local function other_clients(bufnr)
  local name = client_mod().name
  local clients = vim.lsp.get_clients and vim.lsp.get_clients({ bufnr = bufnr })
    or vim.tbl_values(vim.lsp.buf_get_clients(bufnr))
  local out = {}
  for _, c in ipairs(clients) do
    local caps = c.server_capabilities or c.resolved_capabilities or {}
    if c.name ~= name and (caps.definitionProvider or caps.goto_definition) then
      table.insert(out, c)
    end
  end
  return out
end

-- The first location of a definition answer (Location, Location[] or LocationLink[]).
local function first_location(result)
  if type(result) ~= "table" then
    return nil
  end
  if result.uri or result.targetUri then
    result = { result }
  end
  local loc = result[1]
  if type(loc) ~= "table" then
    return nil
  end
  local uri, range = loc.targetUri or loc.uri, loc.targetRange or loc.targetSelectionRange or loc.range
  local ok = type(uri) == "string" and type(range) == "table" and type(range.start) == "table"
  if not ok or type(range.start.line) ~= "number" or range.start.line < 0 then
    return nil -- an answer of a shape no server should send: left out
  end
  return { uri = uri, range = range }
end

-- Lines `first` .. first + TEXT_LINES - 1 (0-based) of the file at `uri`: from its buffer when
-- loaded (unsaved edits count), else from disk.
local function read_lines(uri, first)
  local ok, bufnr = pcall(vim.uri_to_bufnr, uri)
  if ok and vim.api.nvim_buf_is_loaded(bufnr) then
    return vim.api.nvim_buf_get_lines(bufnr, first, first + M.TEXT_LINES, false)
  end
  local path = vim.uri_to_fname(uri)
  if vim.fn.filereadable(path) ~= 1 then
    return nil
  end
  local lines = vim.fn.readfile(path, "", first + M.TEXT_LINES)
  return vim.list_slice(lines, first + 1, first + M.TEXT_LINES)
end

local function send(document, definitions)
  local codegen = client_mod().get()
  if codegen then
    client_mod().call(codegen, "notify", M.RESOLVED, { textDocument = document, definitions = definitions })
  end
end

--- Handler of `codegen/resolveDefinitions` (a notification from the server).
function M.on_resolve(_, params)
  if type(params) ~= "table" or type(params.textDocument) ~= "table" or type(params.names) ~= "table" then
    return
  end
  local uri = params.textDocument.uri
  local ok, bufnr = pcall(vim.uri_to_bufnr, uri)
  if not ok or not vim.api.nvim_buf_is_loaded(bufnr) then
    return
  end
  local others = other_clients(bufnr)
  for _, entry in ipairs(params.names) do
    local name, position = entry.name, entry.position
    local valid = type(name) == "string" and type(position) == "table"
    if valid and type(position.line) == "number" and type(position.character) == "number" then
      M.resolve_name(bufnr, params.textDocument, name, position, others[1])
    end
  end
end

--- Ask `other` (a language client, or nil: none) where `name` at `position` of `bufnr` is
--- defined, and send the server what it said.
function M.resolve_name(bufnr, document, name, position, other)
  if not other then
    send(document, { { name = name } })
    return
  end
  local line = vim.api.nvim_buf_get_lines(bufnr, position.line, position.line + 1, false)[1] or ""
  local byte = client_mod().byte_col(line, position.character, client_mod().offset_encoding())
  local request = {
    textDocument = { uri = document.uri },
    position = {
      line = position.line,
      character = client_mod().char_index(line, byte, other.offset_encoding or "utf-16"),
    },
  }
  client_mod().call(other, "request", "textDocument/definition", request, function(err, result)
    local loc = not err and first_location(result) or nil
    local lines = loc and read_lines(loc.uri, loc.range.start.line)
    if not loc or not lines then
      send(document, { { name = name } })
      return
    end
    local text = table.concat(lines, "\n") .. "\n"
    send(document, { { name = name, uri = loc.uri, range = loc.range, text = text } })
  end, bufnr)
end

--- The client capabilities codegen-lsp's client announces (the defaults plus this feature).
function M.capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.experimental = caps.experimental or {}
  caps.experimental.codegenDefinitions = true
  return caps
end

--- The lines :CodegenShowPrompt shows for a `codegen/lastPrompt` result.
function M.prompt_lines(result)
  if type(result) ~= "table" or type(result.parts) ~= "table" then
    return { "codegen-lsp: no prompt yet (no model request was made for this buffer)" }
  end
  local out = { ("codegen-lsp: last prompt, %d tokens"):format(result.promptTokens or 0) }
  for _, part in ipairs(result.parts) do
    table.insert(out, ("=== %s (%d tokens) ==="):format(part.name, part.tokens or 0))
    for _, line in ipairs(vim.split(part.text or "", "\n", { plain = true })) do
      table.insert(out, line)
    end
  end
  return out
end

--- Ask for the last prompt of `bufnr` and show it in a scratch window (:CodegenShowPrompt).
function M.show_prompt(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local params = { textDocument = { uri = vim.uri_from_bufnr(bufnr) } }
  local sent = client_mod().request(bufnr, M.LAST_PROMPT, params, function(err, result)
    if err then
      vim.notify("codegen-lsp: " .. (err.message or vim.inspect(err)), vim.log.levels.WARN)
      return
    end
    local view = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_buf_set_lines(view, 0, -1, false, M.prompt_lines(result))
    vim.bo[view].bufhidden = "wipe"
    vim.bo[view].modifiable = false
    vim.cmd("botright split")
    vim.api.nvim_win_set_buf(0, view)
    vim.b[view].codegen_prompt = result or vim.NIL
  end)
  if not sent then
    vim.notify("codegen-lsp: the server is not running", vim.log.levels.WARN)
  end
end

return M
