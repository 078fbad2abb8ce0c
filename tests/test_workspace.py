"""The workspace index: what may be read, definitions per language, persistence, live updates, redaction."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from codellama_lsp.context.workspace import (
    WorkspaceIndex,
    extract_definitions,
    is_secret_path,
    parse_imports,
    redact_secrets,
)

from shared_data import write

DEFINITIONS = {
    "python": ("CONST = 1\nclass User:\n    def name(self):\n        return 1\ndef make():\n    pass\n",
               {("CONST", "constant"), ("User", "class"), ("name", "method"), ("make", "function")}),
    "javascript": ("const LIMIT = 3;\nfunction helper(a) { return a; }\nclass Widget { render() {} }\n",
                   {("LIMIT", "constant"), ("helper", "function"), ("Widget", "class"), ("render", "method")}),
    "typescript": ("interface Shape { area(): number }\ntype Id = string;\nenum Color { Red }\n"
                   "export function build(): Id { return ''; }\nclass Box { size(): number { return 1; } }\n",
                   {("Shape", "interface"), ("Id", "type"), ("Color", "type"), ("build", "function"),
                    ("Box", "class"), ("size", "method"), ("area", "method")}),
    "tsx": ("export function App() { return <div/>; }\n", {("App", "function")}),
    "java": ("class Account {\n  static final int MAX = 3;\n  Account() {}\n  int balance() { return 0; }\n}\n"
             "interface Repo {}\n",
             {("Account", "class"), ("MAX", "constant"), ("balance", "method"), ("Repo", "interface")}),
    "c": ("#define SIZE 4\nstruct point { int x; };\ntypedef int handle;\nint area(int w) { return w; }\n",
          {("SIZE", "constant"), ("point", "type"), ("handle", "type"), ("area", "function")}),
    "cpp": ("namespace geo {\nclass Shape { public: int sides() { return 0; } };\n}\nint Shape_count() { return 1; }\n",
            {("geo", "module"), ("Shape", "class"), ("sides", "method"), ("Shape_count", "function")}),
    "csharp": ("class Order {\n  public int Total { get; set; }\n  public void Ship() {}\n}\ninterface IStore {}\n",
               {("Order", "class"), ("Total", "constant"), ("Ship", "method"), ("IStore", "interface")}),
    "php": ("<?php\nfunction greet($n) { return $n; }\nclass Cart { function add() {} }\n",
            {("greet", "function"), ("Cart", "class"), ("add", "method")}),
    "bash": ("deploy() {\n  echo hi\n}\nfunction build {\n  echo b\n}\n", {("deploy", "function"), ("build", "function")}),
    "go": ("package m\nconst Max = 3\ntype Server struct{}\nfunc (s *Server) Start() {}\nfunc New() *Server { return nil }\n",
           {("Max", "constant"), ("Server", "type"), ("Start", "method"), ("New", "function")}),
    "rust": ("const LIMIT: u32 = 3;\nstruct Point { x: i32 }\ntrait Draw { fn draw(&self); }\n"
             "impl Point { fn norm(&self) -> i32 { 0 } }\nfn main() {}\n",
             {("LIMIT", "constant"), ("Point", "type"), ("Draw", "interface"), ("draw", "method"),
              ("norm", "function"), ("main", "function")}),
}


@pytest.mark.parametrize("language", sorted(DEFINITIONS))
def test_tag_queries_find_definitions(language):
    source, expected = DEFINITIONS[language]
    found = {(d.name, d.kind) for d in extract_definitions(source, language, "f")}
    assert expected <= found, f"missing {expected - found}"


def test_definition_lines_are_one_based_and_inclusive():
    defs = extract_definitions("x = 1\n\ndef f():\n    return 2\n", "python", "m.py")
    f = next(d for d in defs if d.name == "f")
    assert (f.start_line, f.end_line) == (3, 4)


SECRET_NAMES = [".env", ".env.production", "id_rsa", "id_ed25519.pub", "server.pem", "tls.key", "cert.p12",
                "credentials.json", "aws_credentials.py", "my_secret.py", ".npmrc", ".netrc", "store.pfx"]


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, "pkg/__init__.py", "from .models import User\n")
    write(root, "pkg/models.py", "class User:\n    def name(self):\n        return 'u'\n\ndef make_user():\n"
                                  "    return User()\n")
    write(root, "pkg/util.js", "export function helper(a) { return a + 1; }\n")
    write(root, "src/main.go", "package main\nfunc Run() {}\n")
    write(root, ".gitignore", "ignored_dir/\n*.log.py\n")
    write(root, "ignored_dir/hidden.py", "def hidden(): pass\n")
    write(root, "notes.log.py", "def logged(): pass\n")
    write(root, "sub/.gitignore", "local.py\n")
    write(root, "sub/local.py", "def local(): pass\n")
    write(root, "sub/kept.py", "def kept(): pass\n")
    write(root, ".ignore", "skipme.py\n")
    write(root, "skipme.py", "def skipme(): pass\n")
    for name in SECRET_NAMES:
        write(root, f"conf/{name}", "def leaked(): pass\nAPI_KEY = 'hunter2-very-secret'\n")
    write(root, "blob.py", b"def blob():\n    pass\n\x00\x01\x02")
    write(root, "app.min.js", "function m(){return 1}" * 50)
    write(root, "wide.js", "var x = [" + "1," * 4000 + "];\n")
    write(root, "api_pb2.py", "def generated(): pass\n")
    write(root, "gen.py", "# @generated by a tool\ndef generated_too(): pass\n")
    write(root, "huge.py", "def huge(): pass\n" + "# padding line\n" * 80_000)
    write(root, "node_modules/lib/index.js", "function vendored() {}\n")
    write(root, "dist/out.js", "function built() {}\n")
    write(root, ".git/hooks/pre-commit.py", "def hook(): pass\n")
    return root


EXPECTED = {"pkg/__init__.py", "pkg/models.py", "pkg/util.js", "src/main.go", "sub/kept.py"}


def rel_files(index: WorkspaceIndex, root: Path) -> set[str]:
    real = os.path.realpath(root)
    return {os.path.relpath(p, real).replace(os.sep, "/") for p in index.files()}


def test_index_honours_ignores_and_skips_unreadable_kinds(repo, tmp_path):
    index = WorkspaceIndex([repo], tmp_path / "cache", watch=False).start()
    assert rel_files(index, repo) == EXPECTED
    assert [d.kind for d in index.definitions("User")] == ["class"]
    assert index.definitions("hidden") == [] and index.definitions("leaked") == []


def test_is_allowed(repo, tmp_path):
    index = WorkspaceIndex([repo], tmp_path / "cache", watch=False).start()
    assert index.is_allowed(repo / "pkg/models.py")
    for rel in ["ignored_dir/hidden.py", "notes.log.py", "sub/local.py", "skipme.py", "blob.py", "app.min.js",
                "wide.js", "api_pb2.py", "gen.py", "huge.py", "node_modules/lib/index.js", "dist/out.js",
                *[f"conf/{n}" for n in SECRET_NAMES]]:
        assert not index.is_allowed(repo / rel), rel
    assert not index.is_allowed(tmp_path / "outside.py")
    assert index.read_text(str(repo / "conf/.env")) is None


@pytest.mark.parametrize("name", SECRET_NAMES + ["deploy/.ssh/config", "/home/u/.aws/config", "db_password.txt"])
def test_secret_paths(name):
    assert is_secret_path(name)


@pytest.mark.parametrize("name", ["models.py", "tokenizer.py", "keyboard.js", "README.md", "environment.py"])
def test_ordinary_paths_are_not_secret(name):
    assert not is_secret_path(name)


def test_index_persists_across_restarts(repo, tmp_path):
    cache = tmp_path / "cache"
    first = WorkspaceIndex([repo], cache, watch=False).start()
    assert first.stats["parsed"] == len(EXPECTED)
    second = WorkspaceIndex([repo], cache, watch=False).start()
    assert second.stats["parsed"] == 0 and second.stats["from_cache"] == len(EXPECTED)
    assert [d.name for d in second.definitions("make_user")] == ["make_user"]
    # a file changed while the server was down is re-parsed, and only that one
    write(repo, "pkg/models.py", "class User:\n    pass\n\ndef make_admin():\n    return User()\n")
    third = WorkspaceIndex([repo], cache, watch=False).start()
    assert third.stats["parsed"] == 1
    assert third.definitions("make_user") == [] and len(third.definitions("make_admin")) == 1


def _wait_for(index: WorkspaceIndex, predicate, timeout: float = 10.0) -> bool:
    """Block until ``predicate()`` holds after an index update (event-driven, no polling sleeps)."""
    done = threading.Event()

    def listener(_paths):
        if predicate():
            done.set()

    index.add_listener(listener)
    try:
        return predicate() or done.wait(timeout)
    finally:
        index.remove_listener(listener)


def test_watcher_keeps_index_current(repo, tmp_path):
    index = WorkspaceIndex([repo], tmp_path / "cache").start()
    try:
        write(repo, "pkg/extra.py", "def fresh_function():\n    return 1\n")
        assert _wait_for(index, lambda: len(index.definitions("fresh_function")) == 1)
        write(repo, "pkg/extra.py", "def renamed_function():\n    return 1\n")
        assert _wait_for(index, lambda: index.definitions("fresh_function") == [] and
                         len(index.definitions("renamed_function")) == 1)
        os.remove(repo / "pkg/extra.py")
        assert _wait_for(index, lambda: index.definitions("renamed_function") == [])
        # a secret file appearing is never indexed
        write(repo, "pkg/.env.local", "def leaked(): pass\n")
        write(repo, "pkg/after.py", "def after_secret(): pass\n")
        assert _wait_for(index, lambda: len(index.definitions("after_secret")) == 1)
        assert index.definitions("leaked") == []
    finally:
        index.stop()


def test_ignore_file_change_triggers_rescan(repo, tmp_path):
    index = WorkspaceIndex([repo], tmp_path / "cache").start()
    try:
        write(repo, ".gitignore", "ignored_dir/\n*.log.py\npkg/util.js\n")
        assert _wait_for(index, lambda: str(os.path.realpath(repo / "pkg/util.js")) not in index.files())
    finally:
        index.stop()


@pytest.mark.parametrize(
    "line,secret",
    [
        ('aws_key = "AKIAIOSFODNN7EXAMPLE"', "AKIAIOSFODNN7EXAMPLE"),
        ("OPENAI = 'sk-proj-abcdefghijklmnopqrstuvwxyz012345'", "sk-proj-abcdefghijklmnopqrstuvwxyz012345"),
        ("token: ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("SLACK = 'xoxb-123456789012-abcdefghij'", "xoxb-123456789012-abcdefghij"),
        ('password = "hunter2hunter2"', "hunter2hunter2"),
        ('db = {"password": "correct horse"}', "correct horse"),
        ("client_secret='s3cr3t-value'", "s3cr3t-value"),
        ("url = 'postgres://admin:pa55word@db.local/app'", "pa55word"),
        ("HF = 'hf_abcdefghijklmnopqrstuvwxyzABCDEFGH'", "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH"),
    ],
)
def test_redact_secret_lines(line, secret):
    text = f"def f():\n    pass\n{line}\nx = 1\n"
    out = redact_secrets(text)
    assert secret not in out and "<redacted>" in out
    assert out.count("\n") == text.count("\n")
    assert out.startswith("def f():\n    pass\n") and out.endswith("x = 1\n")


def test_redact_private_key_block_keeps_line_count():
    text = "a = 1\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234\nabcd\n-----END RSA PRIVATE KEY-----\nb = 2\n"
    out = redact_secrets(text)
    assert "MIIEpAIBAAKCAQEA1234" not in out and "abcd" not in out
    assert out.count("\n") == text.count("\n") and out.startswith("a = 1\n") and out.endswith("b = 2\n")


def test_redact_leaves_ordinary_code_alone():
    text = "tokens = tokenize(text)\nkey = 'name'\npassword_field = form.get('password')\nsk = 3\n"
    assert redact_secrets(text) == text


def test_parse_imports_python_and_js():
    py = parse_imports("from .models import User, make_user as mk\nimport pkg.util as u\nimport os, sys\n", "python")
    assert py[0].module == ".models" and ("mk", "make_user") in py[0].names
    assert any(i.alias == "u" and i.module == "pkg.util" for i in py)
    js = parse_imports("import { helper, other as o } from './util';\nconst x = require('../lib/x');\n",
                       "javascript")
    assert js[0].module == "./util" and ("o", "other") in js[0].names
    assert any(i.module == "../lib/x" for i in js)


def test_a_change_lost_in_an_inotify_queue_overflow_is_picked_up_by_a_rescan(repo, tmp_path):
    """A big ``git checkout`` can overflow the kernel's inotify queue: its events are lost and one IN_Q_OVERFLOW
    comes instead. The lost change here is made through a hard link outside the watched tree (inotify reports a
    write only under the path it was made through: no event reaches the index, as if dropped); then the overflow
    event is handed to the live observer the way its reader hands the kernel's. The index rescans, has the
    change, and re-reads only that file (mtime + size say the others are unchanged)."""
    index = WorkspaceIndex([repo], tmp_path / "cache").start()
    try:
        fd = getattr(index._observer, "_inotify_fd", None)
        if not index.watching or fd is None:
            pytest.skip("no inotify observer here (watchdog 7.1 on Linux reports queue overflows)")
        from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent

        outside = tmp_path / "checkout-elsewhere.py"
        os.link(repo / "pkg/models.py", outside)
        parsed = index.stats["parsed"]
        outside.write_text("def checked_out():\n    return 2\n")  # same inode: pkg/models.py changed, unreported
        fd.handle_event(InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b""))
        assert _wait_for(index, lambda: len(index.definitions("checked_out")) == 1)
        assert index.definitions("make_user") == [] and index.stats["parsed"] == parsed + 1
        assert index.stats["watch_overflows"] == 1
    finally:
        index.stop()
