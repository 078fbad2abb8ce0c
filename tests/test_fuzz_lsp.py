"""A seeded slice of ``bench/fuzz_lsp.py`` (the full run is >= 10,000 cases, results in bench/results/).

Hostile JSON-RPC through the real stdio transport: the server must stay up and responsive, answer every
request that carried an id exactly once, and write no traceback to its stderr or log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import fuzz_lsp  # noqa: E402

pytestmark = pytest.mark.slow


def test_seeded_fuzz_slice(tiny_model_dir, tmp_path):
    record = fuzz_lsp.run(str(tiny_model_dir), cases=300, seed=20240601, home=tmp_path / "home", batch=100)
    assert record["model_state"] == "ready"
    assert record["failures"] == []
    assert record["requests"] > 50, "the slice must send a fair number of requests"
    assert record["requests_unanswered"] == 0
    assert record["answered_more_than_once"] == 0
    assert record["crashes"] == 0 and record["alive_at_end"]
    assert record["tracebacks"] == 0, record["traceback_samples"]
    assert record["exit_code_after_shutdown"] == 0
