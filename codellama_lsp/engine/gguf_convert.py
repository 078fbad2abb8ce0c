"""Write a Llama checkpoint directory (safetensors + ``tokenizer.json``) as a GGUF file for llama.cpp.

Why it exists: the bundled demo model (``codellama_lsp/models/demo``) is the only small model here that
infills, so it is what tests FIM through llama.cpp, in process (``engine/llamacpp.py``) and against a
llama.cpp server. It is converted rather than committed: the file is rebuilt from the committed checkpoint
in well under a second, and a content hash in the file name keeps a cached copy in step with the weights.

Use::

    from codellama_lsp.engine.gguf_convert import demo_gguf
    path = demo_gguf()                 # cached under the user cache dir; or demo_gguf(tmp_path)
    python -m codellama_lsp.engine.gguf_convert [OUT.gguf]   # the same from a shell; prints the path

Only what this project's checkpoints need is handled (architecture ``LlamaForCausalLM``; a BPE tokenizer
with byte fallback and a SentencePiece-style normalizer, i.e. Code Llama's layout), with numpy and the
``gguf`` package (no torch). The tokenizer is written the way llama.cpp expects a SentencePiece vocabulary
(``tokenizer.ggml.model = "llama"``: pieces, scores, types); each learned piece's score is minus the rank of
the merge that forms it, so llama.cpp's highest-score-first merging follows the BPE merge order. The merges
themselves are stored too (``tokenizer.ggml.merges``, ignored by llama.cpp for this model type) so that
:mod:`codellama_lsp.engine.gguf_file` rebuilds exactly the original ``tokenizer.json``. Weights stay in the
checkpoint's float16 (norms in float32, as llama.cpp requires); the attention q/k rows are permuted back
from the Hugging Face rotary layout to llama.cpp's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from .backend import ModelLoadError

GGUF_KEY_PREFIX = "codellama_lsp."  # our own metadata keys: checkpoint hints the template reads
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_BYTE = 1, 2, 3, 4, 6
_HINTS = ("preferred_fim_mode", "preferred_context_tokens")


def _demo_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "models" / "demo"


def _cache_dir() -> Path:
    if os.environ.get("CODELLAMA_LSP_CACHE"):
        return Path(os.environ["CODELLAMA_LSP_CACHE"]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("codellama-lsp"))


def checkpoint_hash(src: Path) -> str:
    """A short hash of the files the conversion reads (so a cached GGUF follows the checkpoint)."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        path = src / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    digest.update(b"v1")  # bump when the conversion itself changes
    return digest.hexdigest()[:12]


def demo_gguf(dest_dir: str | Path | None = None) -> Path:
    """The bundled demo model as a GGUF file: ``<dest_dir>/codellama-demo-<hash>.gguf``, written on first use
    (default ``dest_dir``: ``$CODELLAMA_LSP_CACHE`` or the user cache dir). Safe to call concurrently: the
    file appears atomically."""
    src = _demo_dir()
    dest = Path(dest_dir) if dest_dir is not None else _cache_dir() / "gguf"
    out = dest / f"codellama-demo-{checkpoint_hash(src)}.gguf"
    if not out.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        convert_checkpoint(src, out)
    return out


def _permute_rotary(weight: Any, heads: int) -> Any:
    """Hugging Face stores q/k rows as [half0 of every pair..., half1...] per head; GGUF interleaves the pairs."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _token_types(vocab_size: int, pieces: list[str], added: list[dict[str, Any]], unk: str | None) -> list[int]:
    types = [TOKEN_NORMAL] * vocab_size
    for i, piece in enumerate(pieces):
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            types[i] = TOKEN_BYTE
    for token in added:
        i = token["id"]
        if i < vocab_size:
            types[i] = TOKEN_CONTROL if token.get("special") else TOKEN_USER_DEFINED
            if token.get("content") == unk:
                types[i] = TOKEN_UNKNOWN
    return types


def convert_checkpoint(src: str | Path, out: str | Path) -> Path:
    """Convert the Llama checkpoint directory ``src`` into the GGUF file ``out`` (written atomically).

    Raises ModelLoadError with one line when the checkpoint is not of the supported kind."""
    import numpy as np

    try:
        import gguf
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise ModelLoadError(f"converting to GGUF needs the gguf package ({exc}); run `pip install gguf`") from None

    src, out = Path(src), Path(out)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "llama":
        raise ModelLoadError(f"{src}: only Llama checkpoints can be converted here (model_type {config.get('model_type')!r})")
    spec = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ModelLoadError(f"{src}/tokenizer.json: only BPE tokenizers with byte fallback (Llama style) can be converted")
    tok_config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8")) \
        if (src / "tokenizer_config.json").is_file() else {}

    n_vocab = int(config["vocab_size"])
    vocab: dict[str, int] = dict(model["vocab"])
    added = list(spec.get("added_tokens") or [])
    for token in added:
        vocab.setdefault(token["content"], token["id"])
    pieces = [""] * n_vocab
    for piece, i in vocab.items():
        if i < n_vocab:
            pieces[i] = piece
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    scores = [0.0] * n_vocab
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1)
        i = vocab.get(left + right)
        if i is not None and i < n_vocab and scores[i] == 0.0:
            scores[i] = -float(rank + 1)
    unk = model.get("unk_token")

    def special(name: str) -> int | None:
        value = tok_config.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        return vocab.get(value) if isinstance(value, str) else None

    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    rope = config.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)

    part = out.with_name(out.name + f".{os.getpid()}.part")
    writer = gguf.GGUFWriter(str(part), "llama")
    writer.add_name(src.name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-5))
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for hint in _HINTS:
        if hint in config:
            value = config[hint]
            (writer.add_uint32 if isinstance(value, int) else writer.add_string)(GGUF_KEY_PREFIX + hint, value)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(_token_types(n_vocab, pieces, added, unk))
    if merges:
        writer.add_token_merges(merges)
    for name, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                      ("unk_token", writer.add_unk_token_id)):
        i = special(name)
        if i is not None:
            add(i)
    writer.add_add_bos_token(bool(tok_config.get("add_bos_token", True)))
    writer.add_add_eos_token(bool(tok_config.get("add_eos_token", False)))
    writer.add_add_space_prefix(True)
    keys = gguf.Keys.Tokenizer
    for text, key in (("▁<PRE>", keys.FIM_PRE_ID), ("▁<SUF>", keys.FIM_SUF_ID), ("▁<MID>", keys.FIM_MID_ID),
                      ("▁<EOT>", keys.EOT_ID)):
        if text in vocab:
            writer.add_uint32(key, vocab[text])
    if isinstance(tok_config.get("chat_template"), str):
        writer.add_chat_template(tok_config["chat_template"])

    tensors = load_file(str(src / "model.safetensors"))
    names = {"embed_tokens": "token_embd", "norm": "output_norm"}
    layer_names = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    }
    for name in sorted(tensors):
        data = tensors[name]
        parts = name.split(".")
        if name == "lm_head.weight":
            if config.get("tie_word_embeddings"):
                continue
            target = "output.weight"
        elif parts[:2] == ["model", "layers"]:
            layer, rest = parts[2], ".".join(parts[3:-1])
            if rest not in layer_names:
                raise ModelLoadError(f"{src}: tensor {name} has no GGUF counterpart here")
            target = f"blk.{layer}.{layer_names[rest]}.{parts[-1]}"
            if rest == "self_attn.q_proj":
                data = _permute_rotary(data, heads)
            elif rest == "self_attn.k_proj":
                data = _permute_rotary(data, kv_heads)
        elif parts[0] == "model" and parts[1] in names:
            target = f"{names[parts[1]]}.{parts[-1]}"
        else:
            raise ModelLoadError(f"{src}: tensor {name} has no GGUF counterpart here")
        dtype = np.float32 if data.ndim == 1 else np.float16
        writer.add_tensor(target, np.ascontiguousarray(data.astype(dtype)))

    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(part, out)
    finally:
        if part.exists():
            part.unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        path = convert_checkpoint(_demo_dir(), Path(args[0])) if args else demo_gguf()
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
