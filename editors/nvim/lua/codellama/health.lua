-- :checkhealth codellama
local compat = require('codellama.compat')
local M = {}

function M.check()
  local h = compat.health
  local cl = require('codellama')
  h.start('codellama')
  local v = vim.version()
  local vs = string.format('%d.%d.%d', v.major, v.minor, v.patch)
  if vim.fn.has('nvim-0.7') == 0 then
    h.error('Neovim ' .. vs .. ' is too old: 0.7 or newer is needed')
  elseif compat.native_inline then
    h.ok('Neovim ' .. vs .. ': native vim.lsp.inline_completion')
  else
    h.ok('Neovim ' .. vs .. ': ghost text drawn with extmarks')
  end
  local cmd = cl.config.cmd or (cl.config.python and { vim.fn.expand(cl.config.python) }) or { 'codellama-lsp' }
  if vim.fn.executable(cmd[1]) == 1 then
    h.ok('server command found: ' .. vim.fn.exepath(cmd[1]))
  else
    h.error('server command not found: ' .. cmd[1],
      { 'install the server from its source tree: python -m pip install /path/to/codellama-lsp, '
        .. 'or set python = "/path/to/venv/bin/python" (or cmd) in setup()' })
  end
  local c = cl.client()
  if not c then
    h.warn('server not running (open a file after setup())')
    return
  end
  h.ok(string.format('server running (client id %d, position encoding %s)', c.id, c.offset_encoding or '?'))
  local s = cl.status
  if s.state == 'ready' then
    h.ok(string.format('model ready: %s on %s (%s)', s.model or '?', s.device or '?', s.quantization or '?'))
  elseif s.state == 'error' then
    h.error('model failed to load: ' .. (s.message or '?'))
  else
    h.info('model state: ' .. (s.state or '?') .. ' ' .. (s.message or ''))
  end
  local ms = cl.completion_ms()
  if ms then h.info(string.format('last completion: %d ms', ms)) end
  if type(s.last_chat_ms) == 'number' then h.info(string.format('last chat answer: %d ms', s.last_chat_ms)) end
  for _, m in ipairs(cl.messages or {}) do h.info('server: ' .. m) end
  h.info('server log: ' .. (s.log_file or '~/.local/state/codellama-lsp/log/server.log (platformdirs user_log_dir)'))
end

return M
