"""The preallocated in-place KV cache (engine/static_cache.py) against the plain loop, in float64 on the CPU.

The same checks as tests/test_decode.py's identity tests: a user typing, deleting and jumping (cache reuse
and crop), prompt-lookup drafts accepted and rejected, draft trees whose side-branch rows are gathered into
place, token healing. Plus what is particular to it: buffers allocated once and reused across crops and
resets, grown with their contents, and the fixed-shape one-token step (the body a CUDA graph captures) equal
to the step over the live rows.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from codellama_lsp.engine import decode as D  # noqa: E402
from codellama_lsp.engine import static_cache as S  # noqa: E402
from codellama_lsp.engine.backend import GenerationParams  # noqa: E402
from test_decode import (  # noqa: E402
    SOURCE, chain_checkpoint, chain_of, identical_editing_session, load, naive, partial_word_cases)


@pytest.fixture(scope="module")
def static64(tiny_model_dir):
    b = load(tiny_model_dir, dtype="float64", kv_cache="static")
    yield b
    b.close()


@pytest.fixture(scope="module")
def chain_static(tiny_model_dir, tmp_path_factory):
    path, perm = chain_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("chain-static") / "model")
    b = load(path, dtype="float64", kv_cache="static")
    yield b, perm
    b.close()


def test_static_state_is_chosen_for_llama_only(static64, monkeypatch):
    assert isinstance(static64.kv, S.StaticStep) and S.supports(static64.model)
    monkeypatch.setattr(static64.model.config, "model_type", "gpt2")
    assert not S.supports(static64.model)
    from codellama_lsp.engine.local import new_state

    from codellama_lsp.engine.step_transformers import TransformersStep

    assert type(new_state(static64.model, "static")) is TransformersStep  # another layout: the dynamic cache


@pytest.mark.parametrize("mode", ["spm", "psm"])
def test_editing_session_is_token_identical_to_the_plain_loop(static64, mode):
    results = identical_editing_session(static64, mode)
    assert sum(result.stats.reused_tokens for _, result in results) > 0


def test_buffers_are_allocated_once_and_grow_with_their_contents(static64):
    b = static64
    b.reset_cache()
    ids = [1] + b.encode(SOURCE[:600])
    b.generate(ids, GenerationParams(max_new_tokens=4, speculation="none"))
    cache = b.kv.cache
    pointer, size = cache.keys[0].data_ptr(), b.kv.nbytes()
    assert size == 2 * 2 * 4 * cache.capacity * 16 * 8  # k+v, 2 layers, 4 heads, 16 dims, float64
    short = ids[: len(ids) // 2]
    again = b.generate(short, GenerationParams(max_new_tokens=4, speculation="none"))  # a crop
    assert again.stats.reused_tokens == len(short) - 1
    assert cache.keys[0].data_ptr() == pointer and b.kv.cache is cache
    assert again.token_ids == naive(b.model, short, 4)
    before = cache.keys[1][:, :, : len(short)].clone()
    capacity = cache.capacity
    assert cache.ensure(capacity + 1) and cache.capacity == capacity + S.CAPACITY_STEP
    assert torch.equal(cache.keys[1][:, :, : len(short)], before)
    longer = short + [13] * 5
    assert b.generate(longer, GenerationParams(max_new_tokens=4)).token_ids == naive(b.model, longer, 4)


def test_drafts_and_trees_gather_rows_in_place(chain_static, monkeypatch):
    b, perm = chain_static
    gathered = []
    real = S.StaticCache.move_rows
    monkeypatch.setattr(S.StaticCache, "move_rows", lambda self, src, at: (gathered.append(at), real(self, src, at)))
    rng = random.Random(8)
    accepted = 0
    for case in range(6):
        seq = chain_of(perm, rng.randrange(3, 32000), 20)
        decoy = seq[3:6] + [rng.randrange(3, 32000) for _ in range(4)]
        ids = [1] + list(range(40, 50)) + seq + list(range(50, 60)) + decoy + list(range(60, 66)) + seq[:6]
        if case % 2:
            b.reset_cache()
        result = b.generate(ids, GenerationParams(max_new_tokens=8))
        assert result.token_ids == naive(b.model, ids, 8), case
        assert b.kv.ids == (ids + result.token_ids)[: len(b.kv.ids)]
        accepted += result.stats.accepted_draft_tokens
    assert gathered and accepted > 0


def test_token_healing_on_the_static_cache(chain_static):
    from test_decode import naive_healed

    b, perm = chain_static
    texts = b.vocab_texts()
    checked = 0
    for seq, cut, heal in partial_word_cases(texts, perm, random.Random(5)):
        ids = [1] + list(range(40, 55)) + seq + list(range(60, 70)) + seq[:cut]
        result = b.generate(ids, GenerationParams(max_new_tokens=10, heal_prefix=heal))
        assert result.token_ids == naive_healed(b.model, ids, 10, heal, texts)
        checked += 1
    assert checked >= 3


def test_the_fixed_shape_step_equals_the_live_rows_step(static64):
    """What a CUDA graph captures (one token, the whole buffer under a mask computed from the position) gives
    the logits of the step over the live rows: stale rows past the length are never attended."""
    b = static64
    b.reset_cache()
    ids = [1] + b.encode(SOURCE[2000:2400])
    D.prefill(b.kv, ids[:-1])
    cache = b.kv.cache
    step = S.GraphedStep(cache)
    with torch.inference_mode():
        for k in cache.keys:  # poison the rows past the length: a leak would show
            k[:, :, len(ids) :] = 1e3
        step.token.fill_(ids[-1])
        step.position.fill_(len(ids) - 1)
        fixed = step._body()[-1]
    live = b.kv.forward([ids[-1]])[-1]
    assert torch.allclose(fixed.float(), live, rtol=0, atol=1e-6)
