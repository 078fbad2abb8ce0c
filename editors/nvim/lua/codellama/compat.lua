-- Version differences between Neovim 0.7 and 0.11+, in one place so the rest reads the same everywhere.
local M = {}

M.has_011 = vim.fn.has('nvim-0.11') == 1
M.has_010 = vim.fn.has('nvim-0.10') == 1
-- The native client-side inline completion (ghost text, accept) arrived in 0.12.
M.native_inline = vim.fn.has('nvim-0.12') == 1 and pcall(require, 'vim.lsp.inline_completion')

M.uv = vim.uv or vim.loop

--- client:request / client.request (0.11 deprecates the dot form).
function M.request(client, method, params, handler, bufnr)
  if M.has_011 then return client:request(method, params, handler, bufnr) end
  return client.request(method, params, handler, bufnr)
end

function M.notify(client, method, params)
  if M.has_011 then return client:notify(method, params) end
  return client.notify(method, params)
end

function M.cancel(client, id)
  if M.has_011 then return client:cancel_request(id) end
  return client.cancel_request(id)
end

--- LSP character offset (in the client's position encoding) of a 0-based byte column in `line`.
function M.char_index(line, byte_col, encoding)
  byte_col = math.min(byte_col, #line)
  if encoding == 'utf-8' then return byte_col end
  if M.has_011 then return vim.str_utfindex(line, encoding, byte_col, false) end
  local u32, u16 = vim.str_utfindex(line, byte_col)
  return encoding == 'utf-16' and u16 or u32
end

--- 0-based byte column of an LSP character offset in `line`.
function M.byte_index(line, char, encoding)
  if encoding == 'utf-8' then return math.min(char, #line) end
  if M.has_011 then return vim.str_byteindex(line, encoding, char, false) end
  local ok, col = pcall(vim.str_byteindex, line, char, encoding == 'utf-16')
  return ok and col or #line
end

function M.get_client(id)
  return vim.lsp.get_client_by_id(id)
end

--- :checkhealth reporters (vim.health.* from 0.10, health#report_* before).
M.health = vim.health and vim.health.start and vim.health or {
  start = function(s) vim.fn['health#report_start'](s) end,
  ok = function(s) vim.fn['health#report_ok'](s) end,
  info = function(s) vim.fn['health#report_info'](s) end,
  warn = function(s, a) vim.fn['health#report_warn'](s, a or {}) end,
  error = function(s, a) vim.fn['health#report_error'](s, a or {}) end,
}

return M
