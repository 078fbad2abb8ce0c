"""`codellama-lsp complete FILE:LINE:COL`: the server's completion, from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from codellama_lsp.cli import main

SOURCE = '''from helpers import scale_all


def total(values):
    """Sum of the scaled values."""
    scaled = scale_all(values)
    return 
'''


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """No developer config file, and the index cache goes to a temp dir."""
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    monkeypatch.delenv("CODELLAMA_LSP_MODEL", raising=False)


@pytest.fixture()
def project(tmp_path):
    (tmp_path / ".git").mkdir()  # the workspace root is the enclosing git root
    (tmp_path / "helpers.py").write_text("def scale_all(values, factor=2):\n    return [v * factor for v in values]\n")
    path = tmp_path / "pkg" / "main.py"
    path.parent.mkdir()
    path.write_text(SOURCE)
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["complete", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_prompt_the_completion_and_the_timings(capsys, project, tiny_model_dir):
    code, out, _ = run_cli(capsys, f"{project}:7:12", "--model", str(tiny_model_dir), "--max-tokens", "4",
                           "--show-prompt", "--json")
    assert code == 0
    data = json.loads(out)
    for key in ("completion", "prompt", "prompt_ids", "fim_mode", "model", "timings", "snippets"):
        assert key in data
    assert data["fim_mode"] == "spm"
    assert data["prompt_ids"][0] == 1  # BOS
    assert "def total(values):" in data["prompt"]
    assert data["timings"]["prompt_tokens"] == len(data["prompt_ids"])
    assert 0 < data["timings"]["generated_tokens"] <= 4
    assert any("helpers.py" in s["path"] for s in data["snippets"])  # repository context from the git root


def test_no_repo_context_and_psm_change_the_prompt(capsys, project, tiny_model_dir):
    code, out, _ = run_cli(capsys, f"{project}:7:12", "--model", str(tiny_model_dir), "--max-tokens", "2",
                           "--no-repo-context", "--fim-mode", "psm", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["snippets"] == [] and data["fim_mode"] == "psm"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{file}", "expected FILE:LINE:COL"),
        ("{file}:0:1", "positive integers"),
        ("{file}:x:1", "positive integers"),
        ("{file}:99:1", "line 99 does not exist"),
        ("{file}:7:40", "past its end"),
        ("{missing}:1:1", "no such file"),
    ],
)
def test_bad_positions_are_one_clear_line_and_exit_2(capsys, project, target, message):
    code, out, err = run_cli(capsys, target.format(file=project, missing=project.parent / "nope.py"))
    assert code == 2 and out == ""
    assert err.startswith("codellama-lsp: error: ") and message in err and "Traceback" not in err


def test_a_model_that_cannot_load_is_reported_not_raised(capsys, project, tmp_path):
    code, out, err = run_cli(capsys, f"{project}:7:12", "--model", str(tmp_path / "no-such-model"))
    assert code == 2 and out == ""
    assert err.startswith("codellama-lsp: error: ")


def test_the_console_entry_point_prints_only_the_completion_on_stdout(project, tiny_model_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # XDG_* already point into tmp_path
    proc = subprocess.run(
        [sys.executable, "-m", "codellama_lsp", "complete", f"{project}:7:12", "--model", str(tiny_model_dir),
         "--max-tokens", "3"],
        capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n") and "prompt" not in proc.stdout


def test_an_empty_answer_says_why_on_stderr(capsys, project, tiny_model_dir, tmp_path):
    # the usual cause on a CPU: a long first prompt cut by the completion budget; the fix is a setting
    config = tmp_path / "config.toml"
    config.write_text("completion_timeout_s = 0.000001\n")
    code, out, err = run_cli(capsys, f"{project}:7:12", "--model", str(tiny_model_dir), "--max-tokens", "4",
                             "--config", str(config), "--no-resident")
    assert code == 0 and out == "\n"
    assert "codellama-lsp: no suggestion: completion_timeout_s (1e-06 s) ran out while reading the" in err
    assert "raise completion_timeout_s" in err
    # an answer prints no such line
    code, out, err = run_cli(capsys, f"{project}:7:12", "--model", str(tiny_model_dir), "--max-tokens", "4",
                             "--no-resident")
    assert code == 0 and out.strip() and "no suggestion" not in err
