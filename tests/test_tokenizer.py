"""The tokenizer wrapper encodes exactly like SentencePiece and decodes continuations exactly.

Reference: ``sentencepiece`` on the shared Code Llama ``tokenizer.model`` (Meta's ``sp.encode`` and
``encode_infilling``), on the same ≥ 300 splits of real source files as test_templates.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from shared_data import REPO, TOKENIZER_DIR, needs_shared
from codellama_lsp.engine.backend import ModelLoadError
from codellama_lsp.engine.templates import template_for
from codellama_lsp.engine.tokenizer import StreamDetokenizer, load_tokenizer
from test_templates import codellama_tok, make_splits, ref_decode_infilling, ref_encode_infilling, sp, splits  # noqa: F401

DEMO_DIR = REPO / "codellama_lsp" / "models" / "demo"


def _random_texts(count: int, seed: int = 5) -> list[str]:
    """Random strings over a pool that stresses SentencePiece details: runs of spaces, tabs, CRLF,
    byte-fallback characters, combining marks, special-token look-alikes."""
    pool = list("abcxyz_09(){}[]:;.,'\"#=+-*/\\") + [" ", "  ", "    ", "\t", "\n", "\r\n", "😀", "中", "𠀋", "e\u0301",
                                                    "ñ", "<s>", "</s>", "<PRE>", " <SUF>", "▁", "☺", "\u00a0", "ß"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randrange(0, 40))) for _ in range(count)]


@needs_shared
def test_encode_equals_sentencepiece_on_source_splits(sp, codellama_tok, splits):
    bad = []
    for prefix, middle, suffix in splits:
        for text in (prefix, middle, suffix, prefix + middle + suffix):
            if codellama_tok.encode(text) != sp.encode(text):
                bad.append(("sp.encode", text[:60]))
            if codellama_tok.encode(text, leading_space=False) != ref_encode_infilling(sp, text):
                bad.append(("encode_infilling", text[:60]))
    assert not bad, f"{len(bad)} mismatches, e.g. {bad[:3]}"


@needs_shared
def test_encode_equals_sentencepiece_on_random_strings(sp, codellama_tok):
    for text in _random_texts(500):
        assert codellama_tok.encode(text) == sp.encode(text), repr(text)
        assert codellama_tok.encode(text, leading_space=False) == ref_encode_infilling(sp, text), repr(text)


@needs_shared
def test_long_texts_take_the_line_cache_path_exactly(sp, codellama_tok):
    assert codellama_tok._newline_id == codellama_tok.token_id("<0x0A>")  # Llama: no piece contains "\n"
    rng = random.Random(8)
    lines = _random_texts(400, seed=9)
    raw = codellama_tok._text
    for _ in range(60):
        text = "\n".join(rng.sample(lines, rng.randrange(20, 80)))
        if rng.random() < 0.3:
            text = "\n" + text + "\n\n"
        assert len(text) >= 64
        assert codellama_tok.encode(text) == sp.encode(text) == raw.encode("▁" + text, add_special_tokens=False).ids
        assert codellama_tok.encode(text, leading_space=False) == ref_encode_infilling(sp, text)
    # an edit re-encodes only the edited line; the result stays exact
    base = "\n".join(lines[:200])
    edited = base.replace(lines[100], lines[100] + "x = 1", 1)
    assert codellama_tok.encode(edited) == sp.encode(edited)


@needs_shared
def test_special_token_strings_in_user_text_stay_text(sp, codellama_tok):
    text = "<b>bold</b> <s>struck</s>"
    ids = codellama_tok.encode(text)
    assert ids == sp.encode(text)
    assert 1 not in ids and 2 not in ids
    assert codellama_tok.decode(ids) == " " + text


@needs_shared
def test_decode_keeps_the_leading_space_and_everything_else(sp, codellama_tok, splits):
    for _, middle, _ in splits:
        no_space = codellama_tok.encode(middle, leading_space=False)
        assert codellama_tok.decode(no_space) == middle == ref_decode_infilling(sp, no_space)
        assert codellama_tok.decode(codellama_tok.encode(middle)) == (" " + middle if middle else "")
    ids = codellama_tok.encode("    return x")
    assert codellama_tok.decode(ids) == "     return x"  # implicit ▁ + four spaces
    assert codellama_tok.decode([]) == ""


@needs_shared
def test_small_api(codellama_tok):
    tok = codellama_tok
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 32016)
    assert tok.token_id("▁<PRE>") == 32007 and tok.token_id("▁<EOT>") == 32010
    assert tok.token_id("no such piece") is None and tok.token_id("") is None
    assert tok.count("def f(x):\n    return x") == len(tok.encode("def f(x):\n    return x"))
    assert tok.count("") == 0 and tok.encode("", leading_space=False) == []
    texts = _random_texts(30)
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, leading_space=False) == [tok.encode(t, leading_space=False) for t in texts]
    assert tok.adds_bos()
    assert tok.implicit_space == "▁"
    assert tok.encode_markup("<s>[INST] hi") == [1] + tok.encode("[INST] hi", leading_space=False)
    info = tok.describe()
    assert info["kind"] == "SentencePiece-style BPE" and info["vocab_size"] == 32016 and info["line_cache"]


@needs_shared
def test_hf_is_the_transformers_tokenizer_loaded_without_prefix_space(codellama_tok):
    hf = codellama_tok.hf
    assert hf is not None
    assert hf.convert_tokens_to_ids("▁<MID>") == 32009
    # the flag matters: without it transformers 5 prepends '▁' to every text it encodes
    assert hf.convert_ids_to_tokens(hf.encode(")", add_special_tokens=False)) == [")"]


# --- failure modes: one actionable line, never a traceback from deep inside tokenizers ---------------


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_tokenizer(tmp_path / "nope")


def test_corrupt_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ', encoding="utf-8")
    with pytest.raises(ModelLoadError, match="corrupt.*codellama-lsp pull") as info:
        load_tokenizer(tmp_path)
    assert "\n" not in str(info.value)


def test_directory_without_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="no tokenizer.json.*codellama-lsp pull") as info:
        load_tokenizer(tmp_path)
    assert "\n" not in str(info.value)


@needs_shared
def test_sentencepiece_only_directory_is_refused(tmp_path):
    # transformers 5 converts tokenizer.model differently from SentencePiece: refuse, do not mis-prompt
    for name in ("tokenizer.model", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((TOKENIZER_DIR / name).read_bytes())
    with pytest.raises(ModelLoadError, match="no tokenizer.json.*token-exact.*pull") as info:
        load_tokenizer(tmp_path)
    assert "\n" not in str(info.value)


def test_byte_level_directory_without_tokenizer_json(tmp_path):
    # vocab.json + merges.txt only (GPT-2 style): transformers' conversion is used, and is exact
    from tokenizers import Tokenizer as Raw

    from test_templates import synthetic_families

    reference = Raw.from_str(synthetic_families()["plain"]["tokenizer.json"])
    reference.model.save(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>", "add_prefix_space": False}))
    assert not (tmp_path / "tokenizer.json").exists()
    tok = load_tokenizer(tmp_path)
    text = "def f(x):\n    return x  # 中文 😀\n"
    assert tok.encode(text) == reference.encode(text).ids
    assert tok.decode(tok.encode(text)) == text


@needs_shared
def test_special_tokens_from_config_files(tmp_path):
    spec = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"bos_token": {"content": "<s>"}, "eos_token": "</s>"}))
    tok = load_tokenizer(tmp_path)  # no tokenizer_config.json: special_tokens_map.json is enough
    assert (tok.bos_id, tok.eos_id) == (1, 2)


# --- the bundled demo model's tokenizer (trained for the project; appears when its training lands) ---


@pytest.mark.skipif(not (DEMO_DIR / "tokenizer.json").is_file(), reason=f"demo model not built yet ({DEMO_DIR})")
def test_demo_model_tokenizer_round_trips():
    tok = load_tokenizer(DEMO_DIR)
    template = template_for(tok, model_name="demo")
    assert template.family == "codellama" and template.fim
    pre, suf, mid, eot = (tok.token_id(p) for p in ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"))
    assert None not in (pre, suf, mid, eot, tok.bos_id, tok.eos_id)
    assert template.fim_stop_ids == [eot, tok.eos_id]
    for prefix, middle, suffix in make_splits(120, seed=99):
        for text in (prefix, middle, suffix):
            assert tok.decode(tok.encode(text, leading_space=False)) == text
            assert tok.decode(tok.encode(text)) == (" " + text if text else "")
        ids = tok.encode(middle, leading_space=False) + [eot]
        stream = StreamDetokenizer(tok)
        assert "".join(stream.push(i) for i in ids) + stream.flush() == middle
        psm = template.fim_ids(prefix, suffix, "psm")
        assert psm == [tok.bos_id, pre, *tok.encode(prefix), suf, *tok.encode(suffix, leading_space=False), mid]
