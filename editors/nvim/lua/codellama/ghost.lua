-- Ghost text: one suggestion per buffer shown with extmarks at the cursor (virt_text for the first line,
-- virt_lines for the rest), and the edits that accept all of it, its first line, or its first word.
local compat = require('codellama.compat')

local M = {}
M.ns = vim.api.nvim_create_namespace('codellama_ghost')

-- bufnr -> { items, index, row, col, text, tail, changedtick }
local state = {}

local function split_lines(s)
  return vim.split(s, '\n', { plain = true })
end

--- Text between two 0-based (row, byte col) positions.
local function get_text(buf, sr, sc, er, ec)
  if sr > er or (sr == er and sc >= ec) then return '' end
  return table.concat(vim.api.nvim_buf_get_text(buf, sr, sc, er, ec, {}), '\n')
end

--- Turn an LSP InlineCompletionItem into what to show after the cursor (`text`) and what it
--- replaces after the cursor (`tail`, e.g. an auto-closed bracket). Returns nil when the item does not
--- fit the buffer (its range starts before the cursor with text that differs from what is there).
function M.normalize(buf, row, col, item, encoding)
  local insert = item.insertText
  if type(insert) == 'table' then insert = insert.value end
  if type(insert) ~= 'string' or insert == '' then return nil end
  local tail = ''
  if item.range then
    local s, e = item.range.start, item.range['end']
    local sline = vim.api.nvim_buf_get_lines(buf, s.line, s.line + 1, false)[1] or ''
    local eline = vim.api.nvim_buf_get_lines(buf, e.line, e.line + 1, false)[1] or ''
    local sc = compat.byte_index(sline, s.character, encoding)
    local ec = compat.byte_index(eline, e.character, encoding)
    if s.line > row or (s.line == row and sc > col) then return nil end
    local typed = get_text(buf, s.line, sc, row, col)
    if insert:sub(1, #typed) ~= typed then return nil end
    insert = insert:sub(#typed + 1)
    if e.line > row or (e.line == row and ec > col) then tail = get_text(buf, row, col, e.line, ec) end
  end
  if insert == '' then return nil end
  return { text = insert, tail = tail }
end

function M.get(buf)
  local s = state[buf]
  if not s then return nil end
  return s.items[s.index], s
end

function M.visible(buf)
  return state[buf or vim.api.nvim_get_current_buf()] ~= nil
end

function M.clear(buf)
  buf = buf or vim.api.nvim_get_current_buf()
  state[buf] = nil
  if vim.api.nvim_buf_is_valid(buf) then vim.api.nvim_buf_clear_namespace(buf, M.ns, 0, -1) end
end

local function render(buf)
  local sug, s = M.get(buf)
  vim.api.nvim_buf_clear_namespace(buf, M.ns, 0, -1)
  if not sug then return end
  local lines = split_lines(sug.text)
  local line = vim.api.nvim_buf_get_lines(buf, s.row, s.row + 1, false)[1] or ''
  local opts = { virt_text = { { lines[1], 'CodellamaGhost' } }, hl_mode = 'combine' }
  if compat.has_010 then
    opts.virt_text_pos = 'inline'
  elseif s.col >= #line then
    opts.virt_text_pos = 'overlay'
  else
    opts.virt_text_pos = 'eol'
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], 'CodellamaGhost' } })
    end
  end
  vim.api.nvim_buf_set_extmark(buf, M.ns, s.row, math.min(s.col, #line), opts)
end

--- Show `suggestions` (normalized items) at (row, col) of `buf`.
function M.show(buf, row, col, suggestions)
  if #suggestions == 0 then return M.clear(buf) end
  state[buf] = {
    items = suggestions, index = 1, row = row, col = col,
    changedtick = vim.api.nvim_buf_get_changedtick(buf),
  }
  render(buf)
end

--- Cycle to the next suggestion (wraps around).
function M.next(buf)
  local s = state[buf]
  if not s or #s.items < 2 then return false end
  s.index = s.index % #s.items + 1
  render(buf)
  return true
end

--- The part of `text` that "accept word" takes: leading spaces plus one word or one run of punctuation.
function M.first_word(text)
  local w = text:match('^%s*[%w_]+') or text:match('^%s*[^%w_%s]+') or text:match('^%s+')
  return w or text
end

--- The part "accept line" takes: up to and including the first newline.
function M.first_line(text)
  local nl = text:find('\n', 1, true)
  if nl == 1 then
    -- The suggestion starts with a line break: take it together with the next line's text.
    local nl2 = text:find('\n', 2, true)
    return nl2 and text:sub(1, nl2 - 1) or text
  end
  return nl and text:sub(1, nl - 1) or text
end

--- Insert `piece` (a prefix of the current suggestion) at the cursor; with `whole`, also replace the tail.
local function insert(buf, piece, whole)
  local sug, s = M.get(buf)
  local er, ec = s.row, s.col
  if whole and sug.tail ~= '' then
    local tl = split_lines(sug.tail)
    er = s.row + #tl - 1
    ec = (#tl == 1) and (s.col + #tl[1]) or #tl[#tl]
  end
  local lines = split_lines(piece)
  vim.api.nvim_buf_set_text(buf, s.row, s.col, er, ec, lines)
  local new_row = s.row + #lines - 1
  local new_col = (#lines == 1) and (s.col + #lines[1]) or #lines[#lines]
  return new_row, new_col
end

--- Accept `kind` ('all' | 'line' | 'word') of the shown suggestion. Returns true if something was inserted.
function M.accept(kind)
  local buf = vim.api.nvim_get_current_buf()
  local sug, s = M.get(buf)
  if not sug then return false end
  if vim.api.nvim_buf_get_changedtick(buf) ~= s.changedtick then
    M.clear(buf)
    return false
  end
  local piece = sug.text
  if kind == 'line' then piece = M.first_line(sug.text) end
  if kind == 'word' then piece = M.first_word(sug.text) end
  local whole = piece == sug.text
  local row, col = insert(buf, piece, whole)
  if whole then
    M.clear(buf)
  else
    -- Keep showing the rest; it still replaces the same tail.
    state[buf] = {
      items = { { text = sug.text:sub(#piece + 1), tail = sug.tail } }, index = 1, row = row, col = col,
      changedtick = vim.api.nvim_buf_get_changedtick(buf),
    }
    render(buf)
  end
  M.just_accepted = { buf = buf, row = row, col = col, changedtick = vim.api.nvim_buf_get_changedtick(buf) }
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  return true
end

return M
