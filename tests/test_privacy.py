"""Privacy promises, checked on a real server over stdio:

- a full session (workspace index, completions, prompt, chat) opens no network socket — a socket guard
  (``codellama_lsp.netguard``, installed by a ``sitecustomize`` before anything else is imported) records
  every attempt, and there must be none;
- planted secrets (key files, ``.env``, API keys and private-key blocks inside ordinary files) never reach a
  prompt: neither the prompt text ``codellama/prompt`` shows nor the token ids actually fed to the model;
- no file outside the workspace folders is read through a request (``file:///…/outside``, ``..`` tricks,
  a symlink out of the project), for completion, prompt and chat alike;
- the log file holds no document text at the default log level.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest
from pygls.exceptions import JsonRpcException

from codellama_lsp import netguard

sys.path.insert(0, str(Path(__file__).parent))
import lsp_client  # noqa: E402
from lsp_client import inline, log_file, lsp_session, open_document, raw_request, to_plain  # noqa: E402

pytestmark = pytest.mark.slow

AWS_KEY = "AKIAZ7QEXAMPLE4PLANTED"
OPENAI_KEY = "sk-planted0123456789abcdefABCDEFsecret"
KEY_BODY = "MIIEplantedPRIVATEkeyMATERIALdoNotLeak0123456789"
ENV_TOKEN = "envTokenPlanted987654321"
OUTSIDE_MARKER = "OUTSIDE_THE_WORKSPACE_marker_31337"
DOC_MARKER = "unique_document_marker_8842"
SECRETS = (AWS_KEY, OPENAI_KEY, KEY_BODY, ENV_TOKEN)


def plant_workspace(root: Path, outside: Path) -> None:
    """A project with secrets in key files and inside ordinary code, and a file outside it."""
    (root / "pkg").mkdir(parents=True)
    (root / ".env").write_text(f"DATABASE_TOKEN={ENV_TOKEN}\n")
    (root / "id_rsa").write_text(f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\n")
    (root / "pkg" / "settings.py").write_text(
        "import os\n\n"
        f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n'
        f'OPENAI_API_KEY = "{OPENAI_KEY}"\n'
        f'PEM = """-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----"""\n\n'
        "def database_url(host):\n    return f'postgres://{host}/app'\n")
    (root / "pkg" / "client.py").write_text(
        "from pkg.settings import database_url, OPENAI_API_KEY\n\n"
        "def connect(host):\n    url = database_url(host)\n    return url\n")
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "notes.py").write_text(f"# {OUTSIDE_MARKER}\ndef outside():\n    return '{OUTSIDE_MARKER}'\n")
    (root / "linked_out.py").symlink_to(outside / "notes.py")


def guard_dir(tmp: Path, record: Path) -> Path:
    """A directory with a ``sitecustomize`` that installs the socket guard in every Python started with
    it on PYTHONPATH (the server under test)."""
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from codellama_lsp import netguard\nnetguard.install_from_env()\n")
    return site


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"planted secret {secret!r} reached the prompt"
    assert OUTSIDE_MARKER not in text


def test_netguard_refuses_and_records(tmp_path):
    """The guard itself: a TCP connect and a DNS lookup are refused and recorded; a Unix socket is not."""
    import socket
    import subprocess

    record = tmp_path / "net.log"
    code = (
        "import socket\nfrom codellama_lsp import netguard\nnetguard.install_from_env()\n"
        "for f in (lambda: socket.create_connection(('127.0.0.1', 9)), lambda: socket.getaddrinfo('example.com', 80),\n"
        "          lambda: socket.socket().connect(('10.0.0.1', 80))):\n"
        "    try:\n        f()\n    except PermissionError:\n        pass\n"
        "a, b = socket.socketpair()\na.sendall(b'x')\nassert b.recv(1) == b'x'\n")
    env = {**__import__("os").environ, netguard.ENV_VAR: str(record)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    lines = netguard.attempts(record)
    assert [line.split()[0] for line in lines] == ["create_connection", "getaddrinfo", "connect"]
    assert socket.getaddrinfo is not None  # this process was never patched


async def test_full_session_sends_nothing_and_leaks_nothing(tiny_model_dir, tmp_path, monkeypatch):
    home, record = tmp_path / "home", tmp_path / "net.log"
    root, outside = home / "workspace", tmp_path / "outside"
    plant_workspace(root, outside)
    site = guard_dir(tmp_path, record)
    real_env = lsp_client.server_env

    def guarded_env(home_dir: Path) -> dict[str, str]:
        """The server's environment with the guard on, and without the offline switches the test suite sets:
        the server must keep itself offline."""
        env = real_env(home_dir)
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
            env.pop(var, None)
        env[netguard.ENV_VAR] = str(record)
        env["PYTHONPATH"] = str(site)
        return env

    monkeypatch.setattr(lsp_client, "server_env", guarded_env)

    async with lsp_session(home, model=tiny_model_dir, root=root, init_options={"maxTokens": 8}) as client:
        await client.notes.wait_ready()
        with contextlib.suppress(TimeoutError):  # retrieval has the project once it is indexed
            await client.notes.wait_log("indexed", timeout=60)

        uri = (root / "pkg" / "client.py").as_uri()
        text = (root / "pkg" / "client.py").read_text() + (
            f"\nSECRET_TOKEN = 'sk-{OPENAI_KEY[3:]}'\n# {DOC_MARKER}\ndef build(host):\n    return ")
        open_document(client, uri, text)
        last = text.count("\n")
        plan = to_plain(await raw_request(client, "codellama/prompt", {
            "textDocument": {"uri": uri}, "position": {"line": last, "character": 11}}))
        assert plan["prompt"], "an empty prompt proves nothing"
        assert "database_url" in plan["prompt"] or plan["snippets"] is not None
        assert_no_secret(plan["prompt"])
        from codellama_lsp.engine.tokenizer import load_tokenizer

        assert_no_secret(load_tokenizer(tiny_model_dir).decode(plan["prompt_ids"]))
        for snippet in plan["snippets"]:
            assert Path(snippet["path"]).name not in (".env", "id_rsa", "notes.py", "linked_out.py")

        await asyncio.wait_for(inline(client, uri, last, 11), 120)  # a real generation from that prompt

        # Files outside the workspace (or secret ones) are never read for a request.
        hostile = [outside / "notes.py", root / ".." / "outside" / "notes.py", root / "linked_out.py",
                   root / ".env", Path("/etc/passwd")]
        for path in hostile:
            target = path.as_uri() if path.is_absolute() and ".." not in path.parts else "file://" + str(path)
            with pytest.raises(JsonRpcException):
                await raw_request(client, "codellama/prompt", {
                    "textDocument": {"uri": target}, "position": {"line": 1, "character": 0}})
            result = await asyncio.wait_for(inline(client, target, 1, 0), 120)
            assert not result.items
            with pytest.raises(JsonRpcException) as err:
                await raw_request(client, "codellama/chat", {
                    "messages": [{"role": "user", "content": "Explain this."}],
                    "textDocument": {"uri": target}}, timeout=60)
            assert "not read" in str(err.value) or "cannot read" in str(err.value)

        answer = to_plain(await raw_request(client, "codellama/chat", {
            "messages": [{"role": "user", "content": "What does connect do?"}], "textDocument": {"uri": uri}},
            timeout=120))
        assert "text" in answer

    assert netguard.attempts(record) == [], "the session tried to open a network connection"
    log = log_file(home).read_text(encoding="utf-8")
    assert DOC_MARKER not in log and OPENAI_KEY not in log, "document text reached the log file"
    assert "completion" in log  # the log was written at all


def test_a_request_naming_a_path_with_a_nul_byte_is_refused_not_raised():
    """A chat or action request for ``file:///a%00b.py`` used to end in ValueError from os.path.realpath."""
    from types import SimpleNamespace

    from codellama_lsp.lsp.readguard import disk_read_refusal

    workspace = SimpleNamespace(folders={}, root_path="/tmp")
    assert disk_read_refusal("/tmp/a\0b.py", workspace) == "not a valid file path"
    assert disk_read_refusal("/tmp/ab.py", workspace) is None
