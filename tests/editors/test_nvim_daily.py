"""Neovim in daily use (0.7.2 and 0.11), with the plugin and the real server (issue: the editors as a new
user tries them):

- typing while the model loads is not lost: the suggestion appears once it is loaded, without another
  keystroke (the model load is held back until the request went out, so this never depends on speed);
- the status keeps the completion latency apart from the chat latency (statusline, :checkhealth);
- the demo-model notice never stops the user with "Press ENTER": one line that fits, the whole text in
  :checkhealth (also checked in a real terminal, tmux, when it is installed);
- ghost text has its own colour and italics in a 256-colour terminal (not only a GUI colour);
- quitting with :qa! leaves no ERROR lines or tracebacks in server.log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from editor_helpers import NVIMS, REPO, SERVER_SETTINGS, clean_env, find_nvim, gated_load_env, tail

pytestmark = [pytest.mark.editor, pytest.mark.slow]

DRIVER = Path(__file__).with_name("nvim_daily_driver.lua")
SOURCE = "def add(a, b):\n    return \n\n\ndef mul(a, b):\n    return a * b\n"


def _nvim(version: str) -> str:
    return find_nvim(version)[0]


def _setup(tmp: Path, command: list[str], scenario: str, **extra: str) -> tuple[dict, Path, Path]:
    work, home = tmp / "project", tmp / "home"
    work.mkdir()
    src = work / "demo.py"
    src.write_text(SOURCE)
    out = tmp / "report.json"
    env = clean_env(home, CODELLAMA_TEST_RTP=str(REPO / "editors" / "nvim"), CODELLAMA_TEST_CMD=json.dumps(command),
                    CODELLAMA_TEST_SETTINGS=json.dumps(SERVER_SETTINGS), CODELLAMA_TEST_FILE=str(src),
                    CODELLAMA_TEST_OUT=str(out), CODELLAMA_TEST_SCENARIO=scenario, CODELLAMA_TEST_LINE="2",
                    CODELLAMA_TEST_TYPE="a", **extra)
    return env, out, home


def _run(nvim: str, env: dict, out: Path, home: Path) -> dict:
    proc = subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-S", str(DRIVER)],
                          cwd=out.parent / "project", env=env, capture_output=True, text=True, timeout=400)
    logs = "\n".join(tail(p) for p in home.rglob("*.log"))
    assert out.is_file(), f"no report (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{logs}"
    report = json.loads(out.read_text())
    print(f"Neovim {report.get('nvim')}: {' '.join(report['steps'])}")
    assert not report.get("error"), f"{report['error']} (steps {report['steps']})\n{logs}"
    return report


def _server_log(home: Path, pid: int) -> str:
    """server.log once the server process has ended (it may outlive Neovim's :qa! for a moment)."""
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # waits for the process to end, a condition; no result depends on the time
    assert not _alive(pid), "the server outlived Neovim by a minute"
    logs = list(home.rglob("server.log"))
    assert logs, f"no server.log under {home}"
    return "\n".join(p.read_text(errors="replace") for p in logs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "zombie" in status.read_text())


@pytest.mark.parametrize("version", sorted(NVIMS))
def test_typing_while_the_model_loads_is_answered_when_it_is_loaded(version, server_command, tmp_path):
    nvim = _nvim(version)
    env, out, home = _setup(tmp_path, server_command, "loading")
    gated_load_env(tmp_path, env)
    report = _run(nvim, env, out, home)
    assert report["requests"][0]["state"] in ("starting", "loading"), report["requests"]
    assert len(report["requests"]) == 1, "the suggestion needed another request"
    assert report["ghost"]["text"], report
    assert report["mode"].startswith("i")

    # item 8: completion and chat latencies apart
    status = report["status"]
    assert not report.get("chat_error"), report["chat_error"]
    assert isinstance(status["last_chat_ms"], (int, float)) and isinstance(status["last_completion_ms"], (int, float))
    assert status["last_completion_ms"] == report["completion_ms"]
    assert report["statusline_after_chat"] == report["statusline_after_completion"], \
        "the chat answer changed the completion latency shown"
    health = report["health"]
    assert f"last completion: {int(status['last_completion_ms'])} ms" in health, health
    assert f"last chat answer: {int(status['last_chat_ms'])} ms" in health, health
    assert "server.log" in health

    # item 9: :qa! leaves a clean log
    log = _server_log(home, status["pid"])
    assert "ERROR" not in log and "Traceback" not in log, log[-4000:]
    assert '"%s"' not in log and "%r" not in log, log[-4000:]


@pytest.mark.parametrize("version", sorted(NVIMS))
def test_the_demo_model_notice_fits_one_line_and_ghost_text_has_a_terminal_colour(version, editor_model, tmp_path):
    nvim = _nvim(version)
    # No --model: the default model is not in the (empty) Hugging Face cache, so the demo model stands in
    # and the server says so.
    command = [sys.executable, "-m", "codellama_lsp.cli", "serve"]
    env, out, home = _setup(tmp_path, command, "notice")
    report = _run(nvim, env, out, home)
    notice = next((m for m in report["messages"] if "Hugging Face" in m or "demo" in m), None)
    assert notice, report["messages"]
    assert notice in report["health"], "the whole notice is in :checkhealth codellama"
    for line in report["message_history"].splitlines():
        assert len(line) < 80, f"a message wider than the screen makes Neovim wait for ENTER: {line!r}"
    assert not report["mode"].startswith("r"), report["mode"]
    hl = report["ghost_hl"]
    assert hl["ctermfg"] is not None, f"CodellamaGhost has no colour without 'termguicolors': {hl}"
    assert hl["italic"], hl


TMUX = shutil.which("tmux")


@pytest.mark.skipif(not TMUX, reason="tmux not installed (apt tmux): the real-terminal check needs it")
def test_no_press_enter_prompt_in_a_real_terminal(tmp_path):
    nvim = _nvim("0.11")
    command = [sys.executable, "-m", "codellama_lsp.cli", "serve"]
    env, out, home = _setup(tmp_path, command, "notice", CODELLAMA_TEST_KEEP_OPEN="1", TERM="xterm-256color")
    session = f"codellama-test-{tmp_path.name}"
    socket = str(tmp_path / "tmux.sock")
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\nexec " + " ".join(
        f"'{a}'" for a in [nvim, "-u", "NONE", "-i", "NONE", "-n", "-S", str(DRIVER)]) + "\n")
    script.chmod(0o755)
    subprocess.run([TMUX, "-S", socket, "-f", "/dev/null", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    "-c", str(tmp_path / "project"), str(script)], env=env, check=True, timeout=30)
    try:
        deadline = time.monotonic() + 240
        while not out.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)  # polls for the driver's report (a condition)
        assert out.is_file(), "Neovim in tmux wrote no report"
        report = json.loads(out.read_text())
        assert not report.get("error"), report
        screen = subprocess.run([TMUX, "-S", socket, "capture-pane", "-p", "-t", session],
                                capture_output=True, text=True, timeout=30).stdout
        assert "Press ENTER" not in screen, screen
        assert report["mode"] == "n", report["mode"]
    finally:
        subprocess.run([TMUX, "-S", socket, "kill-server"], capture_output=True, timeout=30)


@pytest.mark.parametrize("version", sorted(NVIMS))
def test_help_works_without_a_plugin_manager(version, tmp_path):
    """`:help codellama` with only the runtime path set (plain init.lua): the tags ship in doc/tags, and
    they are the ones :helptags makes from the current help file."""
    nvim = _nvim(version)
    plugin = REPO / "editors" / "nvim"
    out = tmp_path / "help.txt"
    script = (f"vim.opt.rtp:append({json.dumps(str(plugin))}); vim.cmd('help codellama-setup'); "
              f"local f = io.open({json.dumps(str(out))}, 'w'); f:write(vim.fn.expand('%:t') .. '\\n' .. "
              "vim.api.nvim_get_current_line()); f:close(); vim.cmd('qa!')")
    init = tmp_path / "init.lua"
    init.write_text(script)
    env = clean_env(tmp_path / "home")
    subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-S", str(init)], env=env,
                   capture_output=True, text=True, timeout=60)
    assert out.is_file(), "Neovim could not open :help codellama-setup"
    name, line = out.read_text().split("\n", 1)
    assert name == "codellama.txt" and "*codellama-setup*" in line, (name, line)

    fresh = tmp_path / "doc"
    shutil.copytree(plugin / "doc", fresh)
    (fresh / "tags").unlink()
    subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c", f"helptags {fresh}", "-c", "qa!"],
                   env=env, capture_output=True, timeout=60)
    assert (fresh / "tags").read_text() == (plugin / "doc" / "tags").read_text(), \
        "editors/nvim/doc/tags is out of date: run :helptags editors/nvim/doc"


def test_a_20_mb_file_gets_a_suggestion_from_a_bounded_prompt(server_command, tmp_path):
    """Item 7, in the editor: a 20 MB .py file is opened and typed in (while the model loads, so the one
    request is answered when it is loaded); the suggestion comes from one request whose prompt stays within the
    token budget, and the log stays clean. Per-keystroke cost against file size is measured by bench/big_file.py."""
    nvim = _nvim("0.11")
    env, out, home = _setup(tmp_path, server_command, "loading")
    src = Path(env["CODELLAMA_TEST_FILE"])
    filler = "".join(f"\n\ndef helper_{i}(value):\n    return value * {i % 97} + {i % 13}\n" for i in range(400_000))
    src.write_text(SOURCE + filler)
    assert src.stat().st_size > 20_000_000
    gated_load_env(tmp_path, env)
    report = _run(nvim, env, out, home)
    assert len(report["requests"]) == 1, report["requests"]
    assert report["ghost"]["text"], report
    log = _server_log(home, report["status"]["pid"])
    prompts = [int(part.split("+")[0]) for part in
               (line.split(", ")[1] for line in log.splitlines() if "completion model:" in line)]
    assert prompts and max(prompts) <= 4096, prompts
    assert "ERROR" not in log and "Traceback" not in log, log[-4000:]
