"""The transformers model step: a ``DynamicCache`` (or fp8 ``QuantizedCache``) and the ids it covers.

* Reuse crops the cache to the common prefix: ``crop(keep - cache.get_seq_length())`` (transformers 5 takes a
  negative count).
* Draft trees go through one forward pass with a 4-D attention mask (each node sees its ancestors) and explicit
  position ids; the accepted path's rows are then gathered into place in every layer.

Quantized KV cache (``kv_cache="quantized"``): transformers' ``QuantizedCache`` (fp8 backend: no extra
package) stores keys/values in 1 byte instead of 2 (fp16) or 4 (fp32) once they leave its 128-token
full-precision residual window. Measured on the fp32 test model (2 layers, 4 heads x 16 dims) with
``LocalBackend.kv.nbytes()``: 600 tokens dynamic 0.616 MiB vs fp8 0.154 MiB; 2,000 tokens 1.983 vs 0.496 MiB
(4x, i.e. 2x against an fp16 cache). It is lossy: at 2,000 tokens the 5th greedy token differed from the
dynamic cache's. The research notes measured fp8 2.2x slower per token on CPU. Its ``crop()`` raises, so reuse and
quantization are traded: with a quantized cache the cache is reused only when the new prompt *extends*
everything it holds (a warmed document, the next chat turn), otherwise it is rebuilt from scratch; and
speculation, which must crop rejected drafts, is off. Use it for long chat contexts, the dynamic cache for
keystroke completions.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .draft_tree import DraftTree
from .step import ModelStep


def new_cache(model: Any, kv_cache: str = "dynamic") -> Any:
    from transformers.cache_utils import DynamicCache, QuantizedCache

    if kv_cache == "quantized":
        return QuantizedCache(backend="fp8", config=model.config)
    return DynamicCache(config=model.config)


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


class TransformersStep(ModelStep):
    """:class:`~codellama_lsp.engine.step.ModelStep` over a transformers causal LM."""

    runtime = "transformers"

    def __init__(self, model: Any, kv_cache: str = "dynamic") -> None:
        super().__init__()
        self.model = model
        self.kv_cache = kv_cache  # "dynamic" | "quantized"

    @property
    def croppable(self) -> bool:  # type: ignore[override]
        return self.kv_cache != "quantized"

    def _new_cache(self) -> Any:
        return new_cache(self.model, self.kv_cache)

    def _crop(self, keep: int) -> None:
        self.cache.crop(keep - self.cache.get_seq_length())  # negative count: transformers 5

    def _gather(self, base: int, rows: list[int]) -> None:
        index = torch.tensor([base + r for r in rows], dtype=torch.long, device=self.cache.layers[0].keys.device)
        for layer in self.cache.layers:  # one host-to-device copy of the index, not one per layer
            picked_k = layer.keys.index_select(-2, index.to(layer.keys.device))
            picked_v = layer.values.index_select(-2, index.to(layer.values.device))
            layer.keys = torch.cat([layer.keys[..., : base + 1, :], picked_k], dim=-2)
            layer.values = torch.cat([layer.values[..., : base + 1, :], picked_v], dim=-2)

    @property
    def tree_ready(self) -> bool:
        """The attention takes an arbitrary mask (eager and SDPA do; flash attention would silently let
        branches see each other) and the cache's rows can be gathered (plain dynamic layers)."""
        from transformers.cache_utils import DynamicLayer

        attention = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        layers = getattr(self.cache, "layers", None)
        return (self.croppable and attention in ("eager", "sdpa") and bool(layers)
                and all(isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in layers))

    def forward(self, ids: Sequence[int], logits_to_keep: int = 1, **tree: torch.Tensor) -> torch.Tensor:
        """``tree``: an ``attention_mask`` and ``position_ids`` for a draft tree (see :meth:`forward_tree`).
        Returns fp32 logits, on the model's device."""
        with torch.inference_mode():
            input_ids = torch.tensor([list(ids)], dtype=torch.long, device=model_device(self.model))
            out = self.model(input_ids=input_ids, past_key_values=self.cache, use_cache=True,
                             logits_to_keep=logits_to_keep, **tree)
            self.ids.extend(ids)
            return out.logits[0, -logits_to_keep:].float()

    def forward_tree(self, last: int, tree: DraftTree) -> torch.Tensor:
        base = len(self.ids)
        device = model_device(self.model)
        dtype = self.model.get_input_embeddings().weight.dtype  # the compute dtype, also under 4-bit weights
        n = len(tree) + 1
        allowed = torch.ones(n, base + n, dtype=torch.bool, device=device)
        allowed[:, base:] = torch.tensor(tree.ancestor_mask(), dtype=torch.bool, device=device)
        mask = torch.zeros(1, 1, n, base + n, dtype=dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        positions = torch.tensor([[base + d for d in tree.depths()]], dtype=torch.long, device=device)
        return self.forward([last, *tree.tokens], n, attention_mask=mask, position_ids=positions)

    def settle(self) -> None:
        device = model_device(self.model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def nbytes(self) -> int:
        from .memory import cache_nbytes

        return cache_nbytes(self.cache) if self.cache is not None else 0

    def new_generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def close(self) -> None:
        super().close()
        self.model = None


# The name the decode loop's tests and benches have used for this class.
KVState = TransformersStep


def forward(state: TransformersStep, ids: Sequence[int], logits_to_keep: int = 1, **tree: torch.Tensor) -> torch.Tensor:
    return state.forward(ids, logits_to_keep, **tree)


def forward_tree(state: TransformersStep, last: int, tree: DraftTree) -> torch.Tensor:
    return state.forward_tree(last, tree)
