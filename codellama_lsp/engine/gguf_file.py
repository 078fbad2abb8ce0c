"""Read what a GGUF file says about itself (metadata only) and rebuild its tokenizer with ``tokenizers``.

Why not llama.cpp's own tokenizer: prompts are built once, as ids, by one exact tokenizer for every runtime
(llama.cpp tokenizes a leading space differently at sequence start, and its ``suffix=``/``/infill`` paths
are broken or model-dependent). Why not transformers: the GGUF path must not import torch (first answer in
about a second). So the vocabulary stored in the file becomes a ``tokenizer.json`` for the same
:class:`~codellama_lsp.engine.tokenizer.Tokenizer` the transformers runtime uses:

* ``tokenizer.ggml.model = "llama"`` (SentencePiece, Code Llama): a BPE with byte fallback and the
  SentencePiece normalizer. Merges come from ``tokenizer.ggml.merges`` when the file has them (our own
  conversions do), else from the scores: every split of a piece into two pieces is a merge, ranked by the
  piece's score, which is how SentencePiece itself merges (highest-score piece first).
* ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE: SmolLM2, StarCoder, ...): vocabulary and merges as
  stored, with the pre-tokenizer the ``tokenizer.ggml.pre`` name stands for (a few known ones).

Anything else needs the model's ``tokenizer.json`` next to the GGUF file, which is used when present.
Reading the header is a few milliseconds even for a 7B file: only the key/value section is parsed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import first_line
from .backend import ModelLoadError

GGUF_MAGIC = b"GGUF"
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
OUR_PREFIX = "codellama_lsp."

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def is_gguf(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts like a GGUF file."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


class _Truncated(Exception):
    pass


def _read(handle: BinaryIO, n: int) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise _Truncated()
    return data


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(handle, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        (n,) = struct.unpack("<Q", _read(handle, 8))
        return _read(handle, n).decode("utf-8", "replace")
    if kind == _ARRAY:
        item_kind, n = struct.unpack("<IQ", _read(handle, 12))
        if item_kind in _SCALARS:  # one read for the whole array (scores: 32K floats)
            fmt = _SCALARS[item_kind]
            size = struct.calcsize(fmt)
            return list(struct.unpack(f"<{n}{fmt[1]}", _read(handle, size * n)))
        return [_value(handle, item_kind) for _ in range(n)]
    raise ValueError(f"unknown GGUF value type {kind}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (plus ``GGUF.version`` and ``GGUF.tensor_count``).

    Raises ModelLoadError with one line for a file that is not GGUF, is truncated, or is corrupt."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ModelLoadError(f"{path} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf model file")
            version, tensors, count = struct.unpack("<IQQ", _read(handle, 20))
            if version not in (2, 3):
                raise ModelLoadError(f"{path} is GGUF version {version}, which this llama.cpp cannot read; re-convert it")
            meta: dict[str, Any] = {"GGUF.version": version, "GGUF.tensor_count": tensors}
            for _ in range(count):
                (n,) = struct.unpack("<Q", _read(handle, 8))
                key = _read(handle, n).decode("utf-8", "replace")
                (kind,) = struct.unpack("<I", _read(handle, 4))
                meta[key] = _value(handle, kind)
    except _Truncated:
        raise ModelLoadError(f"{path} is truncated (its metadata ends early); re-download the GGUF file") from None
    except (ValueError, struct.error, MemoryError, OverflowError) as exc:
        raise ModelLoadError(f"{path} is a corrupt GGUF file ({exc}); re-download it") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path} ({exc.strerror or exc}); check the path given to --model") from None
    return meta


def architecture(meta: dict[str, Any]) -> str:
    return str(meta.get("general.architecture") or "")


def config_from_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The few ``config.json`` fields the rest of the program reads (template choice, context window)."""
    arch = architecture(meta)
    config: dict[str, Any] = {"model_type": arch, "architectures": [arch]}
    context = meta.get(f"{arch}.context_length")
    if isinstance(context, int) and context > 0:
        config["max_position_embeddings"] = context
    for key, value in meta.items():
        if key.startswith(OUR_PREFIX):
            config[key[len(OUR_PREFIX):]] = value
    name = meta.get("general.name")
    if isinstance(name, str):
        config["_name_or_path"] = name
    return config


# ---------------------------------------------------------------------------------------------------------------
# tokenizer


def _spm_merges(pieces: list[str], scores: list[float], types: list[int]) -> list[list[str]]:
    """SentencePiece merges from a scored vocabulary: each split of a normal piece into two known pieces,
    the higher the merged piece's score the earlier (ties: by the two halves' ids)."""
    ids = {p: i for i, p in enumerate(pieces) if types[i] in (TOKEN_NORMAL, TOKEN_USER_DEFINED)}
    found = []
    for piece, i in ids.items():
        if types[i] != TOKEN_NORMAL:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            a, b = ids.get(left), ids.get(right)
            if a is not None and b is not None:
                found.append((-scores[i], a, b, left, right))
    found.sort()
    return [[left, right] for _, _, _, left, right in found]


_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_PRE_TOKENIZERS: dict[str, Any] = {  # llama.cpp's pre-tokenizer names -> the HF pre-tokenizer they stand for
    "default": _BYTE_LEVEL,
    "gpt-2": _BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "starcoder": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "refact": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
}


def tokenizer_spec(meta: dict[str, Any], where: str = "") -> dict[str, Any]:
    """A ``tokenizer.json`` document equivalent to the GGUF's vocabulary (see the module docstring)."""
    kind = meta.get("tokenizer.ggml.model")
    pieces = meta.get("tokenizer.ggml.tokens")
    if not isinstance(pieces, list) or not pieces:
        raise ModelLoadError(f"{where} has no tokenizer vocabulary in its metadata; put the model's tokenizer.json next to it")
    types = list(meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(pieces))
    merges = [m.split(" ", 1) for m in meta.get("tokenizer.ggml.merges") or []]
    added = [
        {"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": t in (TOKEN_CONTROL, TOKEN_UNKNOWN)}
        for i, (p, t) in enumerate(zip(pieces, types)) if t in (TOKEN_CONTROL, TOKEN_UNKNOWN, TOKEN_USER_DEFINED)
    ]
    vocab = {}
    for i, p in enumerate(pieces):
        vocab.setdefault(p, i)
    spec: dict[str, Any] = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                            "post_processor": None}
    if kind == "llama":
        scores = list(meta.get("tokenizer.ggml.scores") or [0.0] * len(pieces))
        unk = meta.get("tokenizer.ggml.unknown_token_id")
        spec["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        spec["pre_tokenizer"] = None
        spec["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        spec["model"] = {"type": "BPE", "dropout": None, "unk_token": pieces[unk] if isinstance(unk, int) else None,
                         "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                         "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
                         "merges": merges or _spm_merges(pieces, scores, types)}
        return spec
    if kind == "gpt2":
        pre = str(meta.get("tokenizer.ggml.pre") or "default")
        if pre not in _PRE_TOKENIZERS:
            raise ModelLoadError(f"{where} uses the '{pre}' pre-tokenizer, which is not rebuilt here; put the model's "
                                 "tokenizer.json next to the GGUF file")
        spec["normalizer"] = None
        spec["pre_tokenizer"] = _PRE_TOKENIZERS[pre]
        spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        spec["model"] = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                         "ignore_merges": False, "vocab": vocab, "merges": merges}
        return spec
    raise ModelLoadError(f"{where} has a '{kind}' tokenizer, which is not rebuilt here; put the model's tokenizer.json "
                         "next to the GGUF file")


def load_gguf_tokenizer(path: str | Path, meta: dict[str, Any] | None = None):
    """The :class:`~codellama_lsp.engine.tokenizer.Tokenizer` for a GGUF model: ``tokenizer.json`` beside the
    file when there is one (with its ``tokenizer_config.json``), else rebuilt from the file's vocabulary.
    Never imports transformers."""
    from .tokenizer import Tokenizer, load_tokenizer

    path = Path(path)
    if (path.parent / "tokenizer.json").is_file() and (path.parent / "tokenizer_config.json").is_file():
        return load_tokenizer(path.parent, transformers=False)
    meta = meta if meta is not None else read_metadata(path)
    spec = tokenizer_spec(meta, str(path))
    pieces = meta["tokenizer.ggml.tokens"]

    def piece(key: str) -> str | None:
        i = meta.get(key)
        return pieces[i] if isinstance(i, int) and 0 <= i < len(pieces) else None

    template = meta.get("tokenizer.chat_template")
    try:
        return Tokenizer(json.dumps(spec), hf=False, bos_token=piece("tokenizer.ggml.bos_token_id"),
                         eos_token=piece("tokenizer.ggml.eos_token_id"),
                         chat_template=template if isinstance(template, str) else None, source=str(path))
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exceptions on a bad vocabulary
        raise ModelLoadError(f"the tokenizer stored in {path} is unusable ({first_line(exc)}); put the model's "
                             "tokenizer.json next to the GGUF file") from None
