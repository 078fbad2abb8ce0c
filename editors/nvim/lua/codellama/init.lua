-- codellama.nvim: ghost-text completions, Explain and chat from a local `codellama-lsp` server.
--
--   require('codellama').setup({
--     cmd = { 'codellama-lsp', 'serve' },        -- or python = '~/.venv/bin/python'
--     settings = { model = 'demo', maxTokens = 64 }, -- sent as initializationOptions
--   })
--
-- The server does the work (prompting, the model, cancellation); this file starts it through vim.lsp,
-- asks for `textDocument/inlineCompletion` while you type, and draws the answer as ghost text.
local compat = require('codellama.compat')
local ghost = require('codellama.ghost')
local completion = require('codellama.completion')
local chat = require('codellama.chat')

local M = {}

M.defaults = {
  cmd = nil, -- default: { 'codellama-lsp', 'serve' }, or { python, '-m', 'codellama_lsp.cli', 'serve' }
  python = nil,
  settings = {}, -- server settings (camelCase): model, quantization, contextTokens, fimMode, maxTokens, ...
  filetypes = nil, -- nil = every normal file buffer; or a list of filetypes
  disabled_filetypes = { 'markdown', 'text', 'gitcommit', 'help' },
  auto_trigger = true,
  debounce_ms = 120,
  chat_layout = 'split', -- 'split' | 'vsplit' | 'float'
  keymaps = {
    accept = '<Tab>',
    accept_line = '<S-Tab>',
    accept_word = '<C-B>',
    dismiss = '<C-]>',
    next = '<M-]>',
    trigger = '<M-\\>',
  },
}

M.config = vim.deepcopy(M.defaults)
M.status = { state = 'starting' } -- last `codellama/status` notification
M.client_id = nil
M.messages = {} -- informational messages from the server, in full (:checkhealth codellama lists them)

local function server_cmd(cfg)
  if cfg.cmd then return cfg.cmd end
  if cfg.python then return { vim.fn.expand(cfg.python), '-m', 'codellama_lsp.cli', 'serve' } end
  return { 'codellama-lsp', 'serve' }
end

function M.client()
  -- get_client_by_id returns nil once the client has stopped.
  return M.client_id and compat.get_client(M.client_id) or nil
end

local handlers = {
  ['codellama/status'] = function(_, params)
    M.status = vim.tbl_extend('force', M.status, params or {})
    vim.api.nvim_exec_autocmds('User', { pattern = 'CodellamaStatus', modeline = false })
  end,
  ['codellama/chatChunk'] = function(_, params)
    chat.on_chunk(params)
  end,
  -- Errors and warnings go through vim.notify as usual. An informational message (the demo-model notice)
  -- must never stop typing with "Press ENTER": one line that fits the command line, in full in :checkhealth.
  ['window/showMessage'] = function(_, params)
    if type(params) ~= 'table' or type(params.message) ~= 'string' then return end
    local kind = params.type or 3
    if kind <= 2 then
      vim.notify(params.message, kind == 1 and vim.log.levels.ERROR or vim.log.levels.WARN)
      return
    end
    table.insert(M.messages, params.message)
    local line = M.short_message(params.message, vim.v.echospace)
    vim.schedule(function() vim.api.nvim_echo({ { line } }, false, {}) end)
  end,
}

--- `message` on one line of at most `width` display cells; a cut message says where the rest is.
function M.short_message(message, width)
  local line = message:gsub('%s+', ' ')
  width = math.max(20, (width or 60) - 1)
  if vim.fn.strdisplaywidth(line) <= width then return line end
  local more = '… (:checkhealth codellama)'
  local keep = width - vim.fn.strdisplaywidth(more)
  return vim.fn.strcharpart(line, 0, math.max(1, keep)) .. more
end

local function client_config()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.textDocument = caps.textDocument or {}
  caps.textDocument.inlineCompletion = { dynamicRegistration = false }
  return {
    name = 'codellama',
    cmd = server_cmd(M.config),
    root_dir = vim.fn.getcwd(),
    init_options = M.config.settings,
    settings = { codellama = M.config.settings },
    capabilities = caps,
    handlers = handlers,
    flags = { debounce_text_changes = 50 },
  }
end

local function wanted(buf)
  if vim.api.nvim_buf_get_option(buf, 'buftype') ~= '' then return false end
  local ft = vim.api.nvim_buf_get_option(buf, 'filetype')
  if vim.tbl_contains(M.config.disabled_filetypes or {}, ft) then return false end
  if M.config.filetypes then return vim.tbl_contains(M.config.filetypes, ft) end
  return true
end

--- Start the server (once) and attach `buf` to it.
function M.attach(buf)
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  if not wanted(buf) then return end
  if compat.has_011 then
    M.client_id = vim.lsp.start(client_config(), { bufnr = buf })
  else
    if not M.client() then M.client_id = vim.lsp.start_client(client_config()) end
    if M.client_id then vim.lsp.buf_attach_client(buf, M.client_id) end
  end
  if compat.native_inline and M.client_id then
    vim.lsp.inline_completion.enable(true, { bufnr = buf })
  end
end

--- Ask for a completion at the cursor now (Invoked trigger). `on_done(suggestions)` is optional.
function M.trigger(on_done)
  local c = M.client()
  if c then completion.request(c, completion.INVOKED, on_done) end
end

function M.dismiss()
  completion.stop_timer()
  completion.cancel(vim.api.nvim_get_current_buf())
  ghost.clear()
end

function M.accept(kind)
  if compat.native_inline then return vim.lsp.inline_completion.get() end
  return ghost.accept(kind or 'all')
end

function M.next()
  if compat.native_inline then return vim.lsp.inline_completion.select({ count = 1 }) end
  local buf = vim.api.nvim_get_current_buf()
  if ghost.next(buf) then return end
  -- One suggestion shown (typing asks for one): an explicit request gets the alternatives; show the next.
  M.trigger(function(suggestions)
    if #suggestions > 1 then ghost.next(buf) end
  end)
end

function M.explain(first, last)
  local c = M.client()
  if not c then return vim.notify('codellama: server not running', vim.log.levels.WARN) end
  return chat.explain(c, first, last)
end

function M.chat(question)
  local c = M.client()
  if not c then return vim.notify('codellama: server not running', vim.log.levels.WARN) end
  if question and question ~= '' then return chat.ask(c, question) end
  vim.ui.input({ prompt = 'Code Llama> ' }, function(q)
    if q and q ~= '' then chat.ask(c, q) end
  end)
end

--- The latest completion latency in ms (chat answers are counted apart), or nil.
function M.completion_ms()
  local s = M.status
  if type(s.last_completion_ms) == 'number' then return s.last_completion_ms end
  if s.last_completion_ms == nil and s.source ~= 'chat' and type(s.total_ms) == 'number' then
    return s.total_ms -- a server from before last_completion_ms
  end
  return nil
end

--- For statuslines: "codellama: loading", "codellama: 85 ms" (last completion), "codellama: error".
function M.statusline()
  local s = M.status
  local ms = M.completion_ms()
  if s.state == 'ready' and ms then return string.format('codellama: %d ms', ms) end
  return 'codellama: ' .. (s.state or '?')
end

local function on_text_changed()
  local buf = vim.api.nvim_get_current_buf()
  local acc = ghost.just_accepted
  ghost.just_accepted = nil
  if acc and acc.buf == buf and acc.changedtick == vim.api.nvim_buf_get_changedtick(buf) then
    if ghost.visible(buf) then return end -- a partial accept: keep showing the rest
  end
  ghost.clear(buf)
  local c = M.client()
  if c and M.config.auto_trigger and not compat.native_inline then completion.schedule(c, M.config.debounce_ms) end
end

local function on_cursor_moved()
  local buf = vim.api.nvim_get_current_buf()
  local _, s = ghost.get(buf)
  if not s then return end
  local cur = vim.api.nvim_win_get_cursor(0)
  if cur[1] - 1 ~= s.row or cur[2] ~= s.col then ghost.clear(buf) end
end

--- Insert-mode key: do `action` when a suggestion is shown, else behave like the key itself.
local function map_or_feed(lhs, action)
  vim.keymap.set('i', lhs, function()
    if compat.native_inline or ghost.visible() then
      if action() ~= false then return end
    end
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(lhs, true, false, true), 'n', false)
  end, { desc = 'codellama: ' .. lhs, silent = true })
end

--- CodellamaGhost: grey italic in every terminal. A link to Comment is not enough: Neovim 0.10+'s default
--- scheme gives Comment a GUI colour only, so without 'termguicolors' ghost text looked like real text.
--- `default = true`: a colour scheme or the user's own definition wins.
function M.define_highlights()
  vim.api.nvim_set_hl(0, 'CodellamaGhost', { fg = '#808080', ctermfg = 244, italic = true, cterm = { italic = true },
    default = true })
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  chat.opts.layout = M.config.chat_layout
  M.define_highlights()
  vim.api.nvim_create_autocmd('ColorScheme', { group = vim.api.nvim_create_augroup('codellama_hl', { clear = true }),
    callback = function() M.define_highlights() end })

  local group = vim.api.nvim_create_augroup('codellama', { clear = true })
  vim.api.nvim_create_autocmd({ 'BufReadPost', 'BufNewFile', 'FileType' }, {
    group = group,
    callback = function(ev) M.attach(ev.buf) end,
  })
  vim.api.nvim_create_autocmd('TextChangedI', { group = group, callback = on_text_changed })
  vim.api.nvim_create_autocmd('CursorMovedI', { group = group, callback = on_cursor_moved })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, { group = group, callback = function() M.dismiss() end })

  local k = M.config.keymaps
  if k.accept then map_or_feed(k.accept, function() return M.accept('all') end) end
  if k.accept_line then map_or_feed(k.accept_line, function() return M.accept('line') end) end
  if k.accept_word then map_or_feed(k.accept_word, function() return M.accept('word') end) end
  if k.dismiss then map_or_feed(k.dismiss, function() M.dismiss() end) end
  if k.next then vim.keymap.set('i', k.next, M.next, { desc = 'codellama: next suggestion' }) end
  if k.trigger then vim.keymap.set('i', k.trigger, function() M.trigger() end, { desc = 'codellama: suggest' }) end

  -- Buffers opened before setup() (e.g. `nvim file.py` with a plugin manager loading us late).
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.api.nvim_buf_get_name(buf) ~= '' then M.attach(buf) end
  end
  return M
end

return M
