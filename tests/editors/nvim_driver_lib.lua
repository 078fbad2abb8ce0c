-- What every Neovim test driver needs (nvim_driver.lua, nvim_daily_driver.lua, nvim_actions_driver.lua):
-- a JSON report with timed steps, written once at the end; polling a condition from timers, so fed keys go
-- through insert mode, autocommands and mappings as typed ones do; feeding keys. Loaded with
-- dofile(vim.env.CODELLAMA_TEST_NVIM_LIB) (set by editor_helpers.clean_env).
--   local d = dofile(vim.env.CODELLAMA_TEST_NVIM_LIB).new(out_path, { keep_open = false, poll_ms = 50 })
--   d.report, d.t0, d.step(name), d.finish(err), d.poll(what, timeout_ms, cond, next_fn), d.keys(s, mode)
local M = {}

function M.new(out_path, opts)
  opts = opts or {}
  local poll_ms = opts.poll_ms or 50
  local d = { report = { steps = {} }, t0 = vim.loop.hrtime() }

  function d.step(name)
    table.insert(d.report.steps, string.format('%s@%.1fs', name, (vim.loop.hrtime() - d.t0) / 1e9))
  end

  function d.finish(err)
    d.report.error = err
    local f = assert(io.open(out_path, 'w'))
    f:write(vim.fn.json_encode(d.report))
    f:close()
    if not opts.keep_open then vim.cmd('qa!') end
  end

  --- Poll `cond` every poll_ms (on the main loop) until it returns a truthy value, then call `next_fn`.
  function d.poll(what, timeout_ms, cond, next_fn)
    local deadline = vim.loop.now() + timeout_ms
    local function tick()
      local ok, v = pcall(cond)
      if not ok then return d.finish(what .. ': ' .. tostring(v)) end
      if v then
        local ok2, e = pcall(next_fn, v)
        if not ok2 then d.finish(what .. ' (after): ' .. tostring(e)) end
        return
      end
      if vim.loop.now() > deadline then return d.finish('timed out waiting for ' .. what) end
      vim.defer_fn(tick, poll_ms)
    end
    vim.defer_fn(tick, opts.first_poll_ms or 0)
  end

  function d.keys(s, mode)
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(s, true, false, true), mode, false)
  end

  return d
end

return M
