"""Data, tokenizer and FIM-example construction shared by the demo-model trainer and its evaluation.

Why a separate module: ``tools/train_demo_model.py`` and ``bench/demo_model_eval.py`` must agree
byte-for-byte on which files are held out and on how a fill-in-the-middle prompt is tokenized,
otherwise the evaluation would measure a format the model never saw.

The FIM layout is Meta's reference one (facebookresearch/codellama ``infilling_prompt_tokens``):

* PSM: ``[BOS, ▁<PRE>] + enc(prefix) + [▁<SUF>] + enc_infill(suffix) + [▁<MID>] + enc_infill(middle) + [▁<EOT>]``
* SPM: ``[BOS, ▁<PRE>, ▁<SUF>] + enc_infill(suffix) + [▁<MID>] + enc(prefix + middle) + [▁<EOT>]``

where ``enc`` keeps SentencePiece's implicit leading "▁" and ``enc_infill`` suppresses it.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
PRE, SUF, MID, EOT = "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"
INFILL_PIECES = (PRE, SUF, MID, EOT)

#: Directory names never used for training: the regression-test suites (they are huge, repetitive and
#: not what people write) and anything installed by third parties.
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})

#: Training-time word splitting, applied to the *normalized* text (spaces already turned into "▁").
#: It keeps merges inside identifiers, numbers, punctuation runs, indentation runs and newline runs,
#: the way SentencePiece keeps pieces inside whitespace-delimited words. The saved tokenizer has no
#: pre-tokenizer (like Code Llama's), so inference applies the same merges to the whole string.
WORD_SPLIT = (
    r"\n+"
    r"|▁+(?=▁[^▁\n])"
    r"|▁?[\p{L}_][\p{L}\p{N}_]*"
    r"|▁?\p{N}+"
    r"|▁?[^\p{L}\p{N}_▁\n]+"
    r"|▁+"
)


def stdlib_root() -> Path:
    """The pure-Python standard library of the running interpreter (PSF license)."""
    return Path(sysconfig.get_paths()["stdlib"])


@dataclass(frozen=True)
class SourceFile:
    rel: str  # path relative to the stdlib root, "/"-separated
    text: str


def collect_sources(root: Path | None = None) -> list[SourceFile]:
    """Every decodable ``*.py`` file under the stdlib, minus ``EXCLUDED_DIRS``, sorted by path."""
    root = root or stdlib_root()
    out: list[SourceFile] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = text.replace("\r\n", "\n")
        if text.strip():
            out.append(SourceFile(rel.as_posix(), text))
    return out


def split_holdout(files: list[SourceFile], *, seed: int, fraction: float) -> tuple[list[SourceFile], list[SourceFile]]:
    """Seeded file-level split: (train, held_out). Held-out files are never seen by tokenizer or model."""
    rng = random.Random(seed)
    order = list(range(len(files)))
    rng.shuffle(order)
    n_hold = max(1, round(len(files) * fraction))
    hold = set(order[:n_hold])
    train = [f for i, f in enumerate(files) if i not in hold]
    held = [f for i, f in enumerate(files) if i in hold]
    return train, held


def corpus_record(files: list[SourceFile]) -> dict:
    """What exactly was used: count, bytes and a sha256 over (path, content) in order."""
    digest = hashlib.sha256()
    total = 0
    for f in files:
        data = f.text.encode("utf-8")
        total += len(data)
        digest.update(f.rel.encode() + b"\0" + data + b"\0")
    return {"files": len(files), "bytes": total, "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(texts: list[str], *, vocab_size: int, limit_alphabet: int = 160):
    """Train a SentencePiece-style BPE (byte fallback, "▁" word marker) and return a ``tokenizers.Tokenizer``.

    Layout mirrors Code Llama's ``tokenizer.json``: ``<unk>``=0, ``<s>``=1, ``</s>``=2, the 256
    ``<0xNN>`` byte pieces, the learned pieces, then the four infilling pieces as special tokens.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    n_fixed = 3 + 256 + len(INFILL_PIECES)
    learner = Tokenizer(models.BPE(unk_token=UNK))
    learner.normalizer = _normalizer(leading_space=True)
    learner.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_SPLIT), behavior="isolated")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_fixed,
        min_frequency=2,
        limit_alphabet=limit_alphabet,
        initial_alphabet=["▁", "\n"],
        show_progress=False,
        special_tokens=[],
    )
    learner.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(learner.to_str())["model"]
    pieces = [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1])]
    merges = learned["merges"]

    vocab: dict[str, int] = {UNK: 0, BOS: 1, EOS: 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    for p in INFILL_PIECES:
        vocab[p] = len(vocab)

    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for t in (UNK, BOS, EOS) + INFILL_PIECES
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": BOS, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [1], "tokens": [BOS]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE", "dropout": None, "unk_token": UNK, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab, "merges": merges,
        },
    }
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def _normalizer(*, leading_space: bool):
    from tokenizers import normalizers

    steps = [normalizers.Replace(" ", "▁")]
    if leading_space:
        steps.insert(0, normalizers.Prepend("▁"))
    return normalizers.Sequence(steps)


def tokenizer_config(vocab: dict[str, int], *, model_max_length: int) -> dict:
    """``tokenizer_config.json`` in the shape of Code Llama's (``CodeLlamaTokenizer``, infilling pieces)."""
    added = {
        str(vocab[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True}
        for t in (UNK, BOS, EOS) + INFILL_PIECES
    }
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [PRE, MID, SUF, EOT],
        "bos_token": BOS,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "eot_token": EOT,
        # no fill-in marker: transformers would add it as id == vocab size, outside the embeddings
        "fill_token": None,
        "legacy": None,
        "middle_token": MID,
        "model_max_length": model_max_length,
        "prefix_token": PRE,
        "sp_model_kwargs": {},
        "suffix_first": False,
        "suffix_token": SUF,
        "tokenizer_class": "CodeLlamaTokenizer",
        "unk_token": UNK,
        "use_default_system_prompt": False,
    }


def special_tokens_map() -> dict:
    def tok(t):
        return {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    return {"additional_special_tokens": [PRE, MID, SUF, EOT], "bos_token": tok(BOS),
            "eos_token": tok(EOS), "unk_token": tok(UNK)}


class Codec:
    """Meta-style encoders over a trained ``tokenizers.Tokenizer`` (no BOS added by either).

    ``enc`` = SentencePiece ``encode`` (implicit leading "▁"); ``enc_infill`` = Meta's
    ``encode_infilling`` (no leading "▁"). ``decode_infill`` keeps a leading space, like Meta's
    ``decode_infilling``.
    """

    def __init__(self, tok):
        from tokenizers import Tokenizer

        self.tok = tok
        self._nolead = Tokenizer.from_str(tok.to_str())
        self._nolead.normalizer = _normalizer(leading_space=False)
        v = tok.get_vocab()
        self.vocab_size = len(v)
        self.bos, self.eos = v[BOS], v[EOS]
        self.pre, self.suf, self.mid, self.eot = (v[p] for p in INFILL_PIECES)
        self._anchor = v["▁a"] if "▁a" in v else None

    def enc(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids if text else []

    def enc_infill(self, text: str) -> list[int]:
        return self._nolead.encode(text, add_special_tokens=False).ids if text else []

    def enc_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode_infill(self, ids: list[int]) -> str:
        """Exact text of generated ids, leading space kept (decode behind an anchor piece)."""
        if self._anchor is None:
            return self.tok.decode(ids, skip_special_tokens=True)
        return self.tok.decode([self._anchor] + list(ids), skip_special_tokens=True)[1:]

    def psm(self, prefix: str, suffix: str, middle: str | None = None) -> list[int]:
        ids = [self.bos, self.pre] + self.enc(prefix) + [self.suf] + self.enc_infill(suffix) + [self.mid]
        if middle is not None:
            ids += self.enc_infill(middle) + [self.eot]
        return ids

    def spm(self, prefix: str, suffix: str, middle: str | None = None) -> list[int]:
        """With ``middle=None`` this is the inference prompt; generated ids then continue ``prefix``."""
        ids = [self.bos, self.pre, self.suf] + self.enc_infill(suffix) + [self.mid]
        if middle is None:
            return ids + self.enc(prefix)
        return ids + self.enc(prefix + middle) + [self.eot]


# --------------------------------------------------------------------------------------------------
# FIM span selection


#: Span-type weights (one whole line, rest of a line, block of 2-6 lines, paper's uniform split).
MIXES = {
    "base": (0.35, 0.20, 0.20, 0.25),  # phase 1: general infilling with a bias toward lines
    "lines": (0.60, 0.20, 0.10, 0.10),  # phase 2: what the editor asks for, so the model learns to stop
    "editor": (0.70, 0.15, 0.05, 0.10),  # phase 3: still more single lines (the ▁<EOT> after one line)
}


def choose_middle(text: str, rng: random.Random, mix: str = "base") -> tuple[int, int]:
    """Pick the [start, end) character span to hide, biased toward what an editor asks for.

    The paper splits at uniform random characters; a 5M-parameter model trained for an hour learns
    to stop only if it sees many short, line-shaped middles, so three quarters of the spans are
    whole lines, rests of lines, or a few whole lines, and one quarter is the paper's uniform split.
    """
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 < len(text)]
    ends = [text.find("\n", s) for s in starts]
    ends = [len(text) if e < 0 else e + 1 for e in ends]  # line end, newline included
    w_line, w_rest, w_block, _ = MIXES[mix]
    r = rng.random()
    content = [i for i, s in enumerate(starts) if text[s:ends[i]].strip()] or list(range(len(starts)))
    if r < w_line:  # one whole line
        i = rng.choice(content)
        return starts[i], ends[i]
    if r < w_line + w_rest:  # rest of a line from the cursor
        i = rng.choice(content)
        s, e = starts[i], ends[i]
        cut = rng.randint(s, max(s, e - 1))
        keep_newline = rng.random() < 0.5 or not text[s:e].endswith("\n")
        return cut, e if keep_newline else e - 1
    if r < w_line + w_rest + w_block:  # a short block of whole lines
        i = rng.choice(content)
        j = min(len(starts) - 1, i + rng.randint(1, 5))
        return starts[i], ends[j]
    a, b = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    return a, b


def fim_example(codec: Codec, text: str, rng: random.Random, *, fim_rate: float = 0.9, mix: str = "base") -> list[int]:
    """One training sequence from a text window: plain LM (10%) or FIM, PSM/SPM half and half."""
    if rng.random() >= fim_rate:
        return [codec.bos] + codec.enc(text)
    a, b = choose_middle(text, rng, mix)
    prefix, middle, suffix = text[:a], text[a:b], text[b:]
    if rng.random() < 0.5:
        return codec.psm(prefix, suffix, middle)
    return codec.spm(prefix, suffix, middle)


def python_version_tag() -> str:
    return f"{sys.implementation.name} {sys.version.split()[0]}"
