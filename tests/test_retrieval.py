"""Retrieval: which snippets a cursor gets, why, within budget, deduplicated and in a stable order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codellama_lsp.context.retrieval import TIERS, BM25Windows, Retriever, split_terms
from codellama_lsp.context.workspace import WorkspaceIndex

from shared_data import write


def words(text: str) -> int:
    """Stand-in token counter (the real tokenizer is exercised in test_prompt)."""
    return len(text.split()) + 1


APP = '''from .models import User, make_user
from . import helpers
import pkg.config as cfg


def register(name):
    user = make_user(name)
    slug = helpers.slugify(name)
    if cfg.load():
        <CURSOR>
    return user
'''


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, "pkg/__init__.py", "")
    write(root, "pkg/models.py", "class User:\n    def __init__(self, name):\n        self.name = name\n\n\n"
                                 "def make_user(name):\n    return User(name)\n")
    write(root, "pkg/helpers.py", "def slugify(text):\n    return text.lower().replace(' ', '-')\n")
    write(root, "pkg/config.py", "DEBUG = False\n\n\ndef load():\n    return {'debug': DEBUG}\n")
    write(root, "pkg/other.py", "def unrelated_thing():\n    return 42\n")
    write(root, "pkg/app.py", APP.replace("<CURSOR>", "pass"))
    return root


@pytest.fixture()
def index(repo, tmp_path):
    idx = WorkspaceIndex([repo], tmp_path / "cache", watch=False).start()
    yield idx
    idx.stop()


def cursor(text: str = APP) -> tuple[str, int]:
    return text.replace("<CURSOR>", ""), text.index("<CURSOR>")


def test_split_terms_splits_identifiers():
    assert split_terms("getUserName(user_id)") == ["getusername", "get", "user", "name", "user_id", "user", "id"]
    assert "self" not in split_terms("self.value = None")


def test_bm25_ranks_matching_windows_first_and_updates():
    bm = BM25Windows(window_lines=3, stride=3)
    bm.set_file("a.py", "def parse_config(path):\n    return read(path)\n\n")
    bm.set_file("b.py", "def render_page(html):\n    return html\n\n")
    hits = bm.search(split_terms("config = parse_config(p)"), k=5)
    assert hits and hits[0][1].path == "a.py"
    bm.set_file("a.py", None)
    assert all(w.path != "a.py" for _, w in bm.search(split_terms("parse_config"), k=5))
    assert bm.paths() == ["b.py"]


def test_definitions_of_imported_names_near_cursor(repo, index):
    text, offset = cursor()
    path = str(repo / "pkg/app.py")
    snippets = Retriever(index).snippets(path, text, offset, budget_tokens=2000, count_tokens=words)
    by_reason = {s.reason: s for s in snippets}
    make = by_reason["definition of make_user (imported from .models)"]
    assert (make.path, make.start_line, make.end_line) == ("pkg/models.py", 6, 7)
    assert "def make_user(name):" in make.text
    assert any(s.reason == "definition of cfg.load" and s.path == "pkg/config.py" for s in snippets)
    assert any(s.reason == "definition of helpers.slugify" and s.path == "pkg/helpers.py" for s in snippets)
    assert all(s.tokens == words(s.text) for s in snippets)


def test_budget_is_respected_and_strongest_kept(repo, index):
    text, offset = cursor()
    path = str(repo / "pkg/app.py")
    retriever = Retriever(index)
    full = retriever.snippets(path, text, offset, budget_tokens=5000, count_tokens=words)
    small = Retriever(index).snippets(path, text, offset, budget_tokens=20, count_tokens=words)
    assert sum(s.tokens for s in small) <= 20
    assert len(small) < len(full)
    assert all(s.reason.startswith("definition") for s in small)


def test_prompt_order_puts_strongest_last_and_is_stable(repo, index):
    text, offset = cursor()
    path = str(repo / "pkg/app.py")
    retriever = Retriever(index)
    first = retriever.snippets(path, text, offset, budget_tokens=5000, count_tokens=words)
    tiers = [TIERS[_tier(s.reason)] for s in first]
    assert tiers == sorted(tiers), "least relevant tier first, definitions nearest the cursor"
    # typing on in the same scope keeps the snippets that are still chosen in the same order
    typed = text[:offset] + "user.name = slug" + text[offset:]
    second = retriever.snippets(path, typed, offset + len("user.name = slug"), budget_tokens=5000,
                                count_tokens=words)
    kept = [(s.path, s.start_line) for s in second if (s.path, s.start_line) in {(f.path, f.start_line) for f in first}]
    assert kept == [(s.path, s.start_line) for s in first if (s.path, s.start_line) in set(kept)]
    assert kept[: len(kept)] == [(s.path, s.start_line) for s in second][: len(kept)]


def _tier(reason: str) -> str:
    if reason.startswith("definition"):
        return "definition"
    if reason.startswith(("imported", "outline")):
        return "import"
    return reason


def test_nothing_repeats_the_visible_text(repo, index):
    text, offset = cursor()
    path = str(repo / "pkg/app.py")
    edits = [(path, 6, 7), (str(repo / "pkg/other.py"), 0, 1)]
    snippets = Retriever(index).snippets(path, text, offset, recent_edits=edits, budget_tokens=5000,
                                         count_tokens=words)
    assert not any(s.path == "pkg/app.py" for s in snippets), "the whole current file is visible"
    assert any(s.reason == "recent edit" and s.path == "pkg/other.py" for s in snippets)
    # with only the cursor's neighbourhood visible, an edit above it is context worth showing
    snippets = Retriever(index).snippets(path, text, offset, recent_edits=edits, budget_tokens=5000,
                                         count_tokens=words, visible=(text.index("def register"), len(text)))
    assert not any(s.path == "pkg/app.py" and s.reason == "recent edit" for s in snippets)
    top = text.index("def register")
    snippets = Retriever(index).snippets(path, text, offset, recent_edits=[(path, 0, 0)], budget_tokens=5000,
                                         count_tokens=words, visible=(top, len(text)))
    assert any(s.path == "pkg/app.py" and s.reason == "recent edit" for s in snippets)
    no_overlap = {}
    for s in snippets:
        for a, b in no_overlap.get(s.path, []):
            assert s.end_line < a or s.start_line > b
        no_overlap.setdefault(s.path, []).append((s.start_line, s.end_line))


def test_open_documents_use_unsaved_text_and_skip_secrets(repo, index):
    text, offset = cursor()
    path = str(repo / "pkg/app.py")
    unsaved = "def register_audit(name, user, slug):\n    audit_log(user, slug)\n"
    docs = {str(repo / "pkg/other.py"): unsaved, str(repo / ".env"): "register user slug SECRET=abc\n"}
    snippets = Retriever(index).snippets(path, text, offset, open_documents=docs, budget_tokens=5000,
                                         count_tokens=words)
    opened = [s for s in snippets if s.reason == "open document"]
    assert opened and opened[0].path == "pkg/other.py" and "register_audit" in opened[0].text
    assert not any(".env" in s.path or "SECRET" in s.text for s in snippets)


def test_similar_code_from_other_files(repo, index, tmp_path):
    write(repo, "pkg/twin.py", "def register_admin(name):\n    user = make_user(name)\n"
                               "    slug = helpers.slugify(name)\n    return user\n")
    idx = WorkspaceIndex([repo], tmp_path / "cache2", watch=False).start()
    text, offset = cursor()
    snippets = Retriever(idx).snippets(str(repo / "pkg/app.py"), text, offset, budget_tokens=5000,
                                       count_tokens=words)
    assert any(s.reason == "similar code" and s.path == "pkg/twin.py" for s in snippets)


def test_without_index_and_on_bad_input(repo):
    retriever = Retriever(None)
    text, offset = cursor()
    assert retriever.snippets(None, text, offset, budget_tokens=100, count_tokens=words) == []
    assert retriever.snippets("x.py", "", 10**6, budget_tokens=100, count_tokens=words) == []
    assert retriever.snippets("x.py", text, -5, budget_tokens=0, count_tokens=words) == []
    docs = {"/elsewhere/notes.py": "def register(name):\n    user = make_user(name)\n"}
    got = retriever.snippets(str(repo / "pkg/app.py"), text, offset, open_documents=docs, budget_tokens=500,
                             count_tokens=words)
    assert [s.reason for s in got] == ["open document"]


def test_index_updates_reach_bm25(repo, tmp_path):
    idx = WorkspaceIndex([repo], tmp_path / "cache3", watch=False).start()
    retriever = Retriever(idx).warm()
    write(repo, "pkg/late.py", "def register_late(name):\n    user = make_user(name)\n    slug = helpers.slugify(name)\n")
    assert idx.refresh([str(repo / "pkg/late.py")])  # what the watcher does; listeners update the retriever
    text, offset = cursor()
    snippets = retriever.snippets(str(repo / "pkg/app.py"), text, offset, budget_tokens=5000, count_tokens=words)
    assert any(s.path == "pkg/late.py" for s in snippets)
    os.remove(repo / "pkg/late.py")
    assert idx.refresh([str(repo / "pkg/late.py")])
    snippets = retriever.snippets(str(repo / "pkg/app.py"), text, offset, budget_tokens=5000, count_tokens=words)
    assert not any(s.path == "pkg/late.py" for s in snippets)
