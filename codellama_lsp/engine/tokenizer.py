"""Token-exact encoding and decoding for code models, independent of transformers' tokenizer rebuilds.

Why this module exists: transformers 5.x rebuilds the Code Llama tokenizer's normalizer and
pre-tokenizer (``Metaspace(prepend_scheme="first")``), which silently adds a "▁" in front of texts
that must not have one (the FIM suffix), and its decode drops the leading space of a continuation.
Both break token-exactness with Meta's reference (``llama/generation.py``). So the wrapper encodes
with its own copy of the model's ``tokenizer.json`` (the publisher's ground truth) in which the
implicit leading space is switched off, and adds that space back explicitly when asked:

* ``encode(text)`` == SentencePiece's ``sp.encode(text)`` (implicit leading "▁"),
* ``encode(text, leading_space=False)`` == Meta's ``encode_infilling(text)``,
* ``decode(ids)`` == Meta's ``decode_infilling(ids)``: an anchor token is decoded in front so the
  continuation's leading space survives the decoder's strip of the first space.

Special-token strings that occur in user text ("<s>" in HTML, "</s>") are encoded as text, the way
SentencePiece does; control tokens only ever enter a prompt as ids, through ``templates.py``.

:class:`StreamDetokenizer` turns a growing id sequence into text pieces whose concatenation is
exactly ``decode(all_ids)``; it decodes only the tokens since the last safe boundary, so the cost
per token stays constant however long the output grows.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import named
from .backend import ModelLoadError

__all__ = ["Tokenizer", "StreamDetokenizer", "load_tokenizer", "CONTROL_PIECES"]

# Pieces that steer the model rather than carry text, across the supported families. They are
# never returned by ``decode`` even when a tokenizer does not flag them as special.
CONTROL_PIECES: tuple[str, ...] = (
    # Code Llama
    "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>", "<step>",
    # StarCoder / StarCoder2
    "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>", "<repo_name>",
    "<filename>", "<gh_stars>", "<reponame>", "<|endoftext|>",
    # DeepSeek-Coder
    "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>", "<|EOT|>",
    # Qwen2.5-Coder
    "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|repo_name|>",
    "<|file_sep|>", "<|im_start|>", "<|im_end|>",
    # Codestral / Mistral
    "[PREFIX]", "[SUFFIX]", "[MIDDLE]", "[INST]", "[/INST]",
)

_REPLACEMENT = "\ufffd"
_LINE_SPLIT_MIN = 64  # tiny texts: one call into tokenizers is as fast, keep them out of the cache
_LINE_CACHE_SIZE = 32768  # lines; a few MB at most
_BLOCK_LINES = 32  # lines per block-cache entry


def _strip_implicit_space(node: Any) -> tuple[Any, str]:
    """Return (node without any automatic leading-space insertion, the text it would have added).

    Handles the three places tokenizer.json files put it: a ``Prepend`` normalizer (Llama 2 /
    Code Llama hub files), a ``Metaspace`` pre-tokenizer with ``prepend_scheme`` first/always (or the
    older ``add_prefix_space``), and ``ByteLevel(add_prefix_space=True)``.
    """
    if not isinstance(node, dict):
        return node, ""
    kind = node.get("type")
    if kind == "Prepend":
        return None, node.get("prepend", "▁")
    if kind == "Sequence":
        key = "normalizers" if "normalizers" in node else "pretokenizers"
        kept, added = [], ""
        for child in node.get(key, []):
            new, text = _strip_implicit_space(child)
            added = added or text
            if new is not None:
                kept.append(new)
        return {**node, key: kept}, added
    if kind == "Metaspace":
        scheme = node.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if node.get("add_prefix_space", True) else "never"
        new = {**node, "prepend_scheme": "never"}
        if "add_prefix_space" in new:
            new["add_prefix_space"] = False
        return new, (node.get("replacement", "▁") if scheme in ("first", "always") else "")
    if kind == "ByteLevel" and node.get("add_prefix_space"):
        return {**node, "add_prefix_space": False}, " "
    return node, ""


def _component_spec(component: Any) -> Any:
    """The JSON spec of a tokenizers normalizer/pre-tokenizer (None stays None)."""
    if component is None:
        return None
    return json.loads(component.__getstate__())


class Tokenizer:
    """A model's tokenizer with exact ``encode``/``decode``; see the module docstring for why.

    ``hf`` is the transformers tokenizer (loaded with ``add_prefix_space=False``) for whatever else
    callers need from it (chat templates, special-token maps); encoding never goes through it.
    """

    def __init__(self, tokenizer_json: str, *, hf: Any = None, bos_token: str | None = None,
                 eos_token: str | None = None, chat_template: str | None = None,
                 source: str = "") -> None:
        from tokenizers import Tokenizer as RawTokenizer

        raw = RawTokenizer.from_str(tokenizer_json)
        # Swap in normalizer/pre-tokenizer without the automatic leading space. Only these two
        # small components are rebuilt (parsing the whole vocabulary in Python costs ~0.5 s).
        normalizer, added_n = _strip_implicit_space(_component_spec(raw.normalizer))
        pre_tokenizer, added_p = _strip_implicit_space(_component_spec(raw.pre_tokenizer))
        if added_n or added_p:
            parts = RawTokenizer.from_str(json.dumps({
                "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
                "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": None,
                "decoder": None, "model": {"type": "BPE", "vocab": {}, "merges": []}}))
            raw.normalizer = parts.normalizer
            raw.pre_tokenizer = parts.pre_tokenizer
        self._implicit = added_n or added_p
        # Special-token strings inside user text stay text (what SentencePiece does).
        raw.encode_special_tokens = True
        self._text = raw
        self._hf = hf
        self._hf_lock = threading.Lock()
        self.source = source
        self.chat_template = chat_template
        self.vocab_size = raw.get_vocab_size(with_added_tokens=True)

        added = raw.get_added_tokens_decoder()
        self._special_pieces = {tok.content: i for i, tok in added.items() if tok.special}
        markers = sorted(self._special_pieces, key=len, reverse=True)
        self._markup_split = re.compile("(" + "|".join(map(re.escape, markers)) + ")") if markers else None
        self.bos_token = bos_token if bos_token else None
        self.eos_token = eos_token if eos_token else None
        self.bos_id = self.token_id(self.bos_token) if self.bos_token else None
        self.eos_id = self.token_id(self.eos_token) if self.eos_token else None
        control = set(self._special_pieces.values())
        control.update(i for i in (self.token_id(p) for p in CONTROL_PIECES) if i is not None)
        self.control_ids: frozenset[int] = frozenset(control)
        byte_ids = (raw.token_to_id(f"<0x{b:02X}>") for b in range(256))
        self.byte_ids: frozenset[int] = frozenset(i for i in byte_ids if i is not None)
        self.kind = ("byte-level BPE" if "ByteLevel" in json.dumps(pre_tokenizer)
                     else "SentencePiece-style BPE" if (self._implicit == "▁" or self.byte_ids)
                     else "other")
        self._newline_id = self._isolated_newline(raw, pre_tokenizer)
        self._line_cache = functools.lru_cache(maxsize=_LINE_CACHE_SIZE)(self._encode_line)
        self._block_cache = functools.lru_cache(maxsize=_LINE_CACHE_SIZE // _BLOCK_LINES)(self._encode_block)
        self._anchor_id, self._anchor_text = self._pick_anchor()
        self._check_leading_space()

    # -- encoding -------------------------------------------------------------------------------

    @property
    def implicit_space(self) -> str:
        """What the model's own tokenizer puts in front of a text ("▁" for SentencePiece-style
        vocabularies, "" for byte-level ones, where ``leading_space`` makes no difference)."""
        return self._implicit

    @property
    def newline_isolated(self) -> bool:
        """Whether no token ever crosses a newline, so a text's encoding is the concatenation of its lines'
        (the first with the implicit leading space, the others without): true for Llama-style vocabularies."""
        return self._newline_id is not None

    def encode(self, text: str, *, leading_space: bool = True) -> list[int]:
        """Ids of ``text`` without BOS. ``leading_space=True`` matches ``sp.encode(text)``;
        ``False`` matches Meta's ``encode_infilling`` (no implicit leading "▁").

        Runs on every keystroke over the whole prefix and suffix, so long texts are encoded line by
        line through a cache when the vocabulary makes that exact (see ``_isolated_newline``):
        typing re-encodes only the edited line."""
        if not text:
            return []
        if self._newline_id is None or len(text) < _LINE_SPLIT_MIN:
            if leading_space and self._implicit:
                text = self._implicit + text
            return self._text.encode(text, add_special_tokens=False).ids
        lines = text.split("\n")
        out = list(self._line_cache(lines[0], leading_space))
        # the other lines go in blocks (each a newline + line, repeated): one cache hit per block
        block = self._block_cache
        for start in range(1, len(lines), _BLOCK_LINES):
            out.extend(block("\n".join(lines[start:start + _BLOCK_LINES])))
        return out

    def count_line(self, line: str) -> int:
        """Tokens of one line (``line`` may end with its newline), without the leading space: what the line adds
        to an encoded prompt. Through the same line cache as ``encode`` when no token crosses a newline, so the
        lines a prompt's budget counts are not tokenized a second time when the prompt is encoded."""
        body = line[:-1] if line.endswith("\n") else line
        if self._newline_id is None or "\n" in body:
            return len(self.encode(line, leading_space=False))
        return len(self._line_cache(body, False)) + (len(line) - len(body))

    def _encode_block(self, block: str) -> tuple[int, ...]:
        newline, cached = self._newline_id, self._line_cache
        out: list[int] = []
        for line in block.split("\n"):
            out.append(newline)
            if line:
                out.extend(cached(line, False))
        return tuple(out)

    def _encode_line(self, line: str, leading_space: bool) -> tuple[int, ...]:
        if leading_space and self._implicit:
            line = self._implicit + line
        if not line:
            return ()
        return tuple(self._text.encode(line, add_special_tokens=False).ids)

    @staticmethod
    def _isolated_newline(raw: Any, pre_tokenizer: Any) -> int | None:
        """The id of the newline byte piece when no merge can ever cross a newline, else None.

        In SentencePiece-style vocabularies like Llama's, "\n" is only ever the byte-fallback piece
        ``<0x0A>``: no vocabulary piece contains it, so BPE cannot merge across it and
        ``encode(a + "\n" + b) == encode(a) + [<0x0A>] + encode_no_space(b)`` exactly. Vocabularies
        with newline pieces (byte-level ones, or a BPE trained without pre-splitting) return None.
        """
        newline = raw.token_to_id("<0x0A>")
        if newline is None or (isinstance(pre_tokenizer, dict) and pre_tokenizer.get("type") not in (None, "Metaspace")):
            return None
        if any("\n" in piece for piece in raw.get_vocab(with_added_tokens=True)):
            return None
        return newline

    def encode_batch(self, texts: Sequence[str], *, leading_space: bool = True) -> list[list[int]]:
        """``encode`` for many texts at once: through the line cache where it applies (far faster
        for texts seen before), else in one parallel call into tokenizers."""
        if self._newline_id is not None:
            return [self.encode(t, leading_space=leading_space) for t in texts]
        prefix = self._implicit if leading_space else ""
        inputs = [prefix + t if t else "" for t in texts]
        out = self._text.encode_batch(inputs, add_special_tokens=False)
        return [e.ids if t else [] for e, t in zip(out, texts)]

    def encode_markup(self, text: str) -> list[int]:
        """Ids of a rendered template (e.g. a chat template's output) in which special-token
        strings are meant as the special tokens. Not for user text."""
        if not text:
            return []
        if self._markup_split is None:
            return self.encode(text, leading_space=False)
        ids: list[int] = []
        for part in self._markup_split.split(text):
            if part in self._special_pieces:
                ids.append(self._special_pieces[part])
            elif part:
                ids += self.encode(part, leading_space=False)
        return ids

    def count(self, text: str) -> int:
        """Number of tokens ``text`` takes in a prompt (with the implicit leading space)."""
        return len(self.encode(text))

    def token_id(self, piece: str | None) -> int | None:
        """The id of a vocabulary piece or added token, or None when the vocabulary lacks it."""
        if not piece:
            return None
        return self._text.token_to_id(piece)

    def piece(self, token_id: int) -> str | None:
        return self._text.id_to_token(token_id)

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """Exact text of ``ids`` as a continuation: the leading space is kept, control pieces
        (FIM markers, EOS, ...) are dropped."""
        kept = [i for i in ids if i not in self.control_ids]
        return self._decode_text(kept)

    def _decode_text(self, ids: list[int]) -> str:
        """Decode ids already free of control pieces, keeping their leading space."""
        if not ids:
            return ""
        if self._anchor_id is None:
            return self._text.decode(ids, skip_special_tokens=False)
        text = self._text.decode([self._anchor_id, *ids], skip_special_tokens=False)
        return text[len(self._anchor_text):]

    def _pick_anchor(self) -> tuple[int | None, str]:
        """A token decoded in front of every continuation so the decoder's strip of the first
        leading space (SentencePiece style) hits the anchor instead of the text."""
        candidates = [(c, lead) for lead in (True, False) for c in ("a", "x", "e", "t", "0", "=")]
        for candidate, lead in candidates:
            ids = self.encode(candidate, leading_space=lead)
            if len(ids) != 1 or ids[0] in self.control_ids:
                continue
            anchor = ids[0]
            text = self._text.decode([anchor], skip_special_tokens=False)
            probe = self.encode(" b", leading_space=False)
            joined = self._text.decode([anchor, *probe], skip_special_tokens=False)
            if text and joined.startswith(text) and joined[len(text):] == " b":
                return anchor, text
        return None, ""

    def _check_leading_space(self) -> None:
        """Fail loudly if the leading-space handling does not behave as documented (a tokenizer
        format this wrapper does not understand would otherwise corrupt every prompt)."""
        if self.vocab_size < 4:
            return
        plain = self.decode(self.encode("hello", leading_space=False))
        spaced = self.decode(self.encode("hello", leading_space=True))
        expected = ("" if not self._implicit else " ") + "hello"
        if plain != "hello" or spaced != expected:
            raise ModelLoadError(
                f"tokenizer {self.source or ''} does not round-trip text exactly "
                f"({plain!r}, {spaced!r}); use a model directory with the publisher's tokenizer.json"
            )

    def adds_bos(self) -> bool:
        """Whether the model's own tokenizer starts every text with BOS (Llama-style), read from
        tokenizer.json's post-processor."""
        if self.bos_id is None:
            return False
        ids = self._text.encode("a", add_special_tokens=True).ids
        return bool(ids) and ids[0] == self.bos_id

    @property
    def hf(self) -> Any:
        """transformers' tokenizer (``add_prefix_space=False``), loaded on first use; None when
        it cannot be loaded. Never used for encoding (see the module docstring)."""
        if self._hf is None and self.source:
            with self._hf_lock:
                if self._hf is None:
                    try:
                        self._hf = _load_hf(Path(self.source))
                    except Exception:  # noqa: BLE001 - callers treat None as "not available"
                        self._hf = False
        return self._hf or None

    def describe(self) -> dict[str, Any]:
        """What ``doctor`` shows about the tokenizer."""
        return {"kind": self.kind, "vocab_size": self.vocab_size, "bos": self.bos_token, "eos": self.eos_token,
                "implicit_space": bool(self._implicit), "line_cache": self._newline_id is not None,
                "source": self.source}

    def __repr__(self) -> str:
        return f"Tokenizer({self.source or '?'}, vocab={self.vocab_size}, implicit_space={self._implicit!r})"


class StreamDetokenizer:
    """Incremental detokenizer: ``"".join(push(i) for i in ids) + flush() == tokenizer.decode(ids)``.

    Text is released at *safe boundaries* only: after a token that does not end in the middle of a
    byte-fallback run (SentencePiece splits rare characters into ``<0xNN>`` pieces that must be
    decoded together) and whose decoded text does not end in an incomplete UTF-8 sequence (shown
    as U+FFFD by byte-level decoders). Each boundary becomes the start of the next decode window,
    decoded behind an anchor token, so spaces and indentation at window starts survive (unlike
    transformers' ``TextIteratorStreamer``) and the cost per token does not grow with the output.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._window: list[int] = []  # ids since the last safe boundary

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text that became final (often "" for split chars)."""
        if token_id in self._tok.control_ids:
            return ""
        window = self._window
        window.append(token_id)
        if token_id in self._tok.byte_ids:
            return ""  # a byte run decodes as a whole; wait for the token that ends it
        text = self._tok._decode_text(window)
        if text.endswith(_REPLACEMENT):
            return ""  # incomplete multi-byte character (byte-level vocabularies)
        window.clear()
        return text

    def flush(self) -> str:
        """End of generation: return whatever was held back (incomplete characters included)."""
        text = self._tok._decode_text(self._window)
        self._window = []
        return text

    @property
    def pending(self) -> int:
        """Number of ids held back waiting for a safe boundary."""
        return len(self._window)

    def __copy__(self) -> "StreamDetokenizer":
        twin = StreamDetokenizer(self._tok)
        twin._window = list(self._window)
        return twin

    copy = __copy__


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _load_hf(path: Path) -> Any:
    """transformers' tokenizer for ``path``, loaded with ``add_prefix_space=False`` (the 5.x trap)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), add_prefix_space=False, local_files_only=True)


def _chat_template(path: Path, config: dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not isinstance(template, str):
        try:  # transformers >= 4.43 also writes it to its own file
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        except OSError:
            template = None
    return template


def load_tokenizer(model_dir: str | Path, *, transformers: bool = True) -> Tokenizer:
    """Load the tokenizer of a local model directory.

    Encoding uses the directory's ``tokenizer.json`` directly (the publisher's exact model), so
    loading takes a fraction of a second and never imports transformers; ``Tokenizer.hf`` loads
    transformers' ``AutoTokenizer`` on first use (chat templates). Raises ``ModelLoadError`` with
    one actionable line when the directory holds no usable tokenizer. ``transformers=False`` (the GGUF
    runtime, which must not import torch): ``Tokenizer.hf`` stays None and chat templates render with jinja2.
    """
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"tokenizer directory not found: {path}")
    config = _read_json(path / "tokenizer_config.json")
    special_map = _read_json(path / "special_tokens_map.json")
    hf = None
    json_file = path / "tokenizer.json"
    try:
        tokenizer_json = json_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if (path / "tokenizer.model").is_file():
            # transformers 5.x converts a SentencePiece model differently from SentencePiece itself
            # (9 in 10 prompts differ on the Code Llama vocabulary): refuse rather than mis-prompt.
            raise ModelLoadError(f"{path} has tokenizer.model but no tokenizer.json, so prompts would not be "
                                 f"token-exact; add the model's tokenizer.json (`codellama-lsp pull MODEL` "
                                 f"downloads it)") from None
        # vocab.json + merges.txt (byte-level BPE): transformers' conversion of these is exact.
        try:
            hf = _load_hf(path)
            tokenizer_json = hf.backend_tokenizer.to_str()
        except Exception as exc:  # noqa: BLE001 - any failure here means "no usable tokenizer"
            reason = named(exc)
            raise ModelLoadError(f"no tokenizer.json in {path} ({reason}); re-download the model with "
                                 f"`codellama-lsp pull`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {json_file} ({exc}); re-download the model with "
                             f"`codellama-lsp pull`") from None

    def pick(name: str) -> str | None:
        value = _token_text(config.get(name)) or _token_text(special_map.get(name))
        if value is None and hf is not None:
            value = getattr(hf, name, None)
        return value if isinstance(value, str) else None

    try:
        return Tokenizer(tokenizer_json, hf=hf if transformers else False, bos_token=pick("bos_token"), eos_token=pick("eos_token"),
                         chat_template=_chat_template(path, config), source=str(path))
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exceptions on bad JSON
        raise ModelLoadError(f"{json_file} is corrupt or unsupported ({named(exc)}); "
                             f"re-download the model with `codellama-lsp pull`") from None
