"""Emacs 28 + eglot in daily use, with codellama.el and the real server (issue: the editors as a new user
tries them):

- an Explain and a chat streaming at the same time each keep their own section of *codellama*;
- killing *codellama* while an answer streams cancels it, with no process-filter errors, and the next
  chat question works (the conversation history still alternates);
- the mode line keeps the completion latency, not the chat's; `M-x codellama-doctor` shows both apart,
  the model and where the log is;
- a binary file named ``.py`` (eglot sends didChange without didOpen) gives no "Error in server";
- a keystroke while the model loads is answered once it is loaded (the load is held back until the
  request went out, so this never depends on speed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from editor_helpers import REPO, SERVER_SETTINGS, clean_env, gated_load_env
from test_emacs_e2e import _has_eglot

pytestmark = [pytest.mark.editor, pytest.mark.slow]

DRIVER = Path(__file__).with_name("emacs_daily_driver.el")
SOURCE = "def add(a, b):\n    return \n\n\ndef mul(a, b):\n    return a * b\n"
EMACS = shutil.which("emacs")


def _run(tmp: Path, command: list[str], scenario: str, content: bytes = b"", gate: bool = False) -> dict:
    if not EMACS:
        pytest.skip("Emacs not installed (apt emacs-nox elpa-eglot)")
    work, home = tmp / "project", tmp / "home"
    work.mkdir()
    src = work / "demo.py"
    src.write_bytes(SOURCE.encode())
    (work / "blob.py").write_bytes(content)
    out = tmp / "report.json"
    env = clean_env(home, CODELLAMA_TEST_LISP=str(REPO / "editors" / "emacs"), CODELLAMA_TEST_CMD=json.dumps(command),
                    CODELLAMA_TEST_SETTINGS=json.dumps(SERVER_SETTINGS), CODELLAMA_TEST_FILE=str(src),
                    CODELLAMA_TEST_OUT=str(out), CODELLAMA_TEST_SCENARIO=scenario, CODELLAMA_TEST_LINE="2",
                    CODELLAMA_TEST_TYPE="a")
    if not _has_eglot(EMACS, env):
        pytest.skip("eglot not available to Emacs (Emacs 29+, or apt elpa-eglot on 28)")
    if gate:
        gated_load_env(tmp, env)
    proc = subprocess.run([EMACS, "--batch", "-l", str(DRIVER)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=500)
    assert out.is_file(), f"Emacs wrote no report (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[:1500]}\n...\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    print(f"Emacs {report.get('emacs')}: {' '.join(report['steps'])}")
    assert not report.get("error"), f"{report['error']} (steps {report['steps']})\n{proc.stderr[-6000:]}"
    return report


def test_explain_and_chat_stream_into_their_own_sections_and_killing_the_buffer_is_safe(server_command, tmp_path):
    r = _run(tmp_path, server_command, "streams")
    out = r["output_after_both"]
    explain, chat = r["explain_text"], r["chat_text"]
    assert explain.strip() and chat.strip()
    assert out.startswith("# Explain demo.py:1-")
    heading = "## You\nWhat does add do?\n\n## Code Llama\n\n"
    assert heading in out, out
    explain_part, chat_part = out.split(heading)
    assert explain_part.rstrip("\n").endswith(explain.rstrip("\n")), out
    assert chat_part == chat, out

    # item 2: killing *codellama* mid-answer
    assert "error in process filter" not in r["messages"], r["messages"][-3000:]
    assert r["killed_section_state"] == "cancelled"
    assert not r["chat_after_kill_failed"], r["messages"][-2000:]
    assert "Thanks. One more" in r["output_after_kill"]
    roles = r["history"]
    assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) >= 4, roles

    # item 8: the mode line shows the completion latency, not the chat's
    assert r["mode_line_after_chat"] == r["mode_line_after_completion"], (r["mode_line_after_completion"],
                                                                          r["mode_line_after_chat"])
    assert r["mode_line_after_completion"].startswith(" CL:") and r["mode_line_after_completion"].endswith("ms")
    # item 10: M-x codellama-doctor
    doctor = r["doctor"]
    assert "model ready" in doctor and "last completion:" in doctor and "last chat answer:" in doctor, doctor
    assert "server log: " in doctor and "server.log" in doctor, doctor


def test_a_binary_file_named_py_gives_no_error_popup(server_command, tmp_path):
    blob = bytes(range(256)) * 64 + b"\xff\xfe\x00\x00 not text \x00"
    r = _run(tmp_path, server_command, "binary", content=blob)
    assert "Error in server" not in r["messages"], r["messages"][-3000:]
    assert "KeyError" not in r["messages"] and "KeyError" not in r["events"], r["events"][-3000:]


def test_a_keystroke_while_the_model_loads_is_answered_when_it_is_loaded(server_command, tmp_path):
    r = _run(tmp_path, server_command, "loading", gate=True)
    assert r["state_at_request"] == "loading"
    assert r["requests"] == 1, "the suggestion needed another keystroke"
    assert r["ghost"]
