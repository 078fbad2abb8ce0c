"""Token healing ends the prompt on a boundary of the model's own tokenization, for every template family.

At random cursor positions in real files (Python stdlib and non-Python sources, the corpus of
test_templates.py), biased to where typing happens (after a word, a space, ``.``, ``(``, a tab, indentation),
the prompt must be one the model saw in training: the ids of its prefix segment are exactly a prefix of the
model's own encoding of the full text before the cursor, and the healed text (which the output is constrained
to start with) is exactly the decoded rest. Families: the shared Code Llama tokenizer, the demo model's, and
the synthetic StarCoder2 / DeepSeek / Qwen / Codestral / plain tokenizers test_templates.py builds; layouts
SPM, PSM and left to right.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from codellama_lsp.config import Settings
from codellama_lsp.context.prompt import build_prompt, heal_length
from codellama_lsp.engine.templates import template_for
from codellama_lsp.engine.tokenizer import load_tokenizer

from shared_data import TOKENIZER_DIR, needs_shared
from test_templates import corpus_files, synthetic_families

POSITIONS = 500  # per family, each tried in every layout
DEMO_DIR = Path(__file__).resolve().parent.parent / "codellama_lsp" / "models" / "demo"
LANGUAGES = {"py": "python", "pyi": "python", "lua": "lua", "c": "c", "h": "c", "js": "javascript", "css": "css"}


def cursor_positions(count: int, seed: int = 18) -> list[tuple[str, int, str]]:
    """(text, offset, language id): half uniformly random, half right after a word, a blank, ``.``, ``(``, a
    tab or an indentation (the positions healing is for)."""
    rng = random.Random(seed)
    texts = []
    for path in corpus_files():
        try:
            texts.append((path.read_text(encoding="utf-8"), LANGUAGES.get(path.suffix[1:], "")))
        except (OSError, UnicodeDecodeError):
            continue
    out = []
    while len(out) < count:
        text, language = rng.choice(texts)
        start = rng.randrange(max(1, len(text) - 3000))
        text = text[start : start + 3000]
        offset = rng.randrange(len(text) + 1)
        if len(out) % 2:
            kind = rng.choice(["word", "blank", ".", "(", "\t", "indent"])
            probe = {"word": lambda i: text[i - 1 : i].isalnum() and not text[i : i + 1].isalnum(),
                     "blank": lambda i: text[i - 1 : i] == " " and text[i - 2 : i - 1] not in (" ", "\n"),
                     ".": lambda i: text[i - 2 : i - 1] == "." and text[i - 1 : i].isalpha(),
                     "(": lambda i: text[i - 2 : i - 1] == "(" and text[i - 1 : i].isalpha(),
                     "\t": lambda i: text[i - 1 : i] == "\t",
                     "indent": lambda i: text[i - 1 : i] == " " and text[text.rfind("\n", 0, i) + 1 : i].strip() == ""}
            found = [i for i in range(offset, min(len(text), offset + 2000)) if probe[kind](i)]
            if found:
                offset = found[0]
        if text[offset:].startswith("\n") and rng.random() < 0.3:
            text = text[:offset] + "\n" + text[offset:].lstrip("\n")
        out.append((text, offset, language))
    return out


@pytest.fixture(scope="module")
def positions():
    return cursor_positions(POSITIONS)


def _families(tmp_path_factory) -> dict[str, object]:
    tokenizers = {}
    if TOKENIZER_DIR.is_dir():
        tokenizers["codellama"] = load_tokenizer(TOKENIZER_DIR)
    if (DEMO_DIR / "tokenizer.json").is_file():
        tokenizers["demo"] = load_tokenizer(DEMO_DIR)
    for family, files in synthetic_families().items():
        dest = tmp_path_factory.mktemp(f"heal-{family}")
        for name, text in files.items():
            (dest / name).write_text(text, encoding="utf-8")
        tokenizers[family] = load_tokenizer(dest)
    return tokenizers


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return _families(tmp_path_factory)


NAMES = {"codellama": "codellama/CodeLlama-7b-hf", "demo": "demo", "starcoder2": "bigcode/starcoder2-3b",
         "deepseek": "deepseek-ai/deepseek-coder-1.3b-base", "qwen": "Qwen/Qwen2.5-Coder-1.5B",
         "codestral": "mistralai/Codestral-22B-v0.1", "plain": "gpt2"}


@needs_shared
@pytest.mark.parametrize("family", list(NAMES))
def test_the_prompt_is_a_prefix_of_the_models_own_encoding(tokenizers, positions, family):
    if family not in tokenizers:
        pytest.skip(f"no {family} tokenizer here")
    tok = tokenizers[family]
    infilling = template_for(tok, model_name=NAMES[family])
    left_to_right = template_for(tok, model_name=NAMES[family], fim=False)
    layouts = [(infilling, "spm"), (infilling, "psm"), (left_to_right, "none")]
    healed = checked = 0
    words_healed = words = 0
    for text, offset, language in positions:
        for template, mode in layouts:
            plan = build_prompt(text=text, offset=offset, path=None, language_id=language, template=template,
                                tokenizer=tok, settings=Settings(context_tokens=512, fim_mode=mode), invoked=True)
            if plan is None:
                continue
            heal = plan.heal_prefix
            segment = plan.context_text + plan.prefix
            before = text[:offset]
            assert before.endswith(plan.prefix + heal), (family, mode, before[-40:])
            own = tok.encode(segment + heal)  # the model's own encoding of the text before the cursor
            ids = tok.encode(segment)
            assert own[: len(ids)] == ids, (family, plan.fim_mode, before[-40:], heal)
            assert tok.decode(own[len(ids):]) == heal, (family, plan.fim_mode, before[-40:], heal)
            if ids:  # and those ids are what the prompt holds
                run = plan.prompt_ids
                assert any(run[i : i + len(ids)] == ids for i in range(len(run) - len(ids) + 1))
            checked += 1
            healed += bool(heal)
            line = before[before.rfind("\n") + 1 :]
            after = text[offset : offset + 1]
            if plan.fim_mode in ("spm", "none") and line[-1:].isascii() and line[-1:].isalpha() and not (
                    after.isalnum() or after == "_"):
                words += 1
                words_healed += bool(heal) and heal.rstrip().endswith(line.split()[-1][-1:])
    assert checked >= POSITIONS * 2
    assert healed >= checked // 20, "healing should be common at typing positions"
    assert words and words_healed / words > 0.95, (words_healed, words)


@needs_shared
def test_a_word_after_a_space_drops_the_whole_token(tokenizers):
    """The issue's case: ``already be|`` must not leave a lone ``▁`` at the prompt's end."""
    tok = tokenizers["codellama"]
    template = template_for(tok, model_name="codellama/CodeLlama-7b-hf")
    cases = {"# The import lock may already be": " be", "import os\nvalue = os.pa": "pa", "x = foo(ba": "ba",
             "def f(x):\n    if ": " ", "def f(x):\n    return ": " ", "def f(x):\n\t\tretu": "retu",
             "def f(x):\n    ": "    "}
    for before, heal in cases.items():
        plan = build_prompt(text=before + "\n", offset=len(before), path=None, language_id="python",
                            template=template, tokenizer=tok, settings=Settings(fim_mode="spm"), invoked=True)
        assert plan.heal_prefix == heal, before
        assert tok.piece(plan.prompt_ids[-1]) != "▁", before
    assert heal_length(tok, "x = 1", 0) == 0 and heal_length(tok, "", 3) == 0
