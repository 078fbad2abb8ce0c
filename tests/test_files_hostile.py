"""Hostile files, on the real server over stdio: a 20 MB file, one-line minified JavaScript, binary files,
Latin-1 and invalid UTF-8 on disk, CRLF, tabs, zero-length files.

Promises: the workspace index and every request survive them (an answer, possibly empty, or a clean error),
the prompt stays within ``context_tokens``, and completions are served within their time budget."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import pytest
from pygls.exceptions import JsonRpcException

sys.path.insert(0, str(Path(__file__).parent))
from lsp_client import inline, lsp_session, open_document, raw_request, to_plain  # noqa: E402

pytestmark = pytest.mark.slow

CONTEXT_TOKENS = 1024
TIMEOUT_S = 10.0


def hostile_workspace(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "huge": root / "huge.py",
        "minified": root / "bundle.min.js",
        "binary": root / "blob.py",
        "png": root / "image.png",
        "latin1": root / "latin1.py",
        "invalid": root / "invalid.py",
        "crlf": root / "crlf.py",
        "tabs": root / "tabs.go",
        "empty": root / "empty.py",
    }
    line = "def function_{0}(value):\n    return value * {0} + len('padding padding padding')\n\n"
    with open(files["huge"], "w") as fh:
        i = 0
        while fh.tell() < 20 * 2**20:
            fh.write(line.format(i))
            i += 1
    files["minified"].write_text("".join(f"var a{i}=function(b){{return b*{i}}};" for i in range(40_000)))
    files["binary"].write_bytes(bytes(range(256)) * 64)
    files["png"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 2048)
    files["latin1"].write_bytes("# caf\xe9 na\xefve\ndef r\xe9sum\xe9():\n    return 'd\xe9j\xe0 vu'\n".encode("latin-1"))
    files["invalid"].write_bytes(b"def ok():\n    return '\xc3\x28 \xff\xfe'\n")
    files["crlf"].write_bytes(b"def a():\r\n    x = 1\r\n    return x\r\n\r\ndef b():\r\n    return ")
    files["tabs"].write_text("package main\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n\t\t")
    files["empty"].write_bytes(b"")
    return files


async def prompt_at(client, uri: str, line: int, character: int) -> dict:
    return to_plain(await raw_request(client, "codellama/prompt", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character}}, timeout=120))


async def timed_inline(client, uri: str, line: int, character: int):
    started = time.monotonic()
    result = await asyncio.wait_for(inline(client, uri, line, character), 120)
    return result, time.monotonic() - started


async def test_hostile_files_are_survived_within_budgets(tiny_model_dir, tmp_path):
    home = tmp_path / "home"
    files = hostile_workspace(home / "workspace")
    options = {"maxTokens": 8, "contextTokens": CONTEXT_TOKENS, "completionTimeoutS": TIMEOUT_S}
    async with lsp_session(home, model=tiny_model_dir, init_options=options) as client:
        await client.notes.wait_ready()
        with contextlib.suppress(TimeoutError):  # the index must survive the files; it may take a while
            await client.notes.wait_log("indexed", timeout=90)

        # Opened in the editor: the text comes from the client.
        opened = {
            "huge": (files["huge"].read_text(), "python"),
            "minified": (files["minified"].read_text(), "javascript"),
            "crlf": (files["crlf"].read_bytes().decode(), "python"),
            "tabs": (files["tabs"].read_text(), "go"),
            "empty": ("", "python"),
        }
        for name, (text, language) in opened.items():
            uri = files[name].as_uri()
            open_document(client, uri, text, language)
            lines = text.split("\n") if "\r\n" not in text else text.split("\r\n")
            line = len(lines) // 2 if name == "huge" else len(lines) - 1
            character = len(lines[line]) if name != "minified" else len(lines[0]) // 2
            plan = await prompt_at(client, uri, line, character)
            if plan:  # None: no completion at this position
                assert len(plan["prompt_ids"]) <= CONTEXT_TOKENS, (name, len(plan["prompt_ids"]))
            result, elapsed = await timed_inline(client, uri, line, character)
            assert elapsed < TIMEOUT_S + 5, f"{name}: {elapsed:.1f} s"
            for item in result.items:
                assert "\x00" not in item.insert_text

        # Never opened, read from disk by the server: bad encodings and binaries get a clean answer.
        for name in ("latin1", "invalid", "binary", "png"):
            uri = files[name].as_uri()
            try:
                plan = await prompt_at(client, uri, 1, 4)
            except JsonRpcException as exc:
                assert "cannot read" in str(exc) or "not read" in str(exc), str(exc)
            else:
                assert len(plan["prompt_ids"]) <= CONTEXT_TOKENS
            result, _ = await timed_inline(client, uri, 1, 4)
            assert result is not None

        pong = to_plain(await raw_request(client, "codellama/ping", {}))
        assert pong["state"] == "ready"
