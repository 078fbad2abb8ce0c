"""Session fixtures shared by every test directory (helpers live in ``shared_data.py``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# `complete` would otherwise leave a resident model process behind per test; tests/test_resident.py turns it on
os.environ["CODELLAMA_LSP_RESIDENT"] = "0"

from shared_data import TOKENIZER_DIR, build_tiny_llama, isolate_user_directories

_HOME = pytest.StashKey[Path]()


def pytest_configure(config) -> None:
    """Before collection: the session's own XDG cache/config/state directories (see ``isolate_user_directories``),
    removed at the end."""
    home = Path(tempfile.mkdtemp(prefix="codellama-lsp-tests-"))
    config.stash[_HOME] = home
    isolate_user_directories(home)


def pytest_unconfigure(config) -> None:
    home = config.stash.get(_HOME, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-codellama") / "model")
