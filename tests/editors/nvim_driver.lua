-- Drives headless Neovim like a user, for tests/editors/test_nvim_e2e.py. Everything runs from timers
-- so that Neovim's main loop processes the fed keys exactly as typed ones (insert mode, autocommands,
-- mappings). Input and output through environment variables and one JSON file:
--   CODELLAMA_TEST_RTP   the plugin directory (editors/nvim)
--   CODELLAMA_TEST_CMD   JSON list: the server command; CODELLAMA_TEST_SETTINGS  JSON: initializationOptions
--   CODELLAMA_TEST_FILE  the file to edit;  CODELLAMA_TEST_LINE  1-based line to append to
--   CODELLAMA_TEST_TYPE  characters typed at the end of that line
--   CODELLAMA_TEST_OUT   where the JSON report goes
local env = vim.env
vim.opt.rtp:prepend(env.CODELLAMA_TEST_RTP)
vim.cmd('runtime plugin/codellama.lua')
vim.o.swapfile = false

local d = dofile(env.CODELLAMA_TEST_NVIM_LIB).new(env.CODELLAMA_TEST_OUT)
local report, step, finish, poll, keys = d.report, d.step, d.finish, d.poll, d.keys

local cl = require('codellama').setup({
  cmd = vim.fn.json_decode(env.CODELLAMA_TEST_CMD),
  settings = vim.fn.json_decode(env.CODELLAMA_TEST_SETTINGS),
  debounce_ms = 50,
  chat_layout = 'split',
})
local ghost = require('codellama.ghost')
local compat = require('codellama.compat')
report.nvim = tostring(vim.version().major) .. '.' .. vim.version().minor .. '.' .. vim.version().patch

--- What the extmarks show: first line from virt_text, the rest from virt_lines.
local function shown_ghost()
  local marks = vim.api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, { details = true })
  if #marks == 0 then return nil end
  local m = marks[1]
  local d = m[4]
  local parts = {}
  for _, chunk in ipairs(d.virt_text or {}) do table.insert(parts, chunk[1]) end
  local text = table.concat(parts)
  for _, vl in ipairs(d.virt_lines or {}) do
    local lp = {}
    for _, chunk in ipairs(vl) do table.insert(lp, chunk[1]) end
    text = text .. '\n' .. table.concat(lp)
  end
  return { row = m[2], col = m[3], text = text, pos = d.virt_text_pos, count = #marks }
end

local function buffer_text()
  return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
end

vim.defer_fn(function()
  vim.cmd('edit ' .. vim.fn.fnameescape(env.CODELLAMA_TEST_FILE))
  step('edited')
  poll('the model to be ready', 180000, function()
    if cl.status.state == 'error' then error('server error: ' .. tostring(cl.status.message)) end
    return cl.client() and cl.status.state == 'ready'
  end, function()
    step('ready')
    report.encoding = cl.client().offset_encoding
    vim.api.nvim_win_set_cursor(0, { tonumber(env.CODELLAMA_TEST_LINE), 0 })
    keys('A' .. env.CODELLAMA_TEST_TYPE, 'nt') -- append, then type: TextChangedI triggers the request
    poll('ghost text', 60000, shown_ghost, function(first)
      step('ghost')
      -- "next" (<M-]>): typing got one suggestion, so the plugin asks for the alternatives and shows the
      -- next one; further presses cycle through them and back to the first.
      report.cycle = { first.text }
      keys('<M-]>', 'mt')
      poll('the next suggestion', 120000, function()
        local _, s = ghost.get(vim.api.nvim_get_current_buf())
        return s and #s.items > 1 and s.index == 2 and shown_ghost()
      end, function(second)
        local _, s = ghost.get(vim.api.nvim_get_current_buf())
        report.cycle_items = #s.items
        table.insert(report.cycle, second.text)
        for _ = 3, #s.items + 1 do
          require('codellama').next()
          table.insert(report.cycle, shown_ghost().text)
        end
        step('cycled')
      local g = shown_ghost()
      report.ghost = g
      report.mode_at_ghost = vim.fn.mode()
      local cur = vim.api.nvim_win_get_cursor(0)
      report.cursor_before = { cur[1] - 1, cur[2] }
      report.text_before = buffer_text()
      -- The same request, straight to the server: what the plugin shows must be exactly this.
      local line = vim.api.nvim_get_current_line()
      local params = {
        textDocument = { uri = vim.uri_from_bufnr(0) },
        position = { line = cur[1] - 1, character = compat.char_index(line, cur[2], cl.client().offset_encoding) },
        context = { triggerKind = 1 },
      }
      local direct
      compat.request(cl.client(), 'textDocument/inlineCompletion', params, function(err, result)
        direct = { err = err, result = result }
      end, 0)
      poll('the direct request', 60000, function() return direct end, function()
        report.direct = direct.result
        report.direct_error = direct.err
        keys('<Tab>', 'mt') -- the plugin's accept mapping
        local tick = vim.api.nvim_buf_get_changedtick(0)
        poll('the accepted text', 10000, function() return vim.api.nvim_buf_get_changedtick(0) ~= tick end, function()
          step('accepted')
          local c = vim.api.nvim_win_get_cursor(0)
          report.cursor_after = { c[1] - 1, c[2] }
          report.text_after = buffer_text()
          report.mode_after = vim.fn.mode()
          keys('<Esc>', 'nt')
          poll('normal mode', 5000, function() return vim.fn.mode() == 'n' end, function()
            local out_buf = cl.explain(1, vim.api.nvim_buf_line_count(0))
            local chat = require('codellama.chat')
            poll('the explanation', 120000, function() return chat.last end, function(last)
              step('explained')
              report.explain = {
                conversationId = last.conversationId,
                text = last.text,
                streamed = last.streamed,
                error = last.error,
                buffer = table.concat(vim.api.nvim_buf_get_lines(out_buf, 0, -1, false), '\n'),
                window_shows_it = #vim.fn.win_findbuf(out_buf) > 0,
                filetype = vim.api.nvim_buf_get_option(out_buf, 'filetype'),
              }
              vim.cmd('checkhealth codellama')
              report.health = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
              finish(nil)
            end)
          end)
        end)
      end)
      end)
    end)
  end)
end, 0)
