"""The CUDA path: the engine's defaults there, and token identity up to near-ties (engine/divergence.py).

Every test here is marked ``gpu`` and skipped with a reason without CUDA; on a CUDA machine they run with the
defaults users get there (bf16 or fp16 by compute capability, 4-bit when bitsandbytes is installed). The CPU
suite checks exact identity in float64 (tests/test_decode.py); here a fast path may differ from the plain
loop only where the plain loop's top-2 logit gap was below ε.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from codellama_lsp.engine import decode as D  # noqa: E402
from codellama_lsp.engine import divergence as V  # noqa: E402
from codellama_lsp.engine.backend import GenerationParams  # noqa: E402
from test_decode import chain_checkpoint, chain_of, load as load_pinned  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


def load(path, **overrides):
    """test_decode's loader (draft budget pinned at its maximum) on the GPU."""
    return load_pinned(path, device="cuda", **overrides)


@pytest.fixture(scope="module")
def chain_dir(tiny_model_dir, tmp_path_factory):
    path, perm = chain_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("chain-gpu") / "model")
    return path, perm


def test_default_dtype_follows_the_compute_capability():
    from codellama_lsp.engine.loading import choose_dtype

    major, _ = torch.cuda.get_device_capability(0)
    assert choose_dtype("auto", "cuda") == (torch.bfloat16 if major >= 8 else torch.float16)


@pytest.mark.parametrize("dtype", ["auto", "float16"])
def test_default_path_is_identical_up_to_near_ties(chain_dir, dtype):
    """Cache reuse, lookup drafts and tree verify in the GPU's default dtype against the plain loop."""
    path, perm = chain_dir
    b = load(path, dtype=dtype)
    try:
        rng = random.Random(11)
        divergences = []
        for case in range(6):
            seq = chain_of(perm, rng.randrange(3, 32000), 40)
            noise = [rng.randrange(3, 32000) for _ in range(30)]
            ids = [1] + noise[:15] + seq + noise[15:] + seq[: rng.randrange(2, 10)]
            result = b.generate(ids, GenerationParams(max_new_tokens=16))
            expected, gaps = V.plain_greedy(b.model, ids, 16)
            divergences.append(V.assert_identical_up_to_near_ties(expected, gaps, result.token_ids,
                                                                 b.info.dtype))
        assert sum(d.identical for d in divergences) >= 3, [d.describe() for d in divergences]
    finally:
        b.close()


def test_float64_on_cuda_is_exact(chain_dir):
    """float64 picks no quantization on CUDA, and there the engine is exactly the plain loop."""
    path, perm = chain_dir
    b = load(path, dtype="float64")
    try:
        assert b.info.quantization == "none" and b.info.device.startswith("cuda")
        ids = [1] + list(range(40, 60)) + [perm[i] for i in range(700, 730)] + list(range(60, 70)) + [perm[700]]
        result = b.generate(ids, GenerationParams(max_new_tokens=12))
        assert result.token_ids == V.plain_greedy(b.model, ids, 12)[0]
    finally:
        b.close()


def test_draft_budget_timings_wait_for_the_gpu(chain_dir, monkeypatch):
    path, _ = chain_dir
    b = load(path)
    calls = []
    real = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: (calls.append(a), real(*a)))
    try:
        result = b.generate([1] + list(range(100, 140)), GenerationParams(max_new_tokens=8))
        assert len(calls) >= result.stats.forward_passes - 1  # every timed pass waited for the device
    finally:
        b.close()


def test_memory_estimate_covers_what_a_generation_uses(chain_dir):
    from codellama_lsp.engine import memory

    path, _ = chain_dir
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    b = load(path)
    try:
        ids = [1] + [random.Random(1).randrange(3, 32000) for _ in range(1500)]
        b.generate(ids, GenerationParams(max_new_tokens=8))
        peak = torch.cuda.max_memory_allocated() - before
        est = memory.estimate(path, quantization=b.info.quantization, dtype=b.info.dtype, context_tokens=len(ids) + 8,
                              device="cuda")
        assert peak <= est.total_bytes - memory.CUDA_CONTEXT_BYTES, (peak, est.as_dict())
    finally:
        b.close()


@pytest.mark.parametrize("quantization", ["none", "auto"])
def test_static_cache_step_is_identical_up_to_near_ties(chain_dir, quantization):
    """kv_cache = "static" on CUDA: the one-token step replayed as a CUDA graph (or, if a quantized kernel
    cannot be captured, eagerly after one warning), drafts and trees on the in-place buffers."""
    from codellama_lsp.engine.static_cache import StaticStep

    path, perm = chain_dir
    b = load(path, kv_cache="static", quantization=quantization)
    try:
        assert isinstance(b.kv, StaticStep)
        rng = random.Random(3)
        for case in range(4):
            seq = chain_of(perm, rng.randrange(3, 32000), 30)
            ids = [1] + [rng.randrange(3, 32000) for _ in range(20)] + seq + list(range(60, 70)) + seq[:4]
            for speculation in ("prompt_lookup", "none"):
                result = b.generate(ids, GenerationParams(max_new_tokens=16, speculation=speculation))
                expected, gaps = V.plain_greedy(b.model, ids, 16)
                V.assert_identical_up_to_near_ties(expected, gaps, result.token_ids, b.info.dtype)
        if quantization == "none":
            assert b.kv.step is not None  # the graph was captured and kept
    finally:
        b.close()


def test_graph_replay_equals_the_eager_step(chain_dir):
    from codellama_lsp.engine.static_cache import StaticStep

    path, _ = chain_dir
    b = load(path, quantization="none")
    try:
        ids = [1] + list(range(100, 400))
        graphed, eager = StaticStep(b.model, capacity=1024, graphs=True), StaticStep(b.model, capacity=1024, graphs=False)
        for step in (graphed, eager):
            step.reset()
            D.prefill(step, ids)
        for token in (13, 29871, 500):
            a, e = graphed.decode_one(token), eager.decode_one(token)
            assert torch.allclose(a, e, atol=V.epsilon(b.info.dtype), rtol=0), float((a - e).abs().max())
        assert graphed.step is not None and graphed.step.graph is not None
    finally:
        b.close()
