"""Session fixtures shared by every test directory (helpers live in ``shared_data.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `complete` would otherwise leave a resident model process behind per test; tests/test_resident.py turns it on
os.environ["CODELLAMA_LSP_RESIDENT"] = "0"

from shared_data import TOKENIZER_DIR, build_tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-codellama") / "model")
