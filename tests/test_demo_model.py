"""The bundled demo model: it loads like Code Llama, tokenizes like Code Llama, and really infills.

Why these tests: every end-to-end test and a fresh install depend on this checkpoint. If it stops
loading through ``from_pretrained``, loses an infilling piece, or forgets how to stop with
``▁<EOT>``, everything downstream fails in confusing ways; these tests say exactly what broke.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "codellama_lsp" / "models" / "demo"
INFILL = ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")

pytestmark = pytest.mark.skipif(not (DEMO / "model.safetensors").is_file(), reason="demo checkpoint not built")


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(DEMO, dtype=torch.float32, local_files_only=True).eval()


@pytest.fixture(scope="module")
def hf_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO, add_prefix_space=False, local_files_only=True)


def test_checkpoint_is_small_llama_in_safetensors(model):
    files = {p.name: p.stat().st_size for p in DEMO.iterdir() if p.is_file()}
    assert "model.safetensors" in files and not any(n.endswith((".bin", ".pt")) for n in files)
    assert sum(files.values()) <= 20 * 1024 * 1024, files
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.rope_parameters["rope_theta"] == 1_000_000.0
    assert model.config.max_position_embeddings >= 4096
    assert (DEMO / "TRAINING.md").is_file()


def test_tokenizer_is_code_llama_shaped(hf_tok, model):
    cfg = json.loads((DEMO / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "CodeLlamaTokenizer"
    assert type(hf_tok).__name__ == "CodeLlamaTokenizer"
    assert [hf_tok.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "</s>")] == [0, 1, 2]
    ids = [hf_tok.convert_tokens_to_ids(p) for p in INFILL]
    assert len(set(ids)) == 4 and all(0 < i < model.config.vocab_size for i in ids)
    assert set(ids) <= set(hf_tok.all_special_ids)
    # Plain text that merely looks like the markers never produces them.
    text = "s = '<PRE> <SUF> <MID> <EOT>'  # PRE SUF MID EOT\n"
    assert not set(ids) & set(hf_tok(" " + text, add_special_tokens=False).input_ids)


def test_tokenizer_round_trips_code_and_bytes(hf_tok):
    text = "    def f(self, x):\n\treturn {'é': x ** 2}  # ☺ 漢字\n"
    ids = hf_tok(" " + text, add_special_tokens=False).input_ids
    assert hf_tok.decode(ids) == text  # Strip decoder drops exactly the implicit leading space
    assert "<unk>" not in hf_tok.convert_ids_to_tokens(ids)  # byte fallback covers everything


def test_project_wrapper_builds_meta_prompts(hf_tok):
    """The runtime's own prompt builder must give this model the layout it was trained on."""
    from codellama_lsp.engine.templates import template_for
    from codellama_lsp.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(DEMO)
    tmpl = template_for(tok)
    assert tmpl.family == "codellama" and tmpl.fim
    pre, suf, mid, eot = (hf_tok.convert_tokens_to_ids(p) for p in INFILL)
    assert eot in tmpl.fim_stop_ids

    def enc(s, lead):
        return hf_tok((" " + s) if lead else s, add_special_tokens=False).input_ids if s else []

    prefix, suffix = "def area(r):\n    return 3.14 * r", "\n\nprint(area(2))\n"
    assert tmpl.fim_ids(prefix, suffix, mode="psm") == [1, pre] + enc(prefix, True) + [suf] + enc(suffix, False) + [mid]
    assert tmpl.fim_ids(prefix, suffix, mode="spm") == [1, pre, suf] + enc(suffix, False) + [mid] + enc(prefix, True)


# A single-line hole in a held-out standard-library file (tests/data/demo_fim_case.json). The tiny model
# stops with ▁<EOT> on about 70% of such holes in PSM order and rarely in SPM order (see
# bench/results/demo_model_eval.md), so this is a regression case, not a quality claim.
CASE = json.loads((Path(__file__).resolve().parent / "data" / "demo_fim_case.json").read_text(encoding="utf-8"))


def test_greedy_psm_infill_stops_with_eot_and_parses(model, hf_tok):
    import torch

    pre, suf, mid, eot = (hf_tok.convert_tokens_to_ids(p) for p in INFILL)
    prefix, suffix = CASE["prefix"], CASE["suffix"]
    ast.parse(prefix + CASE["expected"] + suffix)  # the excerpt itself is valid Python
    prompt = ([1, pre] + hf_tok(" " + prefix, add_special_tokens=False).input_ids + [suf]
              + hf_tok(suffix, add_special_tokens=False).input_ids + [mid])
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=48, do_sample=False, eos_token_id=[eot, 2], pad_token_id=2)
    new = out[0, len(prompt):].tolist()
    assert new and new[-1] == eot, f"no ▁<EOT> within 48 tokens: {hf_tok.decode(new)!r}"
    anchor = hf_tok.convert_tokens_to_ids("▁a")
    middle = hf_tok.decode([anchor] + new[:-1])[1:]
    assert middle.strip() and middle.count("\n") == 1, middle
    ast.parse(prefix + middle + suffix)
