"""The real server on the llama.cpp runtime with a real instruct model (SmolLM2-135M-Instruct, Q4_1 GGUF):
chat and Explain answer in English and stream, inline completion works left to right (no FIM tokens), and
the server process never imports torch or transformers (a ``sitecustomize`` in the child refuses them)."""

from __future__ import annotations

import os
import re

import pytest
import pytest_asyncio

from shared_data import REPO, SMOLLM2_GGUF, needs_smollm2

try:
    import llama_cpp  # noqa: F401
except ImportError:  # pragma: no cover
    llama_cpp = None

pytestmark = [
    needs_smollm2,
    pytest.mark.skipif(llama_cpp is None, reason="llama-cpp-python is not installed (pip install -e \".[gguf]\")"),
]

CODE = '''def average(values):
    """The mean of a list of numbers."""
    total = 0
    for value in values:
        total += value
    return total / len(values)


def greet(name):
    return "Hello, " + name
'''
ENGLISH = {"the", "a", "of", "is", "this", "function", "and", "to", "it", "list", "returns", "numbers", "code",
           "average", "in", "that", "values"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory):
    from test_llamacpp import BLOCKER

    from lsp_client import lsp_session, to_plain

    home = tmp_path_factory.mktemp("smollm2-srv")
    site = home / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    record = home / "imports.txt"
    record.write_text("")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "CODELLAMA_LSP_TEST_IMPORTS")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), saved["PYTHONPATH"] or ""])
    os.environ["CODELLAMA_LSP_TEST_IMPORTS"] = str(record)
    try:
        async with lsp_session(home, model=SMOLLM2_GGUF, init_options={"repoContext": False, "nThreads": 1,
                                                                       "chatMaxTokens": 48, "maxTokens": 16}) as c:
            await c.notes.wait_ready()
            c.chunks = []

            @c.feature("codellama/chatChunk")
            def on_chunk(params) -> None:
                c.chunks.append(to_plain(params))

            c.imports = record
            yield c
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def english(text: str) -> bool:
    words = re.findall(r"[a-z]+", text.lower())
    return len(words) >= 5 and len(set(words) & ENGLISH) >= 3


async def request(client, method, params, timeout=120):
    from lsp_client import raw_request, to_plain

    return to_plain(await raw_request(client, method, params, timeout))


@pytest.mark.asyncio(loop_scope="module")
async def test_status_names_the_llamacpp_runtime(client):
    ready = [s for s in client.notes.statuses if s.get("state") == "ready"]
    assert ready and ready[-1]["runtime"] == "llamacpp"


@pytest.mark.asyncio(loop_scope="module")
async def test_chat_answers_in_english_and_streams(client, tmp_path):
    from lsp_client import open_document

    uri = (tmp_path / "stats.py").as_uri()
    open_document(client, uri, CODE)
    answer = await request(client, "codellama/chat", {
        "messages": [{"role": "user", "content": "What does the average function do?"}],
        "textDocument": {"uri": uri},
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 5, "character": 30}},
    })
    assert english(answer["text"]), answer["text"]
    mine = [c for c in client.chunks if c["conversationId"] == answer["conversationId"]]
    assert len(mine) >= 3 and "".join(c["text"] for c in mine) == answer["text"]


@pytest.mark.asyncio(loop_scope="module")
async def test_explain_answers_in_english_and_streams(client, tmp_path):
    from lsp_client import open_document

    path = tmp_path / "explain.py"
    open_document(client, path.as_uri(), CODE)
    result = await request(client, "workspace/executeCommand", {
        "command": "codellama.explain",
        "arguments": [path.as_uri(), {"start": {"line": 0, "character": 0}, "end": {"line": 5, "character": 30}}, 1]})
    assert english(result["text"]), result["text"]
    mine = [c for c in client.chunks if c["conversationId"] == result["conversationId"]]
    assert len(mine) >= 3 and "".join(c["text"] for c in mine) == result["text"]


@pytest.mark.asyncio(loop_scope="module")
async def test_inline_completion_left_to_right(client, tmp_path):
    from lsp_client import inline, open_document

    uri = (tmp_path / "greet.py").as_uri()
    text = CODE + "\n\ndef farewell(name):\n    return "
    open_document(client, uri, text)
    lines = text.split("\n")
    result = await inline(client, uri, len(lines) - 1, len(lines[-1]))
    assert result.items and result.items[0].insert_text.strip()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_server_never_imported_torch(client):
    assert client.imports.read_text() == ""
