"""A gpt-fast-class decode step for Llama-shaped models: a preallocated KV cache written in place.

Why: on a GPU the eager transformers forward with a ``DynamicCache`` spends more time around the GPU than on
it. The dynamic cache ``torch.cat``s itself at every step (for a 7B in bf16 at 4k tokens, ~4 GiB of memory
traffic per token, more than the 4-bit weights), the mask is rebuilt in Python, and each pass launches
hundreds of small kernels from Python. gpt-fast's answer, followed here:

* **one buffer per layer**, ``[1, kv_heads, capacity, head_dim]``, allocated once; a forward pass writes its
  keys and values into it with ``index_copy_`` at the rows it is given. "Cropping" is setting a length:
  rows past it are stale and never attended (the mask stops at the length, or the slice does);
* **the one-token step has fixed shapes** (one token, the whole buffer attended under a mask computed on
  the device from the position), so on CUDA it is captured once as a CUDA graph and replayed
  (:class:`GraphedStep`); on the CPU the same arithmetic runs eagerly over the live rows only;
* **indexes stay on the device**: the rows a verify pass writes, the accepted tree path gathered into place.

The model's own modules (projections, norms, MLP, rotary embedding, LM head) do the arithmetic, so 4-bit
bitsandbytes layers work unchanged; only the attention and the cache are ours. That needs the Llama layout
(``model.model.layers[i].self_attn.q_proj`` ...); :func:`supports` says whether a model has it, and
:class:`StaticStep` is used only then (``kv_cache = "static"``; anything else keeps the dynamic cache).

:class:`StaticStep` is another transformers model step (``engine/step.py``): the ids bookkeeping, sync, crop
and tree verification are the interface's; it supplies the forward pass, the crop (a length) and the gather.
On the CPU in float64 it gives the plain loop's tokens exactly (tests/test_static_cache.py); the CUDA gain
is measured by ``bench/gpu_check.py``.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import named
from .step_transformers import TransformersStep

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("llama",)  # Code Llama; other types with the same layout may be added once tested
CAPACITY_STEP = 1024  # buffers grow in whole steps (a CUDA graph is recaptured after a growth)


def supports(model: Any) -> bool:
    """Whether ``model`` has the Llama layout this step runs (and no sliding window)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SUPPORTED_TYPES or getattr(config, "sliding_window", None):
        return False
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not layers or not all(hasattr(inner, a) for a in ("embed_tokens", "norm", "rotary_emb")):
        return False
    first = layers[0]
    attn = getattr(first, "self_attn", None)
    return (hasattr(model, "lm_head") and all(hasattr(first, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp"))
            and attn is not None and all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class StaticCache:
    """The buffers and the arithmetic of one forward pass over them."""

    def __init__(self, model: Any, capacity: int) -> None:
        config = model.config
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers[: config.num_hidden_layers])
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        embed = self.inner.embed_tokens.weight
        self.dtype, self.device = embed.dtype, embed.device
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.ensure(capacity)

    @torch.inference_mode()
    def ensure(self, capacity: int) -> bool:
        """Room for ``capacity`` rows (grown in CAPACITY_STEP steps, contents kept); True when reallocated."""
        if capacity <= self.capacity:
            return False
        new = -(-capacity // CAPACITY_STEP) * CAPACITY_STEP
        shape = (1, self.kv_heads, new, self.head_dim)
        keys, values = [], []
        for i in range(len(self.layers)):
            k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.capacity:
                k[:, :, : self.capacity].copy_(self.keys[i])
                v[:, :, : self.capacity].copy_(self.values[i])
                self.keys[i] = self.values[i] = None  # type: ignore[call-overload]  # free as we go
            keys.append(k)
            values.append(v)
        self.keys, self.values, self.capacity = keys, values, new
        return True

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor, allowed: torch.Tensor,
            span: int, logits_to_keep: int) -> torch.Tensor:
        """One forward pass: ``input_ids`` [1, q] at ``positions`` [1, q], their K/V written to cache ``rows``
        [q]; query j attends cache row c < ``span`` where ``allowed`` [1, 1, q, span] (bool) says so. Returns
        the logits of the last ``logits_to_keep`` queries, [logits_to_keep, vocab], in the compute dtype."""
        hidden = self.inner.embed_tokens(input_ids)
        cos, sin = self.inner.rotary_emb(hidden, position_ids=positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q_len = input_ids.shape[1]
        group = self.heads // self.kv_heads
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(1, q_len, -1, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(1, q_len, -1, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(1, q_len, -1, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[i].index_copy_(2, rows, k.to(self.dtype))
            self.values[i].index_copy_(2, rows, v.to(self.dtype))
            keys, values = self.keys[i][:, :, :span], self.values[i][:, :, :span]
            if group > 1:
                keys = keys.repeat_interleave(group, dim=1)
                values = values.repeat_interleave(group, dim=1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, scale=self.scaling)
            hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(1, q_len, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = self.inner.norm(hidden[:, -logits_to_keep:])
        return self.model.lm_head(hidden)[0]

    @torch.inference_mode()
    def move_rows(self, src: torch.Tensor, dst_start: int) -> None:
        """Copy cache rows ``src`` (device indexes, ascending) to ``dst_start``, ``dst_start + 1``, ...; every
        source row is at or after its destination, so gathering first and writing after is safe."""
        dst = torch.arange(dst_start, dst_start + src.numel(), device=src.device)
        for k, v in zip(self.keys, self.values):
            k.index_copy_(2, dst, k.index_select(2, src))
            v.index_copy_(2, dst, v.index_select(2, src))


class GraphedStep:
    """The one-token step over the whole buffer with fixed shapes, captured as a CUDA graph.

    Static inputs (token, position) are copied into place and the graph replayed: one launch instead of
    hundreds, no Python per layer. The mask is computed inside the graph from the position (rows after it are
    stale). Recaptured when the buffers grow."""

    def __init__(self, cache: StaticCache) -> None:
        self.cache = cache
        device = cache.device
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.graph: Any = None
        self.capacity = -1
        self.logits: torch.Tensor | None = None

    def _body(self) -> torch.Tensor:
        c = self.cache
        rows = self.position[0]
        allowed = (torch.arange(c.capacity, device=c.device) <= self.position[0, 0]).view(1, 1, 1, -1)
        return c.run(self.token, self.position, rows, allowed, c.capacity, 1)

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (lazy inits, autotuning)
                self._body()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._body()
        self.graph, self.capacity = graph, self.cache.capacity

    def __call__(self, token: int, position: int) -> torch.Tensor:
        """Logits [1, vocab] of the token after ``token`` written at row = position ``position``."""
        self.token.fill_(token)
        self.position.fill_(position)
        if self.graph is None or self.capacity != self.cache.capacity:
            self._capture()  # the warm-up wrote this same row with the same values: harmless
        self.graph.replay()
        assert self.logits is not None
        return self.logits


class StaticStep(TransformersStep):
    """The transformers model step (engine/step.py) over a :class:`StaticCache`: the ids it covers are its length.

    ``graphs``: replay the one-token step as a CUDA graph (CUDA only; default: on when the model is on CUDA)."""

    runtime = "transformers"

    def __init__(self, model: Any, capacity: int = 4096, graphs: bool | None = None) -> None:
        super().__init__(model, kv_cache="static")
        self.capacity = capacity
        self.graphs = graphs
        self.step: GraphedStep | None = None
        self._buffers: StaticCache | None = None

    def _new_cache(self) -> StaticCache:
        """The buffers, allocated on first use and then kept: an empty cache is a length of 0."""
        if self._buffers is None:
            self._buffers = StaticCache(self.model, self.capacity)
            use = self.graphs if self.graphs is not None else self._buffers.device.type == "cuda"
            self.step = GraphedStep(self._buffers) if use and self._buffers.device.type == "cuda" else None
        return self._buffers

    def reset_cache(self) -> None:
        super().reset_cache()
        self._buffers, self.step = None, None  # freed

    def _crop(self, keep: int) -> None:
        """Nothing to do: the rows past the length are never attended and get overwritten."""

    def _gather(self, base: int, rows: list[int]) -> None:
        src = torch.tensor([base + r for r in rows], dtype=torch.long, device=self.cache.device)
        self.cache.move_rows(src, base + 1)

    @property
    def tree_ready(self) -> bool:
        return True

    def nbytes(self) -> int:
        return self._buffers.nbytes() if self._buffers is not None else 0

    def forward(self, ids: Sequence[int], logits_to_keep: int = 1, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Feed ``ids`` at rows ``len(self.ids)`` and on (a draft tree comes with ``forward_tree``'s additive
        mask and positions); fp32 logits of the last ``logits_to_keep``, on the model's device."""
        if self.cache is None:
            self.reset()
        cache = self.cache
        base, n = len(self.ids), len(ids)
        cache.ensure(base + n)  # grown: a GraphedStep recaptures on its next call
        device = cache.device
        if n == 1 and attention_mask is None and self.step is not None:
            try:
                logits = self.step(int(ids[0]), base).float().clone()  # the graph's output is overwritten next replay
                self.ids.extend(ids)
                return logits
            except Exception as exc:  # a module that cannot be captured (e.g. a quantized kernel): run eagerly
                log.warning("CUDA graph capture of the decode step failed (%s); running it eagerly", named(exc))
                self.step = None
        rows = torch.arange(base, base + n, device=device)
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
        span = base + n
        if attention_mask is not None:
            allowed = (attention_mask[..., :span] == 0).to(device)
            positions = position_ids.to(device)
        else:
            allowed = torch.ones(n, span, dtype=torch.bool, device=device).tril(base).view(1, 1, n, span)
            positions = rows.view(1, n)
        logits = cache.run(input_ids, positions, rows, allowed, span, logits_to_keep).float()
        self.ids.extend(ids)
        return logits
