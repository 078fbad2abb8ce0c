"""The near-tie tolerance used by the GPU tests and bench/gpu_check.py, checked on the CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from codellama_lsp.engine import divergence as V  # noqa: E402


def test_first_divergence_and_its_gap():
    expected, gaps = [5, 6, 7, 8], [3.0, 2.0, 0.01, 4.0]
    assert V.first_divergence(expected, gaps, [5, 6, 7, 8]).identical
    found = V.first_divergence(expected, gaps, [5, 6, 9, 1])
    assert (found.index, found.gap, found.expected, found.got) == (2, 0.01, 7, 9)
    assert found.within(V.epsilon("bfloat16")) and not found.within(0.001)
    assert "token 2" in found.describe() and "0.01" in found.describe()
    far = V.first_divergence(expected, gaps, [5, 1])
    assert far.index == 1 and not far.within(V.epsilon(torch.bfloat16))
    shorter = V.first_divergence(expected, gaps, [5, 6])  # a stop token chosen on one side only
    assert shorter.index == 2 and shorter.got is None
    V.assert_identical_up_to_near_ties(expected, gaps, [5, 6, 9], "bfloat16")
    with pytest.raises(AssertionError, match="not a near-tie"):
        V.assert_identical_up_to_near_ties(expected, gaps, [5, 1], torch.float16)
    assert V.epsilon("float64") < V.epsilon("float32") < V.epsilon("float16") < V.epsilon("bfloat16")


def test_top2_gap():
    assert V.top2_gap(torch.tensor([0.0, 3.0, 2.5, -1.0])) == pytest.approx(0.5)
    assert V.top2_gap(torch.tensor([1.0, 1.0])) == 0.0


def test_plain_greedy_is_the_plain_loop(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float64).eval()
    prompt = [1, 450, 3186, 338, 263, 1243, 29889, 13]
    tokens, gaps = V.plain_greedy(model, prompt, 6)
    assert len(tokens) == len(gaps) == 6 and all(g >= 0 for g in gaps)
    with torch.inference_mode():  # greedy by full recomputation, no cache: the same tokens in float64
        seq = list(prompt)
        for expected, gap in zip(tokens, gaps):
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
            assert int(logits.argmax()) == expected and V.top2_gap(logits) == pytest.approx(gap, abs=1e-9)
            seq.append(expected)
    stopped, _ = V.plain_greedy(model, prompt, 6, stop_ids=[tokens[2]])
    assert stopped == tokens[:3]
