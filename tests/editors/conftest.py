"""Shared fixtures for the real-editor tests: the model every editor's server loads, the server command,
and a clean environment (temporary HOME and XDG dirs, so no user config, log or editor state leaks in or
out). The server is always the real one (``python -m codellama_lsp.cli serve``) with a real checkpoint:
the bundled demo model when it is there, else the tiny random-weight Code Llama checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from editor_helpers import REPO
DEMO_MODEL = REPO / "codellama_lsp" / "models" / "demo"


@pytest.fixture(scope="session")
def editor_model(request) -> Path:
    """The checkpoint the editors' server loads (a directory with config.json and a tokenizer)."""
    if (DEMO_MODEL / "config.json").is_file():
        return DEMO_MODEL
    return request.getfixturevalue("tiny_model_dir")


@pytest.fixture(scope="session")
def server_command(editor_model) -> list[str]:
    return [sys.executable, "-m", "codellama_lsp.cli", "serve", "--model", str(editor_model)]
