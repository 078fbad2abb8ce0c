"""A short slice of ``bench/typing_storm.py`` (the full run is 5 minutes, results in bench/results/).

30 edits per second, each followed by an inline completion request that supersedes the previous one: no
suggestion for a version the server knew was outdated, every request answered or cancelled, none twice, no
memory growth worth the name, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import typing_storm  # noqa: E402

pytestmark = pytest.mark.slow


def test_typing_storm_slice(tiny_model_dir, tmp_path):
    record = typing_storm.run(str(tiny_model_dir), seconds=30, home=tmp_path / "home")
    assert record["model_state"] == "ready"
    # The client writes as fast as the server reads (a full pipe blocks it); on a loaded machine that is below
    # 30/s, which is recorded, not asserted. The promises below hold at any rate.
    assert record["edits"] >= 5 * 30
    assert record["unanswered"] == 0
    assert record["answered_twice"] == 0
    assert record["stale_after_edit_seen"] == 0, record["stale_examples"]
    assert record["errors"] == 0
    assert record["alive_at_end"]
    assert record["tracebacks"] == 0, record["traceback_samples"]
    # A 30-second slice includes allocator warm-up; the 5-minute bench holds the < 10% promise.
    assert record["rss_growth_percent"] < 25
