-- Drives headless Neovim with plain vim.lsp (no plugin) through the code-action menu, for
-- tests/editors/test_actions_nvim.py. Environment: ACTIONS_TEST_CMD (JSON: the server command),
-- ACTIONS_TEST_FILE (the file to edit), ACTIONS_TEST_OUT (the JSON report).
local env = vim.env
local d = dofile(env.CODELLAMA_TEST_NVIM_LIB).new(env.ACTIONS_TEST_OUT, { poll_ms = 20, first_poll_ms = 20 })
local report, step, finish, poll = d.report, d.step, d.finish, d.poll
report.statuses = 0

local new_api = vim.fn.has('nvim-0.10') == 1
local ready, chat_statuses, chunks, applied = false, 0, {}, {}
local handlers = {
  ['codellama/status'] = function(_, result)
    report.statuses = report.statuses + 1
    if result.state == 'ready' then ready = true end
    if result.state == 'error' then report.load_error = result.message end
    if result.source == 'chat' then chat_statuses = chat_statuses + 1 end
  end,
  ['codellama/chatChunk'] = function(_, result) table.insert(chunks, result) end,
}
-- Neovim's own applyEdit handler does the work; this only records that it ran and what it answered.
local default_apply = vim.lsp.handlers['workspace/applyEdit']
vim.lsp.handlers['workspace/applyEdit'] = function(err, result, ctx, config)
  local answer = default_apply(err, result, ctx, config)
  table.insert(applied, { label = result.label, applied = answer and answer.applied })
  return answer
end

-- the user picks an action by its title in the code-action menu
local wanted = nil
vim.ui.select = function(items, opts, on_choice)
  local titles = {}
  for i, item in ipairs(items) do
    local title = opts.format_item and opts.format_item(item) or tostring(item)
    table.insert(titles, title)
  end
  report.menu = report.menu or titles
  for i, title in ipairs(titles) do
    if title:find(wanted, 1, true) then return on_choice(items[i], i) end
  end
  finish('no "' .. wanted .. '" in the menu: ' .. table.concat(titles, ', '))
end

vim.o.swapfile = false
vim.cmd('edit ' .. vim.fn.fnameescape(env.ACTIONS_TEST_FILE))
local buf = vim.api.nvim_get_current_buf()
report.before = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
local config = {
  name = 'codellama',
  cmd = vim.fn.json_decode(env.ACTIONS_TEST_CMD),
  root_dir = vim.fn.fnamemodify(env.ACTIONS_TEST_FILE, ':h'),
  handlers = handlers,
}
local client_id
if new_api then
  client_id = vim.lsp.start(config)
else
  client_id = vim.lsp.start_client(config)
  vim.lsp.buf_attach_client(buf, client_id)
end
step('started')

-- "    return a - b" is line 2; mark-indexed range (1-based line, 0-based inclusive end column)
local diag = {
  range = { start = { line = 1, character = 11 }, ['end'] = { line = 1, character = 16 } },
  message = 'should add a and b', severity = 1, source = 'test',
}
local function menu(title, with_diagnostics)
  wanted = title
  local context = { diagnostics = with_diagnostics and { diag } or {} }
  if new_api then
    vim.lsp.buf.code_action({ context = context, range = { start = { 2, 0 }, ['end'] = { 2, 15 } } })
  else
    vim.lsp.buf.range_code_action(context, { 2, 0 }, { 2, 15 })
  end
end

poll('the model to load', 120000, function() return ready or report.load_error end, function()
  if report.load_error then return finish('model failed to load: ' .. report.load_error) end
  step('ready')
  menu('Explain this', false)
  poll('the explanation', 60000, function() return chat_statuses >= 1 end, function()
    step('explained')
    report.explain_chunks = chunks
    report.explain_menu = report.menu
    report.menu = nil
    menu('Fix this', true)
    poll('the fix to be applied', 60000, function() return #applied >= 1 end, function()
      step('fixed')
      report.fix_menu = report.menu
      report.applied = applied
      report.after = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
      report.modified = vim.bo[buf].modified
      local client = vim.lsp.get_client_by_id(client_id)
      if new_api then client:stop() else client.stop() end
      finish(nil)
    end)
  end)
end)
