"""GGUF files without llama.cpp: the demo model's conversion, metadata reading, and the tokenizer rebuilt from a
GGUF vocabulary (it must give the same ids as the model's ``tokenizer.json`` and as SentencePiece itself)."""

from __future__ import annotations

import inspect
import json
import random
import textwrap

import pytest

from codellama_lsp.engine.backend import ModelLoadError
from codellama_lsp.engine.gguf_file import config_from_metadata, load_gguf_tokenizer, read_metadata, tokenizer_spec
from codellama_lsp.engine.tokenizer import Tokenizer, load_tokenizer
from shared_data import SMOLLM2_GGUF, TOKENIZER_DIR, needs_shared, needs_smollm2

gguf = pytest.importorskip("gguf", reason="the gguf package (pip install gguf) writes GGUF files")

SOURCE = inspect.getsource(textwrap) + inspect.getsource(json.decoder)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    from codellama_lsp.engine.gguf_convert import demo_gguf

    return demo_gguf(tmp_path_factory.mktemp("gguf"))


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randrange(len(SOURCE))
        out.append(SOURCE[start : start + rng.randrange(1, 300)])
    return out


def test_demo_conversion_metadata(demo_file):
    meta = read_metadata(demo_file)
    assert meta["general.architecture"] == "llama" and meta["GGUF.tensor_count"] == 38
    assert meta["tokenizer.ggml.fim_pre_token_id"] == 4092 and meta["tokenizer.ggml.eot_token_id"] == 4095
    config = config_from_metadata(meta)
    assert config["preferred_fim_mode"] == "spm" and config["preferred_context_tokens"] == 1024
    assert config["max_position_embeddings"] == 16384


def test_demo_conversion_is_cached_by_content(tmp_path):
    from codellama_lsp.engine.gguf_convert import demo_gguf

    first = demo_gguf(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert demo_gguf(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.part"))


def test_tokenizer_from_the_demo_gguf_equals_its_tokenizer_json(demo_file):
    ours = load_gguf_tokenizer(demo_file)
    from codellama_lsp.engine.loading import DEMO_DIR

    reference = load_tokenizer(DEMO_DIR)
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (reference.bos_id, reference.eos_id, reference.vocab_size)
    assert ours.token_id("▁<PRE>") == reference.token_id("▁<PRE>") == 4092
    for text in random_texts(300):
        for lead in (True, False):
            assert ours.encode(text, leading_space=lead) == reference.encode(text, leading_space=lead), text
        ids = reference.encode(text)
        assert ours.decode(ids) == reference.decode(ids)


def test_merges_derived_from_scores_match_the_stored_ones(demo_file):
    """A third-party SentencePiece GGUF has scores but no merges: the derived merges must tokenize alike."""
    meta = read_metadata(demo_file)
    del meta["tokenizer.ggml.merges"]
    derived = Tokenizer(json.dumps(tokenizer_spec(meta)), hf=False, bos_token="<s>", eos_token="</s>")
    stored = load_gguf_tokenizer(demo_file)
    for text in random_texts(200, seed=1):
        assert derived.encode(text) == stored.encode(text), text


@needs_shared
def test_code_llama_vocabulary_as_gguf_matches_sentencepiece(tmp_path):
    """Meta's tokenizer.model written as a GGUF vocabulary (pieces, scores, types: what a Code Llama GGUF
    holds) and rebuilt here gives SentencePiece's ids (Meta's reference ``encode``/``encode_infilling``)."""
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER_DIR / "tokenizer.model"))
    n = sp.vocab_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    added = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())["added_tokens"]
    extra = sorted((t["id"], t["content"]) for t in added if t["id"] >= n)
    out = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces + [c for _, c in extra])
    writer.add_token_scores([sp.get_score(i) for i in range(n)] + [0.0] * len(extra))
    writer.add_token_types(types + [3] * len(extra))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    ours = load_gguf_tokenizer(out)
    assert ours.token_id("▁<PRE>") == 32007 and ours.token_id("▁<EOT>") == 32010
    for text in random_texts(300, seed=2):
        assert ours.encode(text) == sp.encode(text), text
        # Meta's encode_infilling: encode "☺" + text and drop the leading "▁☺" pieces
        assert ours.encode(text, leading_space=False) == sp.encode("☺" + text)[2:], text

    # whole FIM prompts, both layouts, on 300 random splits of real files: Meta's construction
    from test_templates import make_splits, ref_fim

    from codellama_lsp.engine.templates import template_for

    template = template_for(ours, model_name="codellama/CodeLlama-7b-hf")
    for prefix, _middle, suffix in make_splits(300, seed=21):
        for mode in ("spm", "psm"):
            assert template.fim_ids(prefix, suffix, mode) == ref_fim(sp, prefix, suffix, suffix_first=mode == "spm")


@needs_smollm2
def test_smollm2_tokenizer_from_its_gguf():
    tok = load_gguf_tokenizer(SMOLLM2_GGUF)
    assert tok.kind == "byte-level BPE" and tok.vocab_size == 49152
    assert tok.token_id("<|im_start|>") == 1 and tok.eos_id == 2
    for text in random_texts(100, seed=3):
        assert tok.decode(tok.encode(text)) == text
    assert "<|im_start|>" in (tok.chat_template or "")


def test_not_a_gguf_and_truncated_files_are_one_line_errors(tmp_path, demo_file):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        read_metadata(junk)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(demo_file.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="truncated") as info:
        read_metadata(cut)
    assert "\n" not in str(info.value)
