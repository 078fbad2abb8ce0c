"""Memory estimates for weights and KV cache, so ``doctor`` can say *before* loading whether a model fits.

Weights: parameters are counted from ``config.json`` with the standard decoder shape (embedding, attention
q/k/v/o, a gated MLP, norms, LM head). For Code Llama that count is exact (7B: 6.74 B). Under bitsandbytes
only the transformer blocks' linear layers are quantized; the embedding and LM head stay in the compute dtype,
which is why a 7B model in nf4 is 3.6 GiB rather than 3.4 GiB.

KV cache: 2 (keys and values) x layers x kv_heads x head_dim x bytes, per token of context. 7B in fp16 is
0.5 MiB per token, 8 GiB at 16K tokens; that, not the weights, is what limits long contexts. The fp8 quantized
cache halves fp16 (quarters fp32).

Runtime: what a running model needs besides those two. On CUDA, the context and library workspaces
(cuBLAS, cuDNN; 0.5-1 GiB, counted as 0.75); everywhere, the transients of one prefill chunk (its hidden
states and MLP activations, the attention scores a masked SDPA call materializes over the whole context, the
fp32 logits, and under bitsandbytes the dequantized copy of the largest weight). ``doctor`` then wants a
further 10% free for fragmentation (``FIT_MARGIN``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

GIB = 1024**3
MIB = 1024**2

# bytes per parameter of a quantized linear layer, measured with bitsandbytes 0.50 (research §4e):
# nf4 with double quantization stores 4.13 bits per weight; LLM.int8 one byte (+ per-row scales, negligible)
_QUANT_BYTES = {"4bit": 0.516, "8bit": 1.0}
CUDA_CONTEXT_BYTES = 0.75 * GIB
PREFILL_CHUNK_TOKENS = 512  # engine/decode.py PREFILL_CHUNK
FIT_MARGIN = 0.10  # free memory doctor wants beyond the estimate: allocator fragmentation
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that size its memory."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool

    @property
    def block_linear_params(self) -> int:
        """Parameters in the blocks' linear layers: what bitsandbytes quantizes."""
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp)

    @property
    def other_params(self) -> int:
        """Embedding, LM head and norms: kept in the compute dtype under quantization."""
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        norms = self.hidden * (2 * self.layers + 1)
        return embed + norms

    @property
    def params(self) -> int:
        return self.block_linear_params + self.other_params

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value


def model_shape(config: Mapping[str, Any] | str | Path) -> ModelShape:
    """Read a :class:`ModelShape` from a ``config.json`` dict, file, or model directory.

    Raises ``ValueError`` when the config lacks the decoder fields (not a decoder-only LM)."""
    if not isinstance(config, Mapping):
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
    cfg = dict(config)
    if "text_config" in cfg and "hidden_size" not in cfg:  # multimodal wrappers keep the LM inside
        cfg = dict(cfg["text_config"])
    try:
        hidden = int(cfg.get("hidden_size") or cfg["n_embd"])
        layers = int(cfg.get("num_hidden_layers") or cfg["n_layer"])
        heads = int(cfg.get("num_attention_heads") or cfg["n_head"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"config has no decoder dimensions ({exc})") from None
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    intermediate = int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden)
    return ModelShape(
        layers=layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=int(cfg.get("vocab_size") or 0),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


def dtype_bytes(dtype: str) -> int:
    return _DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 2)


def weights_bytes(shape: ModelShape, quantization: str, dtype: str) -> float:
    """Bytes of resident weights for ``quantization`` in {"none","4bit","8bit"} with compute ``dtype``."""
    per = dtype_bytes(dtype)
    if quantization in _QUANT_BYTES:
        return shape.block_linear_params * _QUANT_BYTES[quantization] + shape.other_params * per
    return shape.params * per


def kv_cache_bytes(shape: ModelShape, tokens: int, dtype: str, kv_cache: str = "dynamic") -> float:
    """Bytes of KV cache for ``tokens`` of context; ``kv_cache="quantized"`` is the fp8 cache (1 byte/value);
    ``"static"`` preallocates the context plus one 1,024-row step, in whole steps (engine/static_cache.py)."""
    per = 1 if kv_cache == "quantized" else dtype_bytes(dtype)
    if kv_cache == "static":
        tokens = -(-(tokens + 1024) // 1024) * 1024
    return shape.kv_bytes_per_token(per) * tokens


def runtime_bytes(shape: ModelShape, tokens: int, dtype: str, quantization: str = "none", device: str = "cpu",
                  chunk: int = PREFILL_CHUNK_TOKENS) -> float:
    """CUDA context (on CUDA) plus the transients of one prefill chunk at ``tokens`` of context (see above)."""
    per = dtype_bytes(dtype)
    chunk = max(1, min(chunk, tokens or 1))
    activations = chunk * (4 * shape.hidden + 3 * shape.intermediate) * per
    scores = 2 * shape.heads * chunk * max(tokens, chunk) * per  # scores and probabilities (math/masked path)
    logits = 2 * shape.vocab * 4
    dequant = shape.hidden * shape.intermediate * per if quantization in _QUANT_BYTES else 0
    context = CUDA_CONTEXT_BYTES if str(device).startswith("cuda") else 0.0
    return context + activations + scores + logits + dequant


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    weights_bytes: float
    kv_bytes: float
    context_tokens: int
    runtime_bytes: float = 0.0  # CUDA context + prefill transients

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_bytes + self.runtime_bytes

    def fits(self, available_bytes: float, margin: float = FIT_MARGIN) -> bool:
        """Whether ``available_bytes`` holds the estimate with ``margin`` (a fraction of it) to spare."""
        return self.total_bytes * (1 + margin) <= available_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "weights_gib": round(self.weights_bytes / GIB, 3),
            "kv_cache_gib": round(self.kv_bytes / GIB, 3),
            "runtime_gib": round(self.runtime_bytes / GIB, 3),
            "total_gib": round(self.total_bytes / GIB, 3),
            "context_tokens": self.context_tokens,
        }


def estimate(
    config: Mapping[str, Any] | str | Path,
    *,
    quantization: str,
    dtype: str,
    context_tokens: int,
    kv_cache: str = "dynamic",
    device: str = "cpu",
) -> MemoryEstimate:
    """Weights + KV cache at ``context_tokens`` + runtime (CUDA context on ``device`` "cuda", transients)."""
    shape = model_shape(config)
    return MemoryEstimate(
        params=shape.params,
        weights_bytes=weights_bytes(shape, quantization, dtype),
        kv_bytes=kv_cache_bytes(shape, context_tokens, dtype, kv_cache),
        context_tokens=context_tokens,
        runtime_bytes=runtime_bytes(shape, context_tokens, dtype, quantization, device),
    )


def cache_nbytes(cache: Any) -> int:
    """Bytes actually held by a transformers cache object (dynamic or quantized): every tensor it references.

    Used to measure, not estimate, what the quantized KV option saves."""
    import torch

    seen: set[int] = set()
    total = 0

    def visit(obj: Any, depth: int) -> None:
        nonlocal total
        if depth > 4 or obj is None:
            return
        if isinstance(obj, torch.Tensor):
            if id(obj) not in seen and obj.device.type != "meta":
                seen.add(id(obj))
                total += obj.numel() * obj.element_size()
            return
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
            return
        if isinstance(obj, dict):
            for item in obj.values():
                visit(item, depth + 1)
            return
        if hasattr(obj, "__dict__") and depth < 4:
            for item in vars(obj).values():
                visit(item, depth + 1)

    for layer in getattr(cache, "layers", []):
        visit(layer, 0)
    return total
