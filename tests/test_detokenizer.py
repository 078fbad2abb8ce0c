"""Streamed text equals the whole-sequence decode exactly, after every token.

Property checked everywhere: for every prefix ``ids[:k]``, the text pushed so far plus what a
``flush()`` would return equals ``tokenizer.decode(ids[:k])``; at the end it equals the reference
middle text of the split. Covers indentation, CRLF, tabs, emoji/CJK split across byte-fallback
tokens, invalid byte runs, control tokens, and a byte-level (GPT-2 style) vocabulary.
"""

from __future__ import annotations

import copy
import random

import pytest

from shared_data import needs_shared
from codellama_lsp.engine.tokenizer import StreamDetokenizer, Tokenizer
from test_templates import codellama_tok, family_tokenizers, ref_encode_infilling, sp, splits  # noqa: F401

EOT = 32010
REPLACEMENT = "\ufffd"


def assert_streams_exactly(tok: Tokenizer, ids: list[int], expected: str | None = None) -> list[str]:
    """Push ``ids`` one by one, checking the prefix property after each; return the pieces."""
    stream = StreamDetokenizer(tok)
    pieces: list[str] = []
    for k, token_id in enumerate(ids, start=1):
        pieces.append(stream.push(token_id))
        so_far = "".join(pieces)
        assert so_far + copy.copy(stream).flush() == tok.decode(ids[:k]), (k, ids[:k])
    pieces.append(stream.flush())
    if expected is not None:
        assert "".join(pieces) == expected
    return pieces


@needs_shared
def test_streamed_middles_equal_reference_text(sp, codellama_tok, splits):
    for _, middle, _ in splits:
        ids = ref_encode_infilling(sp, middle) + [EOT]  # what the model emits for this middle, then ▁<EOT>
        pieces = assert_streams_exactly(codellama_tok, ids, middle)
        if REPLACEMENT not in middle:
            assert not any(REPLACEMENT in p for p in pieces), "half a character was emitted"


@needs_shared
def test_spm_continuations_keep_their_leading_space(sp, codellama_tok, splits):
    for prefix, middle, _ in splits[:120]:
        ids = sp.encode(middle)  # continuing a prefix: the first piece carries '▁'
        assert_streams_exactly(codellama_tok, ids, " " + middle if middle else "")


@needs_shared
def test_indentation_tabs_and_crlf_survive(codellama_tok):
    text = "def f(x):\n    if x:\n        return [\n\t\t1,\n\t]\r\n    return None\n\n  # two\n"
    ids = codellama_tok.encode(text, leading_space=False)
    pieces = assert_streams_exactly(codellama_tok, ids, text)
    assert any(p.startswith(" ") for p in pieces)  # pieces that begin with a space keep it


@needs_shared
def test_multibyte_characters_are_never_split(codellama_tok):
    text = "x = '😀🧑‍💻 中文 𠀋 e\u0301'\n"
    ids = codellama_tok.encode(text, leading_space=False)
    assert any(i in codellama_tok.byte_ids for i in ids)  # the emoji really are byte-fallback runs
    stream = StreamDetokenizer(codellama_tok)
    out = []
    for token_id in ids:
        piece = stream.push(token_id)
        assert REPLACEMENT not in piece
        out.append(piece)
    assert "".join(out) + stream.flush() == text
    # a run still open at the end comes out on flush
    emoji = codellama_tok.encode("😀", leading_space=False)
    stream = StreamDetokenizer(codellama_tok)
    assert [stream.push(i) for i in emoji] == [""] * len(emoji) and stream.pending == len(emoji)
    assert stream.flush() == "😀" and stream.pending == 0


@needs_shared
def test_invalid_byte_runs_match_the_full_decode(codellama_tok):
    b = lambda n: codellama_tok.token_id(f"<0x{n:02X}>")  # noqa: E731
    a = codellama_tok.encode("a", leading_space=False)[0]
    for ids in ([b(0xF0), b(0x9F), a], [b(0x80), a, b(0xE4)], [b(0xF0), b(0x9F), b(0x98), b(0x80), b(0x80), a],
                [b(0xE4), b(0xB8)], [a, b(0xC3)]):
        assert_streams_exactly(codellama_tok, ids)


@needs_shared
def test_control_tokens_are_skipped(codellama_tok):
    ids = [1, *codellama_tok.encode("x = 1", leading_space=False), 32007, 32009, EOT, 2]
    assert_streams_exactly(codellama_tok, ids, "x = 1")


@needs_shared
def test_random_id_sequences(codellama_tok):
    rng = random.Random(11)
    bytes_ = sorted(codellama_tok.byte_ids)
    for _ in range(300):
        ids = []
        for _ in range(rng.randrange(0, 40)):
            roll = rng.random()
            if roll < 0.4:
                ids.append(rng.choice(bytes_))
            elif roll < 0.45:
                ids.append(rng.choice([0, 1, 2, 32007, 32008, 32009, EOT]))
            else:
                ids.append(rng.randrange(3, 32016))
        assert_streams_exactly(codellama_tok, ids)


@needs_shared
def test_work_per_token_stays_bounded(codellama_tok, splits):
    """The decode window is only what is held back, not the whole output (no O(n²))."""
    text = "".join(m for _, m, _ in splits)
    ids = codellama_tok.encode(text, leading_space=False)
    stream = StreamDetokenizer(codellama_tok)
    longest_run = run = 0
    worst = 0
    out = []
    for token_id in ids:
        run = run + 1 if token_id in codellama_tok.byte_ids else 0
        longest_run = max(longest_run, run)
        out.append(stream.push(token_id))
        worst = max(worst, stream.pending)
    assert "".join(out) + stream.flush() == text
    assert len(ids) > 5000 and worst <= longest_run


@pytest.mark.parametrize("family", ["qwen", "codestral"])
def test_other_vocabularies_stream_exactly(family_tokenizers, family):
    tok = family_tokenizers[family]
    samples = ["def add(a, b):\n    return a + b\n", "\t\tx = '😀 中文 𠀋 ünïcödé'\r\n", "  leading spaces", "🧑‍💻"]
    for text in samples:
        ids = tok.encode(text, leading_space=False)
        pieces = assert_streams_exactly(tok, ids, text)
        assert not any(REPLACEMENT in p for p in pieces)
    rng = random.Random(3)
    for _ in range(200):  # arbitrary ids, invalid UTF-8 included
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(0, 25))]
        assert_streams_exactly(tok, ids)
