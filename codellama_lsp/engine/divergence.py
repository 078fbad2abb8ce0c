"""Token identity up to near-ties: how a fast path's greedy output is compared with the plain loop's on a GPU.

In float64 on the CPU, cache reuse and speculation give exactly the plain loop's tokens (tests/test_decode.py).
On CUDA in bf16 or fp16 they cannot promise that: a one-token step and a multi-token verify pass run different
kernels (SDPA with and without a mask, bitsandbytes' ``gemm_4bit`` picked by row count, a CUDA-graph replay),
whose rounding differs, and a greedy choice between two almost equal logits can flip. After the first flip
the two runs continue from different text, so only that first divergence says anything.

The claim, checked by the GPU-marked tests and ``bench/gpu_check.py``: the fast path's tokens equal the plain
loop's, **unless** at the first position where they differ the plain loop's top-2 logit gap was below
``EPSILON[dtype]``. The ε are stated, not yet measured: about the logit rounding error of the dtype at
Code Llama's logit scale (|logit| up to ~30: a bf16 ulp there is 0.125, fp16's 0.016), times a few for the
32 layers the difference travels through. ``bench/gpu_check.py`` reports the measured gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

EPSILON = {"float64": 1e-9, "float32": 1e-3, "float16": 0.1, "bfloat16": 0.5}


def epsilon(dtype: Any) -> float:
    """The near-tie tolerance for a compute dtype (a torch dtype or its name)."""
    return EPSILON.get(str(dtype).replace("torch.", ""), EPSILON["bfloat16"])


def top2_gap(logits: Any) -> float:
    """Top-1 minus top-2 logit (float64 arithmetic): how close the greedy choice was to a tie."""
    import torch

    values = torch.topk(logits.detach().double().reshape(-1), 2).values
    return float(values[0] - values[1])


@dataclass(frozen=True)
class Divergence:
    """Where a run first left the reference: ``index`` None when the tokens are identical."""

    index: int | None
    gap: float | None  # the reference's top-2 gap at ``index`` (None: identical, or no logits known there)
    expected: int | None = None
    got: int | None = None

    @property
    def identical(self) -> bool:
        return self.index is None

    def within(self, eps: float) -> bool:
        """Identical, or the first divergence is a near-tie (gap below ``eps``)."""
        return self.index is None or (self.gap is not None and self.gap < eps)

    def describe(self) -> str:
        if self.index is None:
            return "identical"
        gap = "unknown" if self.gap is None else f"{self.gap:.4g}"
        return f"first divergence at token {self.index} ({self.expected} expected, {self.got} got), top-2 gap {gap}"


def first_divergence(expected: Sequence[int], gaps: Sequence[float], got: Sequence[int]) -> Divergence:
    """Compare ``got`` with the reference ``expected`` whose step ``i`` had top-2 gap ``gaps[i]``.

    A run that stops earlier or later (a stop token chosen on one side only) diverges where the shorter ends."""
    n = min(len(expected), len(got))
    index = next((i for i in range(n) if expected[i] != got[i]), None)
    if index is None and len(expected) != len(got):
        index = n
    if index is None:
        return Divergence(None, None)
    return Divergence(
        index,
        gaps[index] if index < len(gaps) else None,
        expected[index] if index < len(expected) else None,
        got[index] if index < len(got) else None,
    )


def assert_identical_up_to_near_ties(expected: Sequence[int], gaps: Sequence[float], got: Sequence[int],
                                     dtype: Any, eps: float | None = None) -> Divergence:
    """Raise AssertionError unless ``got`` equals ``expected`` up to a near-tie; return the divergence."""
    found = first_divergence(expected, gaps, got)
    limit = epsilon(dtype) if eps is None else eps
    if not found.within(limit):
        raise AssertionError(f"{found.describe()}: not a near-tie (epsilon {limit} for {dtype})")
    return found


def plain_greedy(model: Any, prompt: Sequence[int], max_new: int, stop_ids: Sequence[int] = ()) -> tuple[list[int], list[float]]:
    """The reference: a fresh dynamic cache, the whole prompt in one pass, one token per forward pass, on the
    model's own device. Returns the tokens and the top-2 gap of each greedy choice."""
    import torch
    from transformers.cache_utils import DynamicCache

    device = next(model.parameters()).device
    stops = set(stop_ids)
    tokens: list[int] = []
    gaps: list[float] = []
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[0, -1]
        while True:
            token = int(logits.argmax())
            tokens.append(token)
            gaps.append(top2_gap(logits))
            if token in stops or len(tokens) >= max_new:
                return tokens, gaps
            ids = torch.tensor([[token]], dtype=torch.long, device=device)
            logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[0, -1]
