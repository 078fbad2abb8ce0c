-- User commands; they work once require('codellama').setup() has started the server.
if vim.g.loaded_codellama then return end
vim.g.loaded_codellama = true

local function cl() return require('codellama') end

vim.api.nvim_create_user_command('CodellamaExplain', function(o) cl().explain(o.line1, o.line2) end,
  { range = true, desc = 'Explain the selected lines (or the current line)' })
vim.api.nvim_create_user_command('CodellamaChat', function(o) cl().chat(o.args) end,
  { nargs = '*', desc = 'Ask Code Llama a question about your code' })
vim.api.nvim_create_user_command('CodellamaSuggest', function() cl().trigger() end,
  { desc = 'Show an inline suggestion at the cursor' })
vim.api.nvim_create_user_command('CodellamaStatus', function() print(cl().statusline()) end,
  { desc = 'Show the server state and the last completion latency' })
