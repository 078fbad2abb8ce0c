"""Emacs in batch (Debian's 28.2 with elpa-eglot 1.9, or 29+ with built-in eglot) with codellama.el and the
real server: typing shows an overlay holding exactly the server's completion; TAB puts it in the buffer
exactly once with point after it; codellama-explain streams the server's answer into *codellama*.

One Emacs session runs the whole scenario (emacs_driver.el) and writes a JSON report that the tests check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from editor_helpers import REPO, SERVER_SETTINGS, clean_env, tail

pytestmark = [pytest.mark.editor, pytest.mark.slow]

DRIVER = Path(__file__).with_name("emacs_driver.el")
SOURCE = "def add(a, b):\n    return \n\n\ndef mul(a, b):\n    return a * b\n"
LINE = 2
TYPED = "a"
EMACS = shutil.which("emacs")


def _has_eglot(emacs: str, env: dict) -> bool:
    probe = subprocess.run([emacs, "--batch", "--eval", "(progn (require 'eglot) (princ \"ok\"))"],
                           capture_output=True, text=True, env=env, timeout=60)
    return probe.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def session(server_command, tmp_path_factory):
    if not EMACS:
        pytest.skip("Emacs not installed (apt emacs-nox elpa-eglot)")
    work = tmp_path_factory.mktemp("emacs")
    env = clean_env(
        # Outside the project folder: the server watches the project, and its log lives under HOME.
        tmp_path_factory.mktemp("emacs-home"),
        CODELLAMA_TEST_LISP=str(REPO / "editors" / "emacs"),
        CODELLAMA_TEST_CMD=json.dumps(server_command),
        CODELLAMA_TEST_SETTINGS=json.dumps(SERVER_SETTINGS),
        CODELLAMA_TEST_LINE=str(LINE),
        CODELLAMA_TEST_TYPE=TYPED,
    )
    if not _has_eglot(EMACS, env):
        pytest.skip("eglot not available to Emacs (Emacs 29+, or apt elpa-eglot on 28)")
    src = work / "demo.py"
    src.write_text(SOURCE)
    out = work / "report.json"
    env.update(CODELLAMA_TEST_FILE=str(src), CODELLAMA_TEST_OUT=str(out))
    proc = subprocess.run([EMACS, "--batch", "-l", str(DRIVER)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=330)
    assert out.is_file(), f"Emacs wrote no report (rc {proc.returncode}):\n{tail_text(proc)}"
    report = json.loads(out.read_text())
    print(f"Emacs {report.get('emacs')}: {' '.join(report['steps'])}")
    assert not report.get("error"), f"{report['error']} (steps {report['steps']})\n{tail_text(proc)}"
    return report


def tail_text(proc) -> str:
    return (proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]).strip()


def _item(report) -> tuple[str, dict | None]:
    items = (report["direct"] or {}).get("items") or []
    assert items, f"the server returned no completion: {report['direct']}"
    insert = items[0]["insertText"]
    return (insert if isinstance(insert, str) else insert["value"]), items[0].get("range")


def _offset(text: str, pos: dict) -> int:
    # The range lies in the ASCII source around the cursor, where every position encoding agrees.
    lines = text.split("\n")
    return sum(len(l) + 1 for l in lines[: pos["line"]]) + pos["character"]


def test_overlay_shows_the_servers_completion(session):
    insert, rng = _item(session)
    before = session["text_before"]
    assert before == SOURCE.replace("    return \n", "    return " + TYPED + "\n", 1)
    point = session["point_before"]
    start = _offset(before, rng["start"]) if rng else point
    typed = before[start:point]
    assert insert.startswith(typed) and len(insert) > len(typed)
    assert session["ghost"] == insert[len(typed):]
    assert session["ghost_at"] == point
    assert session["overlays"] == 1
    assert session["codellama_mode"]


def test_tab_inserts_the_completion_once_with_point_after_it(session):
    insert, rng = _item(session)
    before = session["text_before"]
    point = session["point_before"]
    start = _offset(before, rng["start"]) if rng else point
    end = _offset(before, rng["end"]) if rng else point
    assert session["text_after"] == before[:start] + insert + before[end:]
    assert session["point_after"] == start + len(insert)
    assert session["ghost_after_accept"] is None


def test_explain_streams_the_answer_into_the_codellama_buffer(session):
    ex = session["explain"]
    assert not ex.get("error"), ex
    assert ex["conversationId"] and ex["text"].strip()
    if ex["streamed"]:
        assert ex["streamed"] == ex["text"]
    assert session["explain_buffer"].startswith("# Explain demo.py:1-")
    assert session["explain_buffer"].endswith(ex["text"])
    assert session["explain_mode"] in ("markdown-mode", "gfm-mode", "text-mode")


def test_next_cycles_through_the_alternatives(session):
    """Typing gets one suggestion; M-n asks for the alternatives (distinct, from one prefill), shows the
    second, and further presses cycle through all of them back to the first."""
    cycle, count = session["cycle"], session["cycle_items"]
    assert count >= 2, cycle
    assert len(cycle) == count + 1 and cycle[-1] == cycle[0]
    assert len(set(cycle[:-1])) == count
