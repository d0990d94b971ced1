-- Ghost text: ask for `textDocument/inlineCompletion` after a typing pause, cancel the request
-- in flight when the user types on, draw the answer with extmarks, accept all / a word / a
-- line, cycle candidates, dismiss.
--
-- The server does the prompting, caching and post-processing; this module only keeps the
-- items of the last answer and shows the part the user has not typed yet.

local client = require("codegen_lsp.client")
local config = require("codegen_lsp.config")

local M = {}

M.ns = vim.api.nvim_create_namespace("codegen_lsp.suggestion")
M.METHOD = "textDocument/inlineCompletion"
local TRIGGER_INVOKED, TRIGGER_AUTOMATIC = 1, 2

local has_inline = vim.fn.has("nvim-0.10") == 1
local uv = vim.uv or vim.loop

local s = {
  enabled = true,
  timer = nil,
  cancel = nil, -- cancels the request in flight
  seq = 0, -- bumped per request: an answer to an older one is dropped
  bufnr = nil,
  items = nil, -- { { text, srow, scol, erow, ecol } } (0-based rows, byte columns)
  index = 1,
  shown = nil, -- { bufnr, row, col, tick, ghost } of what is drawn now
  last_tick = nil, -- changedtick when TextChangedI last ran
}

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function in_insert_mode()
  return vim.api.nvim_get_mode().mode:sub(1, 1) == "i"
end

--- Stop the debounce timer and cancel the request in flight.
function M.cancel()
  if s.timer then
    s.timer:stop()
  end
  if s.cancel then
    local cancel = s.cancel
    s.cancel = nil
    pcall(cancel)
  end
  s.seq = s.seq + 1
end

--- Remove the ghost text (the items are forgotten too).
function M.clear()
  if s.bufnr and vim.api.nvim_buf_is_valid(s.bufnr) then
    vim.api.nvim_buf_clear_namespace(s.bufnr, M.ns, 0, -1)
  end
  s.items, s.index, s.shown = nil, 1, nil
end

--- True when a suggestion is drawn in the current buffer.
function M.is_visible()
  return s.shown ~= nil and s.shown.bufnr == vim.api.nvim_get_current_buf()
end

--- The text from (srow, scol) to (erow, ecol) of `bufnr`, rows 0-based, byte columns.
local function buf_text(bufnr, srow, scol, erow, ecol)
  local lines = vim.api.nvim_buf_get_lines(bufnr, srow, erow + 1, false)
  if #lines == 0 then
    return ""
  end
  lines[#lines] = lines[#lines]:sub(1, ecol)
  lines[1] = lines[1]:sub(scol + 1)
  return table.concat(lines, "\n")
end

--- The part of `item` still to be typed at the cursor, or nil when the buffer left it.
local function remainder(bufnr, item)
  local row, col = cursor()
  if row < item.srow or (row == item.srow and col < item.scol) then
    return nil
  end
  local typed = buf_text(bufnr, item.srow, item.scol, row, col)
  if item.text:sub(1, #typed) ~= typed then
    return nil
  end
  local ghost = item.text:sub(#typed + 1)
  return ghost ~= "" and ghost or nil
end

local function draw(bufnr, row, col, ghost)
  local hl = config.options.suggestion.hl_group
  local lines = vim.split(ghost, "\n", { plain = true })
  local opts = { hl_mode = "combine", priority = 65534 }
  if lines[1] ~= "" then
    if has_inline then
      opts.virt_text = { { lines[1], hl } }
      opts.virt_text_pos = "inline"
    else
      -- No inline virtual text before 0.10: overlay the ghost at the cursor and redraw the
      -- rest of the line after it.
      local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
      opts.virt_text = { { lines[1], hl } }
      if col < #line then
        table.insert(opts.virt_text, { line:sub(col + 1), "Normal" })
      end
      opts.virt_text_win_col = vim.fn.virtcol(".") - 1
    end
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], hl } })
    end
  end
  vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, col, opts)
end

--- Draw the current item at the cursor, or clear when nothing of it is left to type.
local function render()
  local bufnr = vim.api.nvim_get_current_buf()
  local item = s.items and s.items[s.index]
  local ghost = item and bufnr == s.bufnr and remainder(bufnr, item)
  if not ghost then
    M.clear()
    return false
  end
  local row, col = cursor()
  draw(bufnr, row, col, ghost)
  s.shown = {
    bufnr = bufnr,
    row = row,
    col = col,
    tick = vim.api.nvim_buf_get_changedtick(bufnr),
    ghost = ghost,
  }
  return true
end

--- Convert an answer (InlineCompletionList or item list) into items with byte positions.
local function to_items(bufnr, result, row, col)
  if type(result) ~= "table" then
    return {}
  end
  local list = result.items or result
  local encoding = client.offset_encoding()
  local items = {}
  for _, item in ipairs(list) do
    local text = item.insertText
    if type(text) == "table" then
      text = text.value -- a StringValue snippet: shown as it is
    end
    if type(text) == "string" and text ~= "" then
      local srow, scol, erow, ecol = row, col, row, col
      if type(item.range) == "table" then
        local first = vim.api.nvim_buf_get_lines(bufnr, item.range.start.line, item.range.start.line + 1, false)[1]
        local last = vim.api.nvim_buf_get_lines(bufnr, item.range["end"].line, item.range["end"].line + 1, false)[1]
        srow = item.range.start.line
        scol = client.byte_col(first or "", item.range.start.character, encoding)
        erow = item.range["end"].line
        ecol = client.byte_col(last or "", item.range["end"].character, encoding)
      end
      table.insert(items, { text = text, srow = srow, scol = scol, erow = erow, ecol = ecol })
    end
  end
  return items
end

local CANCELLED = { [-32800] = true, [-32801] = true } -- RequestCancelled, ContentModified
local reported = {}

--- Log a failed request; show each distinct message once.
local function report_error(err)
  if CANCELLED[err.code] then
    return
  end
  local message = err.message or vim.inspect(err)
  require("vim.lsp.log").warn("codegen-lsp: " .. M.METHOD .. " failed", err)
  if not reported[message] then
    reported[message] = true
    vim.notify("codegen-lsp: suggestion failed: " .. message, vim.log.levels.WARN)
  end
end

--- Ask the server for a suggestion at the cursor now.
function M.request(trigger_kind)
  M.cancel()
  local bufnr = vim.api.nvim_get_current_buf()
  if not s.enabled or not in_insert_mode() or not client.get() then
    return
  end
  local row, col = cursor()
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = row, character = client.char_index(line, col, client.offset_encoding()) },
    context = { triggerKind = trigger_kind or TRIGGER_AUTOMATIC },
  }
  local seq = s.seq
  s.cancel = client.request(bufnr, M.METHOD, params, function(err, result)
    if seq ~= s.seq then
      return -- superseded
    end
    s.cancel = nil
    if err then
      report_error(err)
      return
    end
    if vim.api.nvim_get_current_buf() ~= bufnr or not in_insert_mode() then
      return
    end
    local now_row, now_col = cursor()
    if vim.api.nvim_buf_get_changedtick(bufnr) ~= tick or now_row ~= row or now_col ~= col then
      return
    end
    local items = to_items(bufnr, result, row, col)
    if #items == 0 then
      return
    end
    s.bufnr, s.items, s.index = bufnr, items, 1
    render()
  end)
end

--- Request after the debounce delay (cancelling what is pending).
function M.schedule()
  M.cancel()
  local opts = config.options.suggestion
  if not s.enabled or not opts.auto_trigger then
    return
  end
  s.timer = s.timer or uv.new_timer()
  s.timer:start(opts.debounce, 0, vim.schedule_wrap(function()
    M.request(TRIGGER_AUTOMATIC)
  end))
end

-- Autocmd handlers ------------------------------------------------------------------------

--- TextChangedI: keep the suggestion while the user types what it says, else ask again.
function M.on_text_changed()
  s.last_tick = vim.api.nvim_buf_get_changedtick(0)
  if s.items and render() then
    M.cancel()
    return
  end
  M.clear()
  M.schedule()
end

--- CursorMovedI: a move without an edit drops the suggestion and asks at the new place.
function M.on_cursor_moved()
  local row, col = cursor()
  if s.shown and s.shown.row == row and s.shown.col == col then
    return
  end
  if vim.api.nvim_buf_get_changedtick(0) ~= s.last_tick then
    return -- an edit: TextChangedI follows and decides
  end
  M.clear()
  M.schedule()
end

--- The server became ready (User CodegenStatus): a user who typed before the model was
--- loaded (the request was answered empty, or never sent) gets a suggestion now.
function M.on_ready()
  if in_insert_mode() and not M.is_visible() and not s.cancel and client.is_attached(0) then
    M.schedule()
  end
end

--- InsertEnter: ask for the position where insert mode starts.
function M.on_insert_enter()
  s.last_tick = vim.api.nvim_buf_get_changedtick(0)
  M.schedule()
end

--- InsertLeave / BufLeave: drop everything.
function M.on_leave()
  M.cancel()
  M.clear()
end

-- Actions ---------------------------------------------------------------------------------

local function set_text_at_cursor(bufnr, srow, scol, erow, ecol, text)
  local lines = vim.split(text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, srow, scol, erow, ecol, lines)
  local row = srow + #lines - 1
  local col = (#lines == 1 and scol or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
end

local function next_word(ghost)
  return ghost:match("^%s*[%w_]+") or ghost:match("^%s*[^%w_%s]+") or ghost:match("^%s+") or ghost
end

local function next_line(ghost)
  if ghost:sub(1, 1) == "\n" then
    return "\n" .. (ghost:sub(2):match("^[^\n]*"))
  end
  return ghost:match("^[^\n]*")
end

--- Accept the whole suggestion (`kind` nil or "all"), the next word ("word") or the rest of
--- the line ("line"). Returns false when no suggestion is shown.
function M.accept(kind)
  if not M.is_visible() then
    return false
  end
  local bufnr = s.shown.bufnr
  local item = s.items[s.index]
  local row, col = cursor()
  M.cancel()
  if kind == "word" or kind == "line" then
    local part = kind == "word" and next_word(s.shown.ghost) or next_line(s.shown.ghost)
    -- The suggestion stays: TextChangedI finds the text typed and shows the rest.
    set_text_at_cursor(bufnr, row, col, row, col, part)
    client.notify_accept(kind)
    return true
  end
  -- Replace the item's range (from its start to its end or the cursor, whichever is later).
  local erow, ecol = item.erow, item.ecol
  if erow < row or (erow == row and ecol < col) then
    erow, ecol = row, col
  end
  M.clear()
  set_text_at_cursor(bufnr, item.srow, item.scol, erow, ecol, item.text)
  client.notify_accept("all")
  return true
end

--- Show the next (`step` 1) or previous (-1) candidate; with none shown, ask for one.
function M.cycle(step)
  if not M.is_visible() then
    M.request(TRIGGER_INVOKED)
    return
  end
  local n = #s.items
  for _ = 1, n do
    s.index = (s.index - 1 + step) % n + 1
    if render() then
      return
    end
  end
end

--- Hide the suggestion until the next edit. Returns false when none was shown.
function M.dismiss()
  if not M.is_visible() then
    return false
  end
  M.cancel()
  M.clear()
  return true
end

--- Turn suggestions on or off (`on` nil flips); returns the new state.
function M.toggle(on)
  if on == nil then
    on = not s.enabled
  end
  s.enabled = on
  if not on then
    M.cancel()
    M.clear()
  end
  return s.enabled
end

--- Whether suggestions are on.
function M.enabled()
  return s.enabled
end

--- The ghost text drawn now, or nil (for statuslines and tests).
function M.current()
  return s.shown and s.shown.ghost
end

function M.setup(opts)
  s.enabled = opts.suggestion.enabled
end

return M
