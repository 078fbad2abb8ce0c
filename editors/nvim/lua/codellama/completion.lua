-- Asking the server for inline completions: debounced automatic triggers, one request in flight per
-- buffer (a newer one cancels the older with $/cancelRequest), and answers dropped when the buffer or the
-- cursor moved on while the model was thinking.
local compat = require('codellama.compat')
local ghost = require('codellama.ghost')

local M = {}

local INVOKED, AUTOMATIC = 1, 2
local timer = nil
local inflight = {} -- bufnr -> { client, id }

function M.cancel(buf)
  local r = inflight[buf]
  if r then
    inflight[buf] = nil
    pcall(compat.cancel, r.client, r.id)
  end
end

function M.stop_timer()
  if timer then
    timer:stop()
    timer:close()
    timer = nil
  end
end

--- Send textDocument/inlineCompletion for the cursor in the current window now.
--- `on_done(suggestions)` is called (if given) after the ghost text was updated.
function M.request(client, trigger_kind, on_done)
  local buf = vim.api.nvim_get_current_buf()
  local cursor = vim.api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  local line = vim.api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
  local encoding = client.offset_encoding or 'utf-16'
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(buf) },
    position = { line = row, character = compat.char_index(line, col, encoding) },
    context = { triggerKind = trigger_kind or INVOKED },
  }
  M.cancel(buf)
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local ok, id
  ok, id = compat.request(client, 'textDocument/inlineCompletion', params, function(err, result)
    if inflight[buf] and inflight[buf].id == id then inflight[buf] = nil end
    if err or not result or not vim.api.nvim_buf_is_valid(buf) then return end
    -- Stale: the user typed or moved since we asked.
    if vim.api.nvim_buf_get_changedtick(buf) ~= tick then return end
    if vim.api.nvim_get_current_buf() ~= buf then return end
    local now = vim.api.nvim_win_get_cursor(0)
    if now[1] - 1 ~= row or now[2] ~= col then return end
    local items = result.items or result
    local suggestions = {}
    for _, item in ipairs(items) do
      local s = ghost.normalize(buf, row, col, item, encoding)
      if s then table.insert(suggestions, s) end
    end
    if vim.fn.mode():sub(1, 1) == 'i' or trigger_kind == INVOKED then
      ghost.show(buf, row, col, suggestions)
    end
    if on_done then on_done(suggestions) end
  end, buf)
  if ok and id then inflight[buf] = { client = client, id = id } end
end

--- Automatic trigger: wait `delay_ms` of quiet typing, then ask.
function M.schedule(client, delay_ms)
  M.stop_timer()
  timer = compat.uv.new_timer()
  timer:start(delay_ms, 0, vim.schedule_wrap(function()
    M.stop_timer()
    if vim.fn.mode():sub(1, 1) ~= 'i' then return end
    M.request(client, AUTOMATIC)
  end))
end

M.INVOKED, M.AUTOMATIC = INVOKED, AUTOMATIC
return M
