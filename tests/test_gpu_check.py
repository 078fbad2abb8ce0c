"""bench/gpu_check.py, the prepared device check, runs end to end on the CPU with a tiny model.

On a lent GPU the same script measures the 7B-shaped model (issue #21); here it must simply work and report
every section, so that the one GPU run it gets is not spent on a bug."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_on_cpu_with_a_tiny_model(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--size", "tiny",
                           "--dtypes", "bfloat16,float16", "--repeat", "1", "--prompts", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    report = json.loads(out.read_text())
    assert report["size"] == "tiny" and report["machine"]["device"] == "cpu"
    for ctx in ("64", "256", "512"):
        assert report["step_ms"][ctx]["plain_dynamic"] > 0 and report["step_ms"][ctx]["static_eager"] > 0
        assert {f"{kind}_w{w}" for kind in ("dynamic", "static") for w in (1, 4, 16)} == set(report["verify_ms"][ctx])
    tree = report["tree_vs_sequential"]
    for dtype in ("bfloat16", "float16"):
        math = tree[f"{dtype}/math"]  # the CPU has the math backend; the others report why they are missing
        assert math["rows"] == tree["tree_nodes"] + 1 and math["argmax_differs_rows"] == 0
        assert "unavailable" in tree[f"{dtype}/efficient"]
        for kind in ("dynamic", "static"):
            check = report["divergence"][f"{dtype}/{kind}"]
            assert check["within_epsilon"] == len(check["cases"]) == 1
    assert report["memory"]["estimate"]["params"] == 4_180_288
