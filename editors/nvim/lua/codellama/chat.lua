-- Chat and Explain in a scratch buffer (markdown) shown in a split or a floating window. Answers stream in
-- from `codellama/chatChunk` notifications; the final response replaces the streamed text, so a lost chunk
-- never leaves a truncated answer.
local M = {}

M.opts = { layout = 'split' } -- 'split' | 'vsplit' | 'float'
local conversations = {} -- conversationId -> { buf, start_line, chunks = {seq -> text}, final }
local chat = { buf = nil, id = nil, messages = {} }

local function new_id()
  return string.format('nvim-%d-%d', vim.fn.getpid(), vim.loop.hrtime())
end

local function set_lines(buf, from, lines)
  vim.api.nvim_buf_set_option(buf, 'modifiable', true)
  vim.api.nvim_buf_set_lines(buf, from, -1, false, lines)
  vim.api.nvim_buf_set_option(buf, 'modifiable', false)
end

local function open_window(buf)
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_buf(win) == buf then return win end
  end
  local prev = vim.api.nvim_get_current_win()
  local win
  if M.opts.layout == 'float' then
    local w = math.floor(vim.o.columns * 0.7)
    local h = math.floor(vim.o.lines * 0.6)
    win = vim.api.nvim_open_win(buf, false, {
      relative = 'editor', width = w, height = h, row = math.floor((vim.o.lines - h) / 2),
      col = math.floor((vim.o.columns - w) / 2), style = 'minimal', border = 'rounded',
    })
  else
    vim.cmd((M.opts.layout == 'vsplit' and 'botright vsplit' or 'botright split'))
    win = vim.api.nvim_get_current_win()
    vim.api.nvim_win_set_buf(win, buf)
    vim.api.nvim_set_current_win(prev)
  end
  vim.api.nvim_win_set_option(win, 'wrap', true)
  return win
end

local function scratch(name)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_option(buf, 'bufhidden', 'hide')
  vim.api.nvim_buf_set_option(buf, 'filetype', 'markdown')
  pcall(vim.api.nvim_buf_set_name, buf, name)
  return buf
end

local function text_of(c)
  if c.final then return c.final end
  local seqs = vim.tbl_keys(c.chunks)
  table.sort(seqs)
  local parts = {}
  for _, s in ipairs(seqs) do table.insert(parts, c.chunks[s]) end
  return table.concat(parts)
end

local function redraw(c)
  if not vim.api.nvim_buf_is_valid(c.buf) then return end
  set_lines(c.buf, c.start_line, vim.split(text_of(c), '\n', { plain = true }))
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_buf(win) == c.buf then
      pcall(vim.api.nvim_win_set_cursor, win, { vim.api.nvim_buf_line_count(c.buf), 0 })
    end
  end
end

--- Start a conversation section at the end of `buf` under `heading`; answers to `id` go there.
local function begin(id, buf, heading)
  local n = vim.api.nvim_buf_line_count(buf)
  local first = (n == 1 and vim.api.nvim_buf_get_lines(buf, 0, 1, false)[1] == '') and 0 or n
  local head = vim.split(heading, '\n', { plain = true })
  table.insert(head, '')
  set_lines(buf, first, head)
  conversations[id] = { buf = buf, start_line = first + #head, chunks = {} }
  open_window(buf)
  return conversations[id]
end

local PENDING = '__explain_pending__'

--- The section a stream with `id` goes to: known, else an Explain waiting for its id, else a new buffer.
local function section_for(id)
  if conversations[id] then return conversations[id] end
  if conversations[PENDING] then
    conversations[id], conversations[PENDING] = conversations[PENDING], nil
    return conversations[id]
  end
  -- A stream we did not start (e.g. Explain chosen from vim.lsp.buf.code_action()).
  return begin(id, scratch('codellama://explain/' .. id), '# Code Llama')
end

--- `codellama/chatChunk` notification handler.
function M.on_chunk(params)
  local c = section_for(params.conversationId)
  if c.chunks[params.seq] == nil then c.chunks[params.seq] = params.text or '' end
  redraw(c)
end

local function finish(id, text)
  local c = conversations[id]
  if not c then return end
  c.final = text or text_of(c)
  redraw(c)
  M.last = { conversationId = id, text = c.final, buf = c.buf, streamed = text_of({ chunks = c.chunks }) }
end

--- Explain the lines [first, last] (1-based) of the current buffer: `workspace/executeCommand`
--- codellama.explain with [uri, range, version]; the answer streams into a markdown buffer.
function M.explain(client, first, last)
  local compat = require('codellama.compat')
  local buf = vim.api.nvim_get_current_buf()
  local last_line = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ''
  local encoding = client.offset_encoding or 'utf-16'
  local range = {
    start = { line = first - 1, character = 0 },
    ['end'] = { line = last - 1, character = compat.char_index(last_line, #last_line, encoding) },
  }
  local name = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(buf), ':t')
  local out = scratch(string.format('codellama://explain/%s:%d-%d', name, first, last))
  begin(PENDING, out, string.format('# Explain %s:%d-%d', name, first, last))
  local params = {
    command = 'codellama.explain',
    arguments = { vim.uri_from_bufnr(buf), range, vim.lsp.util.buf_versions[buf] or 0 },
  }
  M.last = nil
  compat.request(client, 'workspace/executeCommand', params, function(err, result)
    if err then
      local c = conversations[PENDING]
      conversations[PENDING] = nil
      if c then set_lines(c.buf, c.start_line, { '**error:** ' .. (err.message or vim.inspect(err)) }) end
      M.last = { error = err.message or vim.inspect(err) }
      return
    end
    local id = (result and result.conversationId) or PENDING
    section_for(id)
    finish(id, result and result.text or '')
  end, buf)
  return out
end

--- Ask `question` in the chat buffer; the conversation keeps its history (sent with every turn).
function M.ask(client, question)
  if not chat.buf or not vim.api.nvim_buf_is_valid(chat.buf) then
    chat = { buf = scratch('codellama://chat'), id = new_id(), messages = {} }
  end
  table.insert(chat.messages, { role = 'user', content = question })
  local c = begin(chat.id, chat.buf, '## You\n' .. question .. '\n\n## Code Llama')
  local params = { conversationId = chat.id, messages = vim.deepcopy(chat.messages) }
  if vim.bo.buftype == '' then params.textDocument = { uri = vim.uri_from_bufnr(0) } end
  require('codellama.compat').request(client, 'codellama/chat', params, function(err, result)
    if err then
      set_lines(c.buf, c.start_line, { '**error:** ' .. (err.message or vim.inspect(err)) })
      return
    end
    finish(chat.id, result and result.text or '')
    table.insert(chat.messages, { role = 'assistant', content = c.final })
  end, vim.api.nvim_get_current_buf())
  return chat.buf
end

function M.reset()
  chat = { buf = nil, id = nil, messages = {} }
end

return M
