"""The decode loop against a naive reference: KV reuse and speculation must not change a single token.

The reference (``naive``) is the plainest greedy loop there is: a fresh cache, the whole prompt prefilled,
one token per forward pass. The engine path keeps its cache across calls (longest common prefix, crop,
prefill the rest) and speculates. Identity tests run the tiny model in float64 so that floating-point
rounding differences between chunkings (which can flip a near-tie argmax in fp32 on some CPUs) cannot make
an exactness test flaky; the loop itself is dtype-agnostic and other tests run it in fp32. They pin
``device="cpu"`` so that they mean the same on a CUDA machine (where the defaults become 4-bit bf16); the
CUDA claim, identical up to near-ties, is checked by the GPU-marked tests with ``engine/divergence.py``.

A random-weight model never repeats itself, so prompt lookup would never get a draft accepted. The
"chain" model below keeps the random transformer blocks (context still matters) but ties its output
head to a fixed successor permutation of the embeddings, so it mostly continues token chains it has seen
in the prompt: drafts are accepted, partly rejected, and cropped, as with real code.
"""

from __future__ import annotations

import inspect
import random
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from codellama_lsp.config import Settings  # noqa: E402
from codellama_lsp.engine import decode as D  # noqa: E402
from codellama_lsp.engine.backend import CancelToken, GenerationParams  # noqa: E402

SOURCE = inspect.getsource(textwrap)  # a real source file that does not change with this repository


def load(path: Path, **overrides):
    from codellama_lsp.engine.draft_tree import TreeBudget
    from codellama_lsp.engine.loading import load_backend

    overrides.setdefault("device", "cpu")  # exactness and fixed dtypes: the CPU, also on a CUDA machine
    backend = load_backend(Settings(model=str(path), model_explicit=True, **overrides))
    # These tests count forward passes; the draft budget adapts to measured timings, which a loaded machine
    # makes noisy: pin it at its maximum (its own test checks the adapting).
    backend.kv.budget = TreeBudget(most=D.TREE_NODES, window=10**9)
    return backend


def naive(model, prompt: list[int], max_new: int, stop_ids=()) -> list[int]:
    """Reference greedy decoding: fresh cache, full prefill, one token per forward."""
    from transformers.cache_utils import DynamicCache

    device = D.model_device(model)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=torch.tensor([prompt], device=device), past_key_values=cache, use_cache=True).logits[0, -1]
        out: list[int] = []
        while True:
            token = int(logits.argmax())
            out.append(token)
            if token in stop_ids or len(out) >= max_new:
                return out
            logits = model(input_ids=torch.tensor([[token]], device=device), past_key_values=cache,
                           use_cache=True).logits[0, -1]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = load(tiny_model_dir)
    yield b
    b.close()


@pytest.fixture(scope="module")
def backend64(tiny_model_dir):
    b = load(tiny_model_dir, dtype="float64")
    yield b
    b.close()


def chain_checkpoint(src: Path, dest: Path, seed: int = 1) -> tuple[Path, list[int]]:
    """The tiny checkpoint with its head re-tied so that token x is mostly followed by perm[x]."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    perm = torch.randperm(model.config.vocab_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        embed = model.model.embed_tokens.weight.clone()
        model.lm_head.weight.copy_(embed[torch.argsort(perm)] * 50)
        for layer in model.model.layers:  # stronger blocks: the context overrides the chain now and then
            layer.self_attn.o_proj.weight.mul_(2.0)
            layer.mlp.down_proj.weight.mul_(2.0)
    model.save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (dest / name).write_bytes((src / name).read_bytes())
    return dest, perm.tolist()


def chain_of(perm: list[int], first: int, length: int) -> list[int]:
    """``first`` and the ``length`` tokens the chain model's permutation puts after it."""
    seq = [first]
    for _ in range(length):
        seq.append(perm[seq[-1]])
    return seq


def partial_word_cases(texts: list[str], perm: list[int], rng: random.Random, count: int = 12):
    """Chains with the cursor inside a token: (seq, cut, heal), ``heal`` being all but the last character of
    ``seq[cut]``'s text (the user typed it); of ``count`` tries, tokens shorter than 2 characters are skipped."""
    for _ in range(count):
        seq = chain_of(perm, rng.randrange(3, 32000), 30)
        cut = rng.randrange(3, 8)
        word = texts[seq[cut]]
        if len(word.strip()) < 2:
            continue
        yield seq, cut, word[: max(1, len(word) - 1)]


@pytest.fixture(scope="module")
def chain(tiny_model_dir, tmp_path_factory):
    path, perm = chain_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("chain") / "model")
    b = load(path, dtype="float64")
    yield b, perm
    b.close()


def editing_session(rng: random.Random, doc: str) -> list[tuple[str, str]]:
    """(prefix, suffix) states of a user typing, deleting and jumping around ``doc``."""
    states = []
    cursor = rng.randrange(len(doc) // 3, 2 * len(doc) // 3)
    for _ in range(4):  # type
        doc = doc[:cursor] + rng.choice("abc_(=. ") + doc[cursor:]
        cursor += 1
        states.append((doc[:cursor], doc[cursor:]))
    for _ in range(2):  # backspace
        doc = doc[: cursor - 1] + doc[cursor:]
        cursor -= 1
        states.append((doc[:cursor], doc[cursor:]))
    cursor = rng.randrange(len(doc) // 4, 3 * len(doc) // 4)  # jump
    states.append((doc[:cursor], doc[cursor:]))
    for ch in "x1":
        doc = doc[:cursor] + ch + doc[cursor:]
        cursor += 1
        states.append((doc[:cursor], doc[cursor:]))
    return states


def identical_editing_session(b, mode: str) -> list:
    """A user typing, deleting and jumping in a real file (``editing_session``), a FIM completion at every
    state from a fresh cache on; each checked token-identical to the naive loop. Returns (ids, result) pairs."""
    b.reset_cache()
    rng = random.Random(7 if mode == "spm" else 8)
    start = rng.randrange(0, len(SOURCE) - 1000)
    doc = SOURCE[start : start + 800]
    out = []
    for prefix, suffix in editing_session(rng, doc):
        ids = b.template.fim_ids(prefix, suffix, mode=mode)
        params = GenerationParams(max_new_tokens=6, stop_token_ids=b.template.fim_stop_ids)
        result = b.generate(ids, params)
        assert result.token_ids == naive(b.model, ids, 6, set(b.template.fim_stop_ids)), (mode, prefix[-20:])
        out.append((ids, result))
    return out


@pytest.mark.parametrize("mode", ["spm", "psm"])
def test_cache_reuse_and_lookup_are_token_identical_to_naive(backend64, mode):
    prefills, reused = [], []
    for ids, result in identical_editing_session(backend64, mode):
        assert result.stats.prefill_tokens + result.stats.reused_tokens == len(ids)
        assert 0 < result.stats.prefill_tokens
        prefills.append(result.stats.prefill_tokens)
        reused.append(result.stats.reused_tokens)
    assert sum(reused) > 0
    typing = prefills[1:6]  # type and backspace at one cursor: only the changed end of the prompt
    if mode == "spm":
        assert max(typing) <= 4, prefills  # suffix first: a keystroke costs a token or two
    else:
        assert min(typing) > 20, prefills  # PSM re-prefills the whole suffix after the cursor


def test_never_reuses_the_whole_prompt(backend64):
    b = backend64
    ids = [b.tokenizer.bos_id] + b.encode(SOURCE[:400])
    first = b.generate(ids, GenerationParams(max_new_tokens=5, speculation="none"))
    again = b.generate(ids, GenerationParams(max_new_tokens=5, speculation="none"))
    assert again.stats.reused_tokens == len(ids) - 1 and again.stats.prefill_tokens == 1
    assert again.token_ids == first.token_ids == naive(b.model, ids, 5)
    # a prompt that is a strict prefix of what the cache holds (the cache also covers generated tokens)
    shorter = ids[: len(ids) // 2]
    result = b.generate(shorter, GenerationParams(max_new_tokens=5))
    assert result.stats.reused_tokens == len(shorter) - 1
    assert result.token_ids == naive(b.model, shorter, 5)


def test_speculative_verify_accepts_and_rejects_exactly(backend64):
    """Verify with drafts that are right for a while, then wrong: every accept/crop path, same tokens."""
    b = backend64
    rng = random.Random(3)
    accepted = proposed = forwards = generated = 0
    for case in range(4):
        start = rng.randrange(0, len(SOURCE) - 800)
        ids = [b.tokenizer.bos_id] + b.encode(SOURCE[start : start + 400])
        expected = naive(b.model, ids, 14)

        def oracle(seq, room, ids=ids, expected=expected):
            done = len(seq) - len(ids)
            draft = list(expected[done : done + min(room, rng.randint(1, 6))])
            if draft and rng.random() < 0.5:
                draft[rng.randrange(len(draft))] = rng.randrange(3, 32000)  # a wrong guess somewhere
            return draft

        result = D.generate(b.kv, ids, GenerationParams(max_new_tokens=14), detokenizer=_detok(b), eos_id=2,
                            proposer=oracle)
        assert result.token_ids == expected, case
        assert b.kv.ids == (ids + expected)[: len(b.kv.ids)]  # the cache holds exactly the accepted tokens
        accepted += result.stats.accepted_draft_tokens
        proposed += result.stats.draft_tokens
        forwards += result.stats.forward_passes
        generated += result.stats.generated_tokens
    assert 0 < accepted < proposed  # some drafts accepted, some rejected and cropped
    assert generated / forwards > 1.5


def test_prompt_lookup_speeds_up_repetitive_text_and_stays_identical(chain):
    b, perm = chain
    rng = random.Random(11)
    generated = forwards = accepted = rejected = 0
    for case in range(6):
        seq = chain_of(perm, rng.randrange(3, 32000), 40)
        noise = [rng.randrange(3, 32000) for _ in range(30)]
        cut = rng.randrange(2, 10)
        ids = [1] + noise[:15] + seq + noise[15:] + seq[:cut]  # the chain seen before, now being typed again
        if case % 2:
            ids = ids[:-1]  # a deletion: the cache holds a longer prompt than this one
        result = b.generate(ids, GenerationParams(max_new_tokens=16))
        assert result.token_ids == naive(b.model, ids, 16), case
        generated += result.stats.generated_tokens
        forwards += result.stats.forward_passes
        accepted += result.stats.accepted_draft_tokens
        rejected += result.stats.draft_tokens - result.stats.accepted_draft_tokens
    assert generated / forwards > 1.5, (generated, forwards)
    assert accepted > 0 and rejected > 0


def test_the_prefill_pass_verifies_a_draft_too(chain):
    """When the prompt itself ends in text seen before, the first forward pass (the prefill) checks the
    lookup draft: a short answer that copies it comes out of one forward pass, token-identical to naive."""
    b, perm = chain
    seq = chain_of(perm, 777, 30)
    ids = [1] + list(range(40, 60)) + seq + list(range(60, 75)) + seq[:5]
    b.reset_cache()
    result = b.generate(ids, GenerationParams(max_new_tokens=8))
    assert result.token_ids == naive(b.model, ids, 8) == seq[5:13]
    assert result.stats.forward_passes == 1 and result.stats.accepted_draft_tokens == 7
    # the same with a reused cache: the prefill feeds one new token plus the draft
    more = ids + [seq[5]]
    result = b.generate(more, GenerationParams(max_new_tokens=8))
    assert result.stats.prefill_tokens <= 2 and result.stats.forward_passes == 1
    assert result.token_ids == naive(b.model, more, 8)


def naive_healed(model, prompt: list[int], max_new: int, heal: str, texts: list[str]) -> list[int]:
    """Reference token healing: greedy, one token per forward, each token restricted to those consistent with
    what is left of the partial word until it is spent."""
    from transformers.cache_utils import DynamicCache

    device = D.model_device(model)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=torch.tensor([prompt], device=device), past_key_values=cache, use_cache=True).logits[0, -1]
        out: list[int] = []
        while len(out) < max_new:
            if heal:
                ok = [i for i, t in enumerate(texts[: logits.shape[-1]]) if t and (t.startswith(heal) or heal.startswith(t))]
                token = ok[int(logits[ok].argmax())]
                heal = heal[len(texts[token]) :] if heal.startswith(texts[token]) else ""
            else:
                token = int(logits.argmax())
            out.append(token)
            logits = model(input_ids=torch.tensor([[token]], device=device), past_key_values=cache,
                           use_cache=True).logits[0, -1]
        return out


def test_speculation_works_inside_a_partial_word_and_stays_identical(chain):
    """Token healing (cursor at the end of a partial word) used to switch speculation off until the first
    token was chosen. Now drafts are verified under the healing mask: the chain seen before is drafted from
    the prompt, the first token is constrained to the partial word, and the output equals naive healing."""
    b, perm = chain
    texts = b.vocab_texts()
    rng = random.Random(5)
    cases = whole_in_one = 0
    for case, (seq, cut, heal) in enumerate(partial_word_cases(texts, perm, rng)):
        # decoys: the same n-gram followed by other tokens, nearer the cursor than the right continuation
        decoy = seq[cut - 3 : cut] + [rng.randrange(3, 32000) for _ in range(6)]
        ids = [1] + list(range(40, 55)) + seq + decoy + list(range(60, 70)) + seq[:cut]
        b.reset_cache()
        params = GenerationParams(max_new_tokens=10, heal_prefix=heal)
        result = b.generate(ids, params)
        assert result.token_ids == naive_healed(b.model, ids, 10, heal, texts), case
        assert result.text == b.decode(result.token_ids)[len(heal) :]
        cases += 1
        whole_in_one += result.stats.forward_passes == 1  # drafted past the decoy, verified under the mask
    assert cases >= 5 and whole_in_one >= cases // 2, (cases, whole_in_one)


def test_prompt_lookup_skips_continuations_that_do_not_fit():
    seq = [1, 2, 3, 7, 7, 1, 2, 3, 9, 9, 1, 2, 3]
    assert D.prompt_lookup_draft(seq, num_tokens=2) == [9, 9]  # the nearest
    assert D.prompt_lookup_draft(seq, num_tokens=2, fits=lambda d: d[0] == 7) == [7, 7]
    assert D.prompt_lookup_draft(seq, num_tokens=2, fits=lambda d: False) == []


def test_healer_fits_and_masks_alike():
    texts = ["", "ap", "append", "a", "pp", "end", "(", "b"]
    healer = D.Healer("app", lambda: texts)
    assert healer.fits([2, 6]) and healer.fits([1, 4]) and healer.fits([3, 4, 5])
    assert not healer.fits([7]) and not healer.fits([1, 5]) and not healer.fits([0])
    masked = healer.mask(torch.zeros(len(texts)))
    assert [i for i, v in enumerate(masked.tolist()) if v == 0.0] == [1, 2, 3]
    healer.advance(1)
    assert healer.remaining == "p" and healer.fits([4]) and not healer.fits([6])


def test_inside_a_partial_word_the_naturally_tokenized_continuation_is_drafted_first():
    """An earlier answer spelled the word a fragment at a time (``I|t|e``, nearest, in the history); the text
    has it as the tokenizer writes it (``Iter|ator``). The natural one is drafted first, and even a tree of
    three nodes gets its way through the word and one token past it."""
    from types import SimpleNamespace

    from codellama_lsp.engine.draft_tree import TreeBudget

    texts = ["", "I", "t", "e", "Iter", "ator", ".", "x", ")", "\n"]
    seq = [8, 9, 4, 5, 6, 7, 8, 9]  # ")\nIterator.x)\n", the prompt ends before the partial word "Ite"
    history = [[8, 9, 1, 2, 3, 7]]  # ")\nItex": the earlier answer, spelled a fragment at a time
    healer = D.Healer("Ite", lambda: texts)
    assert healer.tokens_to_spend([4, 5]) == 1 and healer.tokens_to_spend([1, 2, 3, 7]) == 3
    assert healer.tokens_to_spend([1, 2]) == 3  # not spent within them

    def drafted(tree, path):
        row, children = 0, tree.rows_children()
        for token in path:
            row = children[row].get(token)
            if row is None:
                return False
        return True

    for nodes, natural in ((16, [4, 5, 6, 7]), (3, [4, 5])):
        g = SimpleNamespace(step=SimpleNamespace(budget=TreeBudget(most=nodes), lookup=None), healer=healer,
                            trees=True, vocab_texts=lambda: texts)
        tree = D.lookup_tree(g, seq, 10, history=history)
        assert tree.tokens[:2] == [4, 5] and drafted(tree, natural), (nodes, tree.tokens)
    assert drafted(tree, [1]) and not drafted(tree, [1, 2])  # the fragments get what is left


def test_inside_a_partial_word_a_step_without_trees_gets_a_straight_draft():
    """llama.cpp's default step verifies straight drafts only (a tree makes it refuse the pass, and the
    request ends with no suggestion). Inside a partial word the earlier continuation is drafted; the
    tokenizer's spelling of the word only when there is none, never as a branch beside it."""
    from types import SimpleNamespace

    from codellama_lsp.engine.draft_tree import TreeBudget

    texts = ["", "I", "t", "e", "Iter", "ator", ".", "x", ")", "\n"]
    healer = D.Healer("Ite", lambda: texts)
    spell = lambda text: [1, 2, 3]  # noqa: E731  "I|t|e": not how the earlier text wrote it
    for trees in (False, True):
        g = SimpleNamespace(step=SimpleNamespace(budget=TreeBudget(most=16), lookup=None), healer=healer,
                            trees=trees, vocab_texts=lambda: texts)
        found = D.lookup_tree(g, [8, 9, 4, 5, 6, 7, 8, 9], 10, spell=spell)  # ")\nIterator.x)\n" earlier
        assert found.tokens[:4] == [4, 5, 6, 7]
        assert found.is_chain is not trees, (trees, found.tokens, found.parents)  # trees: the spelling beside it
        alone = D.lookup_tree(g, [8, 9, 6, 7, 8, 9], 10, spell=spell)  # nothing earlier: the spelling
        assert alone.tokens[:3] == [1, 2, 3] and (trees or alone.is_chain)


def test_a_draft_tree_verifies_several_continuations_in_one_pass(chain, monkeypatch):
    """The nearest earlier occurrence of the last tokens continues one way (a decoy), an older one the way
    the model goes: both go into one draft tree, the model's path runs through the side branch, whose
    cache rows are gathered into place. Output token-identical to naive decoding."""
    b, perm = chain
    gathered = []
    keep_rows = D.KVState.keep_rows

    def spy(self, base, rows):
        gathered.append(list(rows) != list(range(1, len(rows) + 1)))
        return keep_rows(self, base, rows)

    monkeypatch.setattr(D.KVState, "keep_rows", spy)
    rng = random.Random(8)
    for case in range(4):
        seq = chain_of(perm, rng.randrange(3, 32000), 20)
        decoy = seq[3:6] + [rng.randrange(3, 32000) for _ in range(4)]
        ids = [1] + list(range(40, 50)) + seq + list(range(50, 60)) + decoy + list(range(60, 66)) + seq[:6]
        b.reset_cache()
        result = b.generate(ids, GenerationParams(max_new_tokens=8))
        assert result.token_ids == naive(b.model, ids, 8), case
        assert b.kv.ids == (ids + result.token_ids)[: len(b.kv.ids)]
    assert any(gathered)
    # an attention kernel that cannot take a tree mask (flash attention) gets straight drafts only
    assert b.kv.tree_ready
    monkeypatch.setattr(b.model.config, "_attn_implementation", "flash_attention_2")
    assert not b.kv.tree_ready


def test_draft_tree_shares_beginnings_and_keeps_to_its_budget():
    from codellama_lsp.engine.draft_tree import DraftTree

    tree = DraftTree(budget=6)
    tree.add_path([5, 6, 7])
    tree.add_path([5, 8])
    assert tree.tokens == [5, 6, 7, 8] and tree.parents == [-1, 0, 1, 0] and not tree.is_chain
    assert tree.depths() == [0, 1, 2, 3, 2]
    assert tree.rows_children() == [{5: 1}, {6: 2, 8: 4}, {7: 3}, {}, {}]
    mask = tree.ancestor_mask()
    assert mask[3] == [True, True, True, True, False] and mask[4] == [True, True, False, False, True]
    tree.add_path([9, 9, 9])
    assert len(tree) == 6  # the budget cuts the last path
    spelled = DraftTree(budget=10)
    spelled.add_spellings("abc", {"a": [1], "ab": [2], "abc": [3], "b": [4], "bc": [5], "c": [6]})
    paths = {(1, 4, 6), (1, 5), (2, 6), (3,)}
    kids = spelled.rows_children()

    def walk(row, path):
        out = set() if kids[row] else {tuple(path)}
        for token, child in kids[row].items():
            out |= walk(child, path + [token])
        return out

    assert walk(0, []) == paths


def test_the_tree_budget_follows_what_verify_passes_deliver():
    """Verify passes that cost 3x a plain step and yield 2 tokens halve the budget down to its floor;
    passes that cost 1.2x and yield 3 tokens grow it back to the most."""
    from codellama_lsp.engine.draft_tree import TreeBudget

    budget = TreeBudget(most=16, least=2, window=4)
    for _ in range(8):
        budget.plain(0.010)
    for _ in range(4 * 5):
        budget.verified(tokens=2, seconds=0.030)  # 67 tokens/s against 100 for plain steps
    assert budget.nodes == 2
    for _ in range(4 * 5):
        budget.verified(tokens=3, seconds=0.012)  # 250 tokens/s
    assert budget.nodes == 16
    untried = TreeBudget(most=16, window=4)
    for _ in range(40):
        untried.verified(tokens=1, seconds=1.0)  # no plain step measured yet: nothing to compare with
    assert untried.nodes == 16


def test_draft_model_speculation_is_identical(backend64, chain):
    b = backend64
    target_ids = [1] + b.encode(SOURCE[1000:1500])
    expected = naive(b.model, target_ids, 12)
    # the target itself as draft: every proposal accepted; the chain model as draft: mostly rejected
    for draft_model, must_accept in ((b.model, True), (chain[0].model, False)):
        b.reset_cache()
        draft = D.DraftModel(draft_model, num_tokens=4)
        params = GenerationParams(max_new_tokens=12, speculation="draft")
        result = D.generate(b.kv, target_ids, params, detokenizer=_detok(b), eos_id=2, draft=draft)
        assert result.token_ids == expected
        assert result.stats.draft_tokens > 0
        if must_accept:
            assert result.stats.accepted_draft_tokens == result.stats.draft_tokens
            assert result.stats.tokens_per_forward >= 2.5


def _detok(b):
    from codellama_lsp.engine.tokenizer import StreamDetokenizer

    return StreamDetokenizer(b.tokenizer)


def test_streamed_text_equals_returned_text_and_decode(backend):
    for seed in range(3):
        start = random.Random(seed).randrange(0, len(SOURCE) - 500)
        prefix, suffix = SOURCE[start : start + 300], SOURCE[start + 300 : start + 400]
        ids = backend.template.fim_ids(prefix, suffix, mode="spm")
        pieces: list[str] = []
        result = backend.generate(ids, GenerationParams(max_new_tokens=20), on_text=pieces.append)
        assert "".join(pieces) == result.text == backend.decode(result.token_ids)
        assert result.text


def test_stop_string_ends_text_and_is_not_returned(backend):
    ids = [1] + backend.encode(SOURCE[:300])
    full = backend.generate(ids, GenerationParams(max_new_tokens=20, speculation="none")).text
    stop = full[8:11]
    assert stop and full.find(stop) == 8
    pieces: list[str] = []
    result = backend.generate(ids, GenerationParams(max_new_tokens=20, stop_strings=[stop]), on_text=pieces.append)
    assert result.stats.stop_reason == "stop_string"
    assert result.text == full[:8] == "".join(pieces)


def test_stop_token_and_max_tokens(backend):
    ids = [1] + backend.encode(SOURCE[300:600])
    full = backend.generate(ids, GenerationParams(max_new_tokens=10))
    assert full.stats.stop_reason == "max_tokens" and full.stats.generated_tokens == 10
    stop_id = full.token_ids[4]
    result = backend.generate(ids, GenerationParams(max_new_tokens=10, stop_token_ids=[stop_id]))
    assert result.token_ids == full.token_ids[: full.token_ids.index(stop_id) + 1]
    assert result.stats.stop_reason == ("eos" if stop_id == backend.tokenizer.eos_id else "eot")
    assert result.text == backend.decode(result.token_ids[:-1])


def test_cancel_stops_within_one_token(backend):
    ids = [1] + backend.encode(SOURCE[600:900])
    cancel = CancelToken()
    seen: list[int] = []

    def on_text(piece: str) -> None:
        seen.append(len(piece))
        if len(seen) == 3:
            cancel.cancel()

    result = backend.generate(ids, GenerationParams(max_new_tokens=200), cancel=cancel, on_text=on_text)
    assert result.stats.stop_reason == "cancelled" and result.cancelled
    assert result.stats.generated_tokens <= 4  # the token being decoded when the flag was set, at most
    # cancelled before the call: no forward pass at all
    before = CancelToken()
    before.cancel()
    result = backend.generate(ids + [13], GenerationParams(max_new_tokens=50), cancel=before)
    assert result.stats.generated_tokens == 0 and result.stats.stop_reason == "cancelled"


def test_time_budget_is_honoured(backend):
    """The time budget stops decoding: no forward pass is begun once the deadline has been seen."""
    from codellama_lsp.engine.backend import monotonic

    ids = [1] + backend.encode(SOURCE[900:1200])
    budget = 0.4
    starts: list[float] = []
    handle = backend.model.register_forward_pre_hook(lambda *_: starts.append(monotonic()))
    try:
        begin = monotonic()
        result = backend.generate(ids, GenerationParams(max_new_tokens=100_000, time_budget_s=budget, speculation="none"))
    finally:
        handle.remove()
    assert result.stats.stop_reason == "time_budget"
    assert result.stats.generated_tokens > 0 and len(starts) == result.stats.forward_passes
    # The deadline is checked before each forward pass; only the one pass whose check raced the deadline
    # may start after it (without the check, thousands would: max_new_tokens is 100,000).
    late = [t for t in starts if t - begin >= budget]
    assert len(late) <= 1


def test_sampling_is_seeded_and_does_not_speculate(backend):
    ids = [1] + backend.encode(SOURCE[:200])
    params = GenerationParams(max_new_tokens=15, temperature=0.9, top_p=0.9, seed=5)
    first, second = backend.generate(ids, params), backend.generate(ids, params)
    assert first.token_ids == second.token_ids
    assert first.stats.draft_tokens == 0
    greedy = backend.generate(ids, GenerationParams(max_new_tokens=15))
    other = backend.generate(ids, GenerationParams(max_new_tokens=15, temperature=0.9, top_p=0.9, seed=6))
    assert len({tuple(first.token_ids), tuple(greedy.token_ids), tuple(other.token_ids)}) == 3


def test_token_healing_constrains_and_strips_the_partial_word(backend):
    prefix, suffix = "def total(values):\n    result = 0\n    for v in values:\n        result += v\n    ret", "\n"
    cut, heal = prefix[:-4], prefix[-4:]  # "    ret" is "▁▁▁" + "▁ret": cut at that token boundary
    assert heal == " ret"
    ids = backend.template.fim_ids(cut, suffix, mode="spm")
    pieces: list[str] = []
    result = backend.generate(ids, GenerationParams(max_new_tokens=8, heal_prefix=heal), on_text=pieces.append)
    raw = backend.decode(result.token_ids)
    assert raw.startswith(heal)
    assert result.text == raw[len(heal) :] == "".join(pieces)


def test_quantized_kv_cache(backend, tiny_model_dir):
    """fp8 KV cache: smaller, reused only when the prompt extends it, no speculation (it cannot crop)."""
    from codellama_lsp.engine.decode import KVState

    quant = load(tiny_model_dir, kv_cache="quantized")
    try:
        ids = [1] + quant.encode(SOURCE[:2400])[:599]
        params = GenerationParams(max_new_tokens=6)
        result = quant.generate(ids, params)
        assert result.stats.draft_tokens == 0 and result.stats.generated_tokens == 6
        dynamic = KVState(backend.model)
        dynamic.reset()
        D.prefill(dynamic, quant.cached_ids)
        assert quant.kv.nbytes() < 0.5 * dynamic.nbytes(), (quant.kv.nbytes(), dynamic.nbytes())
        extended = quant.generate(quant.cached_ids + [13, 13], params)
        assert extended.stats.reused_tokens == len(ids) + 5  # prompt + generated tokens fed so far
        diverged = quant.generate(ids[:300] + [13], params)
        assert diverged.stats.reused_tokens == 0  # cannot crop: rebuilt
        quant.warm(ids)  # stops one token short, so the generate that follows extends it
        warmed = quant.generate(ids, params)
        assert warmed.stats.reused_tokens == len(ids) - 1 and warmed.stats.prefill_tokens == 1
    finally:
        quant.close()


def test_warm_prefills_so_the_next_request_only_adds_the_change(backend):
    backend.reset_cache()
    ids = backend.template.fim_ids(SOURCE[:500], SOURCE[500:700], mode="spm")
    warmed = backend.warm(ids)
    assert warmed["prefill_tokens"] == len(ids) and not warmed["cancelled"]
    more = backend.template.fim_ids(SOURCE[:500] + "x", SOURCE[500:700], mode="spm")
    result = backend.generate(more, GenerationParams(max_new_tokens=3))
    assert result.stats.prefill_tokens <= 3


def test_prompt_lookup_draft_prefers_longest_and_nearest_match():
    seq = [1, 2, 3, 9, 9, 5, 2, 3, 7, 7, 4, 2, 3]
    assert D.prompt_lookup_draft(seq, num_tokens=2) == [7, 7]  # the nearest earlier "2 3"
    assert D.prompt_lookup_draft([5, 6, 7, 8], num_tokens=3) == []
    assert D.prompt_lookup_draft([1, 2, 3, 1, 2, 3], num_tokens=3, max_ngram=3) == [1, 2, 3]


def test_a_one_token_match_is_the_last_resort_and_proposes_a_short_draft():
    # "load_" after "list_iterator)": only the "_" repeats; what followed it is proposed, cut to a few tokens
    seq = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 11]
    assert D.prompt_lookup_candidates(seq, num_tokens=10) == [[12, 13, 14, 15][: D.LOOKUP_UNIGRAM_TOKENS]]
    # a two-token match comes first, with its full length; the one-token match only fills the remaining room
    seq = [1, 2, 3, 4, 5, 6, 7, 8, 2, 9, 9, 9, 9, 9, 9, 1, 2]
    assert D.prompt_lookup_candidates(seq, num_tokens=6, limit=2) == [[3, 4, 5, 6, 7, 8], [9, 9, 9, 9]]


def test_prompt_lookup_draft_searches_the_previous_answers_first():
    seq = [1, 2, 3, 9, 9, 5, 2, 3]
    history = [[8, 2, 3, 6, 6, 6], [2, 3, 7]]  # most recent first
    assert D.prompt_lookup_draft(seq, history=history, num_tokens=2) == [6, 6]
    assert D.prompt_lookup_draft(seq, history=[[4, 4]], num_tokens=2) == [9, 9]  # no match there: the prompt
    # a longer n-gram in the prompt wins over a shorter one in the history
    assert D.prompt_lookup_draft([4, 5, 6, 0, 5, 6], history=[[6, 1, 1]], num_tokens=1, min_ngram=1) == [0]
