"""`codellama-lsp doctor`: what it reports about the machine and a model, loaded in 4-bit and 8-bit."""

from __future__ import annotations

import json

import pytest

from codellama_lsp.cli import main


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("CODELLAMA_LSP_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


def doctor_json(capsys, *argv) -> tuple[int, dict]:
    code = main(["doctor", "--json", "--config", "/nonexistent/config.toml", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_doctor_loads_the_model_quantized(capsys, tiny_model_dir, quantization):
    pytest.importorskip("bitsandbytes")
    code, report = doctor_json(capsys, "--model", str(tiny_model_dir), "--quantization", quantization,
                               "--context-tokens", "2048", "--device", "cpu")
    assert code == 0
    model = report["model"]
    assert model["found"] and model["loaded"] and model["path"] == str(tiny_model_dir.resolve())
    assert model["quantization"] == quantization and model["device"] == "cpu"
    assert model["template_family"] == "codellama" and model["fim"] is True
    est = report["memory_estimate"]
    # tiny model: 2 layers x 4 kv heads x 16 dims x 2 (k, v) x 4 bytes (fp32) = 1 KiB per token
    assert est["context_tokens"] == 2048 and est["kv_cache_gib"] == round(2048 * 1024 / 2**30, 3)
    assert est["params"] == 4_180_288
    assert est["margin"] == 0.1 and est["runtime_gib"] > 0 and est["fits"]
    assert report["machine"]["ram_total_gib"] > 0 and "transformers" in report["versions"]
    assert "python" in report["grammars"]


def test_doctor_text_report_and_missing_model(capsys, tiny_model_dir, tmp_path):
    code = main(["doctor", "--config", "/nonexistent/config.toml", "--model", str(tiny_model_dir), "--no-load"])
    out = capsys.readouterr().out
    assert code == 0
    for label in ("device", "RAM", "versions", "model", "quantization", "tokenizer", "memory", "grammars"):
        assert any(line.startswith(label) for line in out.splitlines()), label
    assert "codellama family, infills (FIM)" in out
    code = main(["doctor", "--config", "/nonexistent/config.toml", "--model", "someone/Absent", "--no-load"])
    captured = capsys.readouterr()
    assert code == 2
    assert "someone/Absent: NOT FOUND" in captured.out
    assert captured.err.strip().startswith("codellama-lsp: error: model 'someone/Absent' is not in the local")
