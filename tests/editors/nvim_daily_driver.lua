-- Drives Neovim (0.7.2 and 0.11) through the daily-use scenarios of tests/editors/test_nvim_daily.py.
-- Like nvim_driver.lua, everything runs from timers (nvim_driver_lib.lua) so fed keys go through insert mode,
-- autocommands and mappings as typed ones do. Environment:
--   CODELLAMA_TEST_RTP, CODELLAMA_TEST_CMD, CODELLAMA_TEST_SETTINGS, CODELLAMA_TEST_FILE, CODELLAMA_TEST_OUT
--   CODELLAMA_TEST_SCENARIO   'loading' | 'notice'
--   CODELLAMA_TEST_LOAD_GATE  (loading) the file whose creation lets the server's model load go on
--   CODELLAMA_TEST_LINE, CODELLAMA_TEST_TYPE   where to type, and what
local env = vim.env
vim.opt.rtp:prepend(env.CODELLAMA_TEST_RTP)
vim.cmd('runtime plugin/codellama.lua')
vim.o.swapfile = false

local d = dofile(env.CODELLAMA_TEST_NVIM_LIB).new(env.CODELLAMA_TEST_OUT,
                                                  { keep_open = env.CODELLAMA_TEST_KEEP_OPEN == '1' })
local report, step, finish, poll, keys, t0 = d.report, d.step, d.finish, d.poll, d.keys, d.t0

local cl = require('codellama').setup({
  cmd = vim.fn.json_decode(env.CODELLAMA_TEST_CMD),
  settings = vim.fn.json_decode(env.CODELLAMA_TEST_SETTINGS),
  debounce_ms = 50,
})
local ghost = require('codellama.ghost')
local compat = require('codellama.compat')
report.nvim = tostring(vim.version().major) .. '.' .. vim.version().minor .. '.' .. vim.version().patch

-- Every inline completion request the plugin sends, with the server state when it went out.
report.requests = {}
local real_request = compat.request
compat.request = function(client, method, params, handler, bufnr)
  if method == 'textDocument/inlineCompletion' then
    table.insert(report.requests, { state = cl.status.state, at = (vim.loop.hrtime() - t0) / 1e9 })
  end
  return real_request(client, method, params, handler, bufnr)
end

local function shown_ghost()
  local marks = vim.api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, { details = true })
  if #marks == 0 then return nil end
  local d = marks[1][4]
  local parts = {}
  for _, chunk in ipairs(d.virt_text or {}) do table.insert(parts, chunk[1]) end
  return { row = marks[1][2], col = marks[1][3], text = table.concat(parts) }
end

local function highlight(name)
  if vim.api.nvim_get_hl then
    local h = vim.api.nvim_get_hl(0, { name = name, link = false })
    return { ctermfg = h.ctermfg, italic = h.italic or (h.cterm and h.cterm.italic) or false, fg = h.fg }
  end
  local cterm = vim.api.nvim_get_hl_by_name(name, false)
  local gui = vim.api.nvim_get_hl_by_name(name, true)
  return { ctermfg = cterm.foreground, italic = cterm.italic or false, fg = gui.foreground }
end

local function health()
  vim.cmd('checkhealth codellama')
  local text = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
  vim.cmd('bwipeout!')
  return text
end

local scenarios = {}

--- Item 3: the user types while the model loads (right after opening the file); the suggestion appears
--- when it is loaded, with no further keystroke. The model load is held back until the request has gone out.
function scenarios.loading()
  -- Typed as soon as the file is open: the plugin's client may still be initializing (its didOpen not yet
  -- sent), as when a user starts typing right away.
  poll('the client', 60000, function() return cl.client() end, function()
    step('typing')
    vim.api.nvim_win_set_cursor(0, { tonumber(env.CODELLAMA_TEST_LINE), 0 })
    keys('A' .. env.CODELLAMA_TEST_TYPE .. ' = ', 'nt')
    poll('the request', 30000, function() return #report.requests > 0 end, function()
      step('requested')
      local f = assert(io.open(env.CODELLAMA_TEST_LOAD_GATE, 'w')) -- now let the load finish
      f:close()
      poll('ghost text', 180000, shown_ghost, function(g)
        step('ghost')
        report.ghost = g
        report.state_at_ghost = cl.status.state
        report.mode = vim.fn.mode()
        -- Item 8: a chat answer is reported apart from the completion latency.
        report.statusline_after_completion = cl.statusline()
        report.completion_ms = cl.status.last_completion_ms
        keys('<Esc>', 'nt')
        local chat = require('codellama.chat')
        chat.last = nil
        cl.chat('What does add do?')
        poll('the chat answer', 120000, function() return chat.last end, function(last)
          step('chatted')
          report.chat_error = last.error
          report.status = cl.status
          report.statusline_after_chat = cl.statusline()
          report.health = health()
          finish(nil)
        end)
      end)
    end)
  end)
end

--- Items 4 and 5: the demo-model notice arrives while the user is idle; highlight attributes.
function scenarios.notice()
  report.ghost_hl = highlight('CodellamaGhost')
  poll('the model to be ready', 180000, function()
    if cl.status.state == 'error' then error('server error: ' .. tostring(cl.status.message)) end
    return cl.client() and cl.status.state == 'ready' and #cl.messages > 0
  end, function()
    step('ready')
    -- The notice is echoed on the next event-loop turn: let it happen before looking.
    vim.defer_fn(function()
      report.messages = cl.messages
      report.mode = vim.fn.mode(1)
      report.echospace = vim.v.echospace
      report.message_history = vim.fn.execute('messages')
      report.health = health()
      finish(nil)
    end, 100)
  end)
end

vim.defer_fn(function()
  vim.cmd('edit ' .. vim.fn.fnameescape(env.CODELLAMA_TEST_FILE))
  step('edited')
  local ok, e = pcall(scenarios[env.CODELLAMA_TEST_SCENARIO])
  if not ok then finish(tostring(e)) end
end, 0)
