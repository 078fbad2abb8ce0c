"""Prompt packing with the real Code Llama tokenizer and template: budgets, layout, healing, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from codellama_lsp.config import Settings
from codellama_lsp.context.prompt import PREFIX_GRID_DIVISOR, SPECIAL_TOKENS_RESERVE, build_prompt, comment_lines
from codellama_lsp.context.retrieval import Retriever
from codellama_lsp.context.syntax import DocumentTrees
from codellama_lsp.context.workspace import WorkspaceIndex

from shared_data import TOKENIZER_DIR, needs_shared, write

pytestmark = needs_shared


@pytest.fixture(scope="module")
def tokenizer():
    from codellama_lsp.engine.tokenizer import load_tokenizer

    return load_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def template(tokenizer):
    from codellama_lsp.engine.templates import template_for

    return template_for(tokenizer, model_name="codellama/CodeLlama-7b-hf")


BODY = "".join(f"def helper_{i}(value):\n    return value * {i} + len(str(value))\n\n\n" for i in range(150))
CURRENT = ("from .models import make_user\n\n\n" + BODY +
           "def register(name):\n    user = make_user(name)\n    <CURSOR>\n\n\ndef tail():\n    return 0\n")


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, "pkg/__init__.py", "")
    write(root, "pkg/models.py", "class User:\n    pass\n\n\ndef make_user(name):\n    return User()\n")
    write(root, "pkg/app.py", CURRENT.replace("<CURSOR>", ""))
    return root


@pytest.fixture()
def retriever(repo, tmp_path):
    index = WorkspaceIndex([repo], tmp_path / "cache", watch=False).start()
    yield Retriever(index)
    index.stop()


def at_cursor(text: str = CURRENT) -> tuple[str, int]:
    return text.replace("<CURSOR>", ""), text.index("<CURSOR>")


def plan_for(template, tokenizer, retriever=None, *, budget=4096, text=None, offset=None, path=None, **kw):
    if text is None:
        text, offset = at_cursor()
    return build_prompt(text=text, offset=offset, path=path, language_id="python", template=template,
                        tokenizer=tokenizer, settings=Settings(context_tokens=budget, **kw.pop("settings", {})),
                        retriever=retriever, **kw)


@pytest.mark.parametrize("budget", [256, 1024, 4096, 16384])
def test_budget_is_never_exceeded(repo, template, tokenizer, retriever, budget):
    plan = plan_for(template, tokenizer, retriever, budget=budget, path=str(repo / "pkg/app.py"))
    assert len(plan.prompt_ids) <= budget
    assert plan.prefix_tokens + plan.suffix_tokens + plan.context_tokens <= budget
    if budget >= 1024:
        assert plan.snippets, "room for repository context"
        assert plan.suffix_tokens > 0


def test_prompt_ids_are_exactly_the_templates(repo, template, tokenizer, retriever):
    plan = plan_for(template, tokenizer, retriever, path=str(repo / "pkg/app.py"))
    assert plan.prompt_ids == template.fim_ids(plan.context_text + plan.prefix, plan.suffix, "spm")


def test_no_line_is_tokenized_twice_for_one_prompt():
    """The budget counts the document's lines one by one (``Tokenizer.count_line``) through the line cache the
    final encode of the prompt uses, so the ids do not tokenize those lines a second time (before: each line the
    budget took was tokenized twice)."""
    from codellama_lsp.engine.templates import template_for
    from codellama_lsp.engine.tokenizer import load_tokenizer

    fresh = load_tokenizer(TOKENIZER_DIR)  # empty caches
    raw, seen = fresh._text, []

    class Recording:
        def __getattr__(self, name):
            return getattr(raw, name)

        def encode(self, text, **kwargs):
            seen.append(text.removeprefix("\u2581").removesuffix("\n"))
            return raw.encode(text, **kwargs)

    fresh._text = Recording()
    text, offset = at_cursor()
    plan = build_prompt(text=text, offset=offset, path=None, language_id="python",
                        template=template_for(fresh, model_name="codellama/CodeLlama-7b-hf"), tokenizer=fresh,
                        settings=Settings(context_tokens=1024))
    assert plan.prefix_tokens > 500 and len(seen) > 50
    cursor_line = text[:offset].rsplit("\n", 1)[-1]  # token healing encodes the cursor's line on its own
    assert sorted(t for t in set(seen) if seen.count(t) > 1 and t != cursor_line) == []


def test_count_line_agrees_with_encode(tokenizer):
    for line in _LINES + [x + "\n" for x in _LINES]:
        assert tokenizer.count_line(line) == len(tokenizer.encode(line, leading_space=False)), repr(line)


_LINES = ["", " ", "x = 1", "    return value * 3 + len(str(value))", "# \u00e9t\u00e9 \U0001f600", "\t\tif a:",
          "<PRE> not a control token", "a" * 200]


def test_snippets_are_comment_blocks_with_path_most_relevant_last(repo, template, tokenizer, retriever):
    plan = plan_for(template, tokenizer, retriever, path=str(repo / "pkg/app.py"))
    data = plan.to_json()
    assert data["fim_mode"] == "spm"
    assert {"prompt", "prompt_ids", "fim_mode", "snippets", "prefix_tokens", "suffix_tokens",
            "context_tokens"} <= set(data)
    last = data["snippets"][-1]
    assert last["reason"].startswith("definition of make_user") and last["path"] == "pkg/models.py"
    assert set(last) == {"path", "start_line", "end_line", "reason", "tokens"}
    header = f"# pkg/models.py:{last['start_line']}-{last['end_line']}\n# def make_user(name):"
    assert header in data["prompt"]
    # the block sits before the document prefix, closest snippet right above it
    assert data["prompt"].index(header) < data["prompt"].index("def register(name):")
    assert plan.context_tokens == sum(s["tokens"] for s in data["snippets"])


def test_comment_syntax_per_language():
    assert comment_lines("a\nb", "python") == "# a\n# b"
    assert comment_lines("a", "rust") == "// a"
    assert comment_lines("a", "lua") == "-- a"
    assert comment_lines("a", "html") == "<!--\na\n-->"


def test_large_budget_includes_whole_file(repo, template, tokenizer, retriever):
    small = plan_for(template, tokenizer, retriever, budget=1024, path=str(repo / "pkg/app.py"))
    large = plan_for(template, tokenizer, retriever, budget=16384, path=str(repo / "pkg/app.py"))
    assert len(small.prefix) < len(large.prefix)
    assert large.prefix.startswith("from .models import make_user")
    assert small.prefix.endswith("user = make_user(name)\n") and small.heal_prefix == "    "


def test_successive_keystrokes_share_a_long_prefix(repo, template, tokenizer, retriever):
    text, offset = at_cursor()
    first = plan_for(template, tokenizer, retriever, text=text, offset=offset, path=str(repo / "pkg/app.py"),
                     settings={"fim_mode": "psm"})
    typed = text[:offset] + "us" + text[offset:]
    second = plan_for(template, tokenizer, retriever, text=typed, offset=offset + 2, path=str(repo / "pkg/app.py"),
                      settings={"fim_mode": "psm"})
    shared = next((i for i, (a, b) in enumerate(zip(first.prompt_ids, second.prompt_ids)) if a != b),
                  min(len(first.prompt_ids), len(second.prompt_ids)))
    assert [s.to_json() for s in first.snippets] == [s.to_json() for s in second.snippets]
    assert shared >= len(first.prompt_ids) - len(tokenizer.encode(first.suffix, leading_space=False)) - 12


def test_typing_at_the_end_of_a_long_file_rarely_moves_the_prefix_start(template, tokenizer):
    """A file longer than the budget: the prefix is the tail that fits. If its first line followed every
    keystroke, the SPM prompt's prefix would change at its start (a re-prefill of the whole prefix) every
    few keystrokes; snapped to a grid of lines, it moves seldom, by whole steps, and never overflows."""
    text = BODY
    typed = "def fresh(value):\n    total = value * 3 + len(str(value))\n    return total\n\n\n" * 6
    starts, lengths = [], []
    for i in range(0, len(typed), 3):
        doc = text + typed[:i]
        plan = plan_for(template, tokenizer, budget=1024, text=doc, offset=len(doc))
        if plan is None:
            continue
        assert len(plan.prompt_ids) <= 1024
        start = len(doc) - len(plan.heal_prefix) - len(plan.prefix)
        starts.append(doc.count("\n", 0, start))
        lengths.append(plan.prefix_tokens)
    moves = sum(a != b for a, b in zip(starts, starts[1:]))
    assert len(starts) > 100 and 1 <= moves <= 4, (moves, sorted(set(starts)))
    grid = (1024 - SPECIAL_TOKENS_RESERVE) // PREFIX_GRID_DIVISOR
    assert all(line % grid == 0 for line in starts)
    assert min(lengths) > 0.6 * max(lengths)  # snapping costs at most a grid step of context


def test_token_healing_in_spm_only(template, tokenizer):
    text = "import os\nvalue = os.pa"
    plan = plan_for(template, tokenizer, text=text, offset=len(text))
    assert plan.heal_prefix == "pa" and plan.prefix.endswith("os.")
    plan = plan_for(template, tokenizer, text=text, offset=len(text), settings={"fim_mode": "psm"})
    assert plan.fim_mode == "psm" and plan.heal_prefix == "" and plan.prefix.endswith("os.pa")


@pytest.mark.parametrize("mode", ["spm", "psm"])
def test_the_indentation_of_an_empty_line_is_healed_in_both_layouts(template, tokenizer, mode):
    text = "def f(x):\n    \n\nprint(f(1))\n"
    offset = text.index("    \n") + 4
    plan = plan_for(template, tokenizer, text=text, offset=offset, settings={"fim_mode": mode})
    assert plan.heal_prefix == "    " and plan.prefix.endswith("def f(x):\n")
    # code after the cursor on the line: no healing, the prompt keeps the spaces
    typed = text[:offset] + "x" + text[offset:]
    plan = plan_for(template, tokenizer, text=typed, offset=offset, settings={"fim_mode": mode})
    assert plan is None or plan.heal_prefix == ""


def test_no_prompt_inside_an_identifier(template, tokenizer):
    text = "value = compute(1)\n"
    assert plan_for(template, tokenizer, text=text, offset=text.index("pute")) is None


def test_an_invoked_completion_inside_an_identifier_gets_a_prompt_that_may_span_lines(template, tokenizer):
    # the user asked: the rest of the line is completed, and (issue 18) the answer may go on to further lines
    text = "value = compute(1)\n"
    plan = plan_for(template, tokenizer, text=text, offset=text.index("pute"), invoked=True)
    assert plan is not None and plan.multiline
    assert plan.prefix.endswith("value = com") and "mid-line" in plan.reason


def test_left_to_right_models_get_prefix_only(tokenizer):
    from codellama_lsp.engine.templates import template_for

    plain = template_for(tokenizer, model_name="codellama/CodeLlama-7b-Instruct-hf", fim=False)
    text, offset = at_cursor()
    plan = plan_for(plain, tokenizer, text=text, offset=offset)
    assert plan.fim_mode == "none" and plan.suffix == "" and plan.suffix_tokens == 0
    assert plan.prompt_ids == plain.prefix_ids(plan.prefix)


def test_multiline_and_tree_from_document_trees(template, tokenizer, tmp_path):
    text = "def f(x):\n    if x:\n"
    path = tmp_path / "m.py"
    trees = DocumentTrees()
    trees.update(path.as_uri(), text, "python")
    plan = plan_for(template, tokenizer, text=text, offset=len(text) - 1, path=str(path), trees=trees)
    assert plan.multiline and plan.max_new_tokens == 128
    text2 = "x = compute(1, \n"
    plan = plan_for(template, tokenizer, text=text2, offset=len(text2) - 1)
    assert not plan.multiline and plan.stop_strings == ["\n"] and plan.max_new_tokens <= 64


class RepoTemplate:
    """A family with a native repository format: records what it was given."""

    fim = True
    repo_format = True
    family = "repo-test"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = []

    def resolve_mode(self, mode):
        return mode

    def fim_ids(self, prefix, suffix, mode="spm", *, repo_files=None, path=None):
        self.calls.append((prefix, repo_files, path))
        return self.tokenizer.encode((repo_files and "".join(t for _, t in repo_files) or "") + prefix + suffix)


def test_repo_format_families_get_files_not_comments(repo, tokenizer, retriever):
    tpl = RepoTemplate(tokenizer)
    plan = plan_for(tpl, tokenizer, retriever, path=str(repo / "pkg/app.py"))
    prefix, repo_files, path = tpl.calls[-1]
    assert plan.snippets and repo_files == [(s.path, s.text) for s in plan.snippets]
    assert path == "pkg/app.py"
    assert "# pkg/models.py" not in prefix and plan.context_text == ""


SECRETS = ["AKIAIOSFODNN7EXAMPLE", "sk-live-0123456789abcdefghijklmn", "hunter2hunter2", "BEGINKEYMATERIAL",
           "env-file-secret-value", "credentials-file-value", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"]


def test_planted_secrets_never_reach_a_prompt(tmp_path, template, tokenizer):
    root = tmp_path / "repo"
    # secret files that define and mention exactly what the cursor uses
    write(root, ".env", "def make_user(name):\n    return 'env-file-secret-value'\n")
    write(root, "credentials.py", "def make_user(name):\n    return 'credentials-file-value'\n")
    write(root, "id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\nBEGINKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n")
    write(root, "deploy/server.pem", "make_user register BEGINKEYMATERIAL\n")
    # ordinary files with secret lines next to what the cursor uses
    write(root, "pkg/__init__.py", "")
    write(root, "pkg/models.py", "AWS_KEY = 'AKIAIOSFODNN7EXAMPLE'\n\n\ndef make_user(name):\n"
                                 "    password = \"hunter2hunter2\"\n    return name\n")
    write(root, "pkg/similar.py", "def register_other(name):\n    user = make_user(name)\n"
                                  "    token = 'ghp_abcdefghijklmnopqrstuvwxyz0123456789'\n    return user\n")
    current = ("from .models import make_user\nSTRIPE = 'sk-live-0123456789abcdefghijklmn'\n\n"
               "def register(name):\n    user = make_user(name)\n    ")
    path = write(root, "pkg/app.py", current)
    index = WorkspaceIndex([root], tmp_path / "cache", watch=False).start()
    try:
        retriever = Retriever(index)
        open_docs = {str(root / ".env"): "make_user register env-file-secret-value\n",
                     str(root / "pkg/similar.py"): (root / "pkg/similar.py").read_text()}
        edits = [(str(root / "credentials.py"), 0, 1), (str(root / "pkg/models.py"), 0, 4)]
        for budget in (1024, 4096, 16384):
            for mode in ("spm", "psm"):
                plan = plan_for(template, tokenizer, retriever, budget=budget, text=current, offset=len(current),
                                path=str(path), open_documents=open_docs, recent_edits=edits,
                                settings={"fim_mode": mode})
                shown = plan.to_json()["prompt"] + "".join(s.text for s in plan.snippets)
                assert plan.snippets
                assert "make_user" in shown
                for secret in SECRETS:
                    assert secret not in shown, (secret, budget, mode)
                assert not any(s.path in (".env", "credentials.py", "id_rsa", "deploy/server.pem")
                               for s in plan.snippets)
    finally:
        index.stop()
