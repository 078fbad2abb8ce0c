"""Model resolution (offline, local cache only, demo fallback) and loading in fp32 / 4-bit / 8-bit on CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from codellama_lsp.config import DEFAULT_MODEL, Settings
from codellama_lsp.engine import loading, resolve
from codellama_lsp.engine.backend import GenerationParams, ModelLoadError
from codellama_lsp.engine.loading import resolve_model


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def fake_cached_model(cache: Path, repo_id: str, files: dict[str, str]) -> Path:
    """The layout huggingface_hub writes: refs/main -> commit, snapshots/<commit>/<file>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    return snapshot


def test_package_import_puts_the_hub_offline():
    import codellama_lsp  # noqa: F401

    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_directory_resolves_to_itself(tmp_path):
    resolved = resolve_model(str(tmp_path), explicit=True)
    assert resolved.path == tmp_path.resolve() and not resolved.is_demo and not resolved.notice


def test_hub_id_resolves_from_the_local_cache_only(hub_cache):
    snapshot = fake_cached_model(hub_cache, "someone/Tiny-Code", {"config.json": "{}"})
    resolved = resolve_model("someone/Tiny-Code", explicit=True)
    assert resolved.path == snapshot and resolved.name == "someone/Tiny-Code"


def test_explicit_model_missing_from_cache_says_how_to_pull(hub_cache):
    with pytest.raises(ModelLoadError) as err:
        resolve_model("someone/Absent-7b", explicit=True)
    message = str(err.value)
    assert "not in the local Hugging Face cache" in message
    assert "codellama-lsp pull someone/Absent-7b" in message
    assert "\n" not in message


def test_default_model_absent_falls_back_to_demo_with_notice(hub_cache, monkeypatch, tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "config.json").write_text("{}")
    monkeypatch.setattr(resolve, "DEMO_DIR", demo)
    resolved = resolve_model(DEFAULT_MODEL, explicit=False)
    assert resolved.is_demo and resolved.path == demo
    assert "using the bundled demo model" in resolved.notice
    assert f"codellama-lsp pull {DEFAULT_MODEL}" in resolved.notice
    # named by the user: never silently replaced
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        resolve_model(DEFAULT_MODEL, explicit=True)
    assert resolve_model("demo", explicit=True).is_demo


def test_default_model_absent_and_no_demo_is_an_error(hub_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(resolve, "DEMO_DIR", tmp_path / "missing-demo")
    with pytest.raises(ModelLoadError, match=f"codellama-lsp pull {DEFAULT_MODEL}"):
        resolve_model(DEFAULT_MODEL, explicit=False)


def test_paths_that_do_not_exist_or_are_files(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), explicit=True)
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model("./models/x", explicit=True)
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_model(str(file), explicit=True)


def test_cpu_defaults():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CPU defaults only")
    assert loading.choose_device("auto") == "cpu"
    assert loading.choose_dtype("auto", "cpu") == torch.float32  # explicit: transformers 5 keeps the file's dtype
    assert loading.choose_quantization("auto", "cpu") == "none"
    assert loading.choose_quantization("auto", "cuda") == "4bit"
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        loading.choose_device("cuda")


def test_fp32_load_is_explicit_about_dtype_and_generates(tiny_model_dir):
    backend = loading.load_backend(Settings(model=str(tiny_model_dir), model_explicit=True, device="cpu"))
    try:
        assert backend.info.dtype == "float32" and backend.info.quantization == "none"
        assert backend.info.family == "codellama" and backend.info.fim
        assert backend.model.config._attn_implementation == "sdpa"
        result = backend.generate([1] + backend.encode("def f():"), GenerationParams(max_new_tokens=4))
        assert result.stats.generated_tokens == 4
    finally:
        backend.close()


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_bitsandbytes_quantized_load_generates_on_cpu(tiny_model_dir, quantization):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    progress: list[tuple[int, str]] = []
    backend = loading.load_backend(
        Settings(model=str(tiny_model_dir), model_explicit=True, quantization=quantization, device="cpu"),
        progress=lambda pct, msg: progress.append((pct, msg)),
    )
    try:
        assert backend.info.quantization == quantization
        layer = backend.model.model.layers[0].self_attn.q_proj
        assert isinstance(layer, bnb.nn.Linear4bit if quantization == "4bit" else bnb.nn.Linear8bitLt)
        if quantization == "4bit":
            assert layer.weight.quant_state.quant_type == "nf4"
            assert backend.model.config.quantization_config.bnb_4bit_use_double_quant
        ids = backend.template.fim_ids("def add(a, b):\n    return ", "\n", mode="spm")
        first = backend.generate(ids, GenerationParams(max_new_tokens=5, stop_token_ids=backend.template.fim_stop_ids))
        again = backend.generate(ids, GenerationParams(max_new_tokens=5, stop_token_ids=backend.template.fim_stop_ids))
        assert first.stats.generated_tokens > 0 and again.token_ids == first.token_ids
        assert again.stats.reused_tokens == len(ids) - 1
        percents = [p for p, _ in progress]
        assert percents == sorted(percents) and percents[-1] == 100
    finally:
        backend.close()


def test_memory_estimate_matches_code_llama_7b():
    from codellama_lsp.engine import memory

    config = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "vocab_size": 32016, "model_type": "llama"}
    gib = memory.GIB
    assert memory.model_shape(config).params == 6_738_546_688
    fp16 = memory.estimate(config, quantization="none", dtype="float16", context_tokens=16384)
    nf4 = memory.estimate(config, quantization="4bit", dtype="float16", context_tokens=16384)
    int8 = memory.estimate(config, quantization="8bit", dtype="float16", context_tokens=16384)
    assert round(fp16.weights_bytes / gib, 1) == 12.6 and round(fp16.kv_bytes / gib, 1) == 8.0
    assert round(nf4.weights_bytes / gib, 1) == 3.6 and round(int8.weights_bytes / gib, 1) == 6.5
    quant_kv = memory.estimate(config, quantization="4bit", dtype="float16", context_tokens=16384, kv_cache="quantized")
    assert quant_kv.kv_bytes == fp16.kv_bytes / 2
    gqa = dict(config, hidden_size=8192, num_attention_heads=64, num_key_value_heads=8, num_hidden_layers=48)
    assert round(memory.estimate(gqa, quantization="none", dtype="float16", context_tokens=16384).kv_bytes / gib, 1) == 3.0


def test_remote_backend_streams_from_an_openai_compatible_server(tiny_model_dir):
    """Off by default; when configured, ids go to /v1/completions and the SSE stream comes back as text."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ("    return", " a + b", "\n"):
                self.wfile.write(f"data: {json.dumps({'choices': [{'text': piece}]})}\n\n".encode())
            done = {"choices": [{"text": "", "finish_reason": "stop"}], "usage": {"completion_tokens": 5}}
            self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        settings = Settings(model=str(tiny_model_dir), model_explicit=True, backend="openai", endpoint=endpoint)
        backend = loading.load_backend(settings)
        ids = backend.template.fim_ids("def add(a, b):\n", "\n", mode="spm")
        pieces: list[str] = []
        result = backend.generate(ids, GenerationParams(max_new_tokens=16, stop_strings=["\n\n"]), on_text=pieces.append)
        assert result.text == "    return a + b\n" == "".join(pieces)
        assert result.stats.generated_tokens == 5 and result.stats.stop_reason == "eot"
        assert received[0]["prompt"] == ids and received[0]["max_tokens"] == 16 and received[0]["stop"] == ["\n\n"]
        assert backend.info.quantization == "remote (degraded)" and backend.server.dialect == "openai"
        assert "not detokenized locally" in backend.notice  # ids in, text out: labelled degraded
    finally:
        server.shutdown()
    with pytest.raises(ModelLoadError, match="endpoint"):
        loading.load_backend(Settings(model=str(tiny_model_dir), model_explicit=True, backend="openai"))


def test_bf16_only_where_the_gpu_computes_it(monkeypatch):
    """T4/V100 (compute capability < 8.0) get fp16 even though is_bf16_supported() says yes (emulation);
    Ampere and later get bf16; 8-bit weights compute in fp16 (LLM.int8 casts anything else every call)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for capability, expected in (((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16),
                                 ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=capability: c)
        assert loading.choose_dtype("auto", "cuda") == expected, capability
        assert loading.choose_dtype("auto", "cuda:0", "8bit") == torch.float16
    assert loading.choose_dtype("bfloat16", "cuda") == torch.bfloat16  # an explicit choice stands


def test_float64_never_meets_bitsandbytes(monkeypatch, tiny_model_dir):
    """auto quantization picks none for float64 (and where bitsandbytes is absent); an explicit 4bit/8bit with
    float64 is a one-line error before anything loads, not a failure at the first forward pass."""
    monkeypatch.setattr(loading, "bitsandbytes_installed", lambda: True)
    assert loading.choose_quantization("auto", "cuda", "float64") == "none"
    assert loading.choose_quantization("auto", "cuda", "auto") == "4bit"
    monkeypatch.setattr(loading, "bitsandbytes_installed", lambda: False)
    assert loading.choose_quantization("auto", "cuda", "auto") == "none"
    for quantization in ("4bit", "8bit"):
        with pytest.raises(ModelLoadError, match="float64") as err:
            loading.load_backend(Settings(model=str(tiny_model_dir), model_explicit=True, device="cpu",
                                          dtype="float64", quantization=quantization))
        assert "\n" not in str(err.value) and "--quantization none" in str(err.value)


def test_int8_cast_warning_is_logged_once(tiny_model_dir, caplog):
    """8-bit weights with a bf16 compute dtype: bitsandbytes warns on every linear call; one line reaches the log."""
    import logging

    pytest.importorskip("bitsandbytes")
    loading.quiet_int8_cast_warning()
    loading.quiet_int8_cast_warning()  # idempotent: one filter
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    once = [f for f in logger.filters if isinstance(f, loading._OnceFilter)]
    assert len(once) == 1
    once[0].seen.clear()  # an 8-bit load earlier in this process may have let its one line through already
    with caplog.at_level(logging.WARNING, logger="bitsandbytes"):
        for _ in range(224):  # what one token of a 7B model would log
            logger.warning("MatMul8bitLt: inputs will be cast from %s to float16 during quantization", "torch.bfloat16")
    assert sum("will be cast" in r.getMessage() for r in caplog.records) == 1


def test_memory_estimate_counts_the_runtime_and_doctor_wants_a_margin():
    from codellama_lsp.engine import memory

    config = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "vocab_size": 32016, "model_type": "llama"}
    gib = memory.GIB
    cpu = memory.estimate(config, quantization="4bit", dtype="bfloat16", context_tokens=4096)
    cuda = memory.estimate(config, quantization="4bit", dtype="bfloat16", context_tokens=4096, device="cuda")
    assert cuda.runtime_bytes - cpu.runtime_bytes == memory.CUDA_CONTEXT_BYTES
    # one 512-token prefill chunk at 4k: ~0.25 GiB of attention scores, MLP activations, a dequantized weight
    assert 0.2 * gib < cpu.runtime_bytes < 0.6 * gib
    long = memory.estimate(config, quantization="4bit", dtype="bfloat16", context_tokens=16384, device="cuda")
    assert long.runtime_bytes > cuda.runtime_bytes  # the scores grow with the context
    assert cuda.total_bytes == cuda.weights_bytes + cuda.kv_bytes + cuda.runtime_bytes
    assert cuda.as_dict()["runtime_gib"] > 0.75
    assert cuda.fits(cuda.total_bytes * 1.2) and not cuda.fits(cuda.total_bytes * 1.05)
