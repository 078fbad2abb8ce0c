"""The remote backend against a real llama.cpp server (the ``xllamacpp`` wheel) on 127.0.0.1, through
``codellama-lsp serve`` over LSP: inline completion, chat streaming, supersession, an API key, and the server
stopped mid-request then restarted.

The model is SmolLM2-135M-Instruct (real weights, ChatML, no FIM): left-to-right completion and chat. The local
side builds prompts with the model's own tokenizer, read from the same GGUF file the server runs (``model`` names
it), and detokenizes the returned ids.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from lsprotocol import types as lsp

from llamacpp_server import LlamaServer, xllamacpp_available
from shared_data import SMOLLM2_GGUF, needs_smollm2

pytestmark = [
    needs_smollm2,
    pytest.mark.skipif(not xllamacpp_available(), reason="xllamacpp (llama.cpp server wheel) is not installed"),
]

LIST_DOC = "numbers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, "


@pytest.fixture(scope="session")
def smol_model():
    """The ``model`` setting: the GGUF file the server runs (its tokenizer and chat template are read from it)."""
    return SMOLLM2_GGUF


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    server = LlamaServer(SMOLLM2_GGUF, log=tmp_path_factory.mktemp("llama") / "server.log")
    with server:
        yield server


def remote_options(url: str, **extra) -> dict:
    return {"backend": "llamacpp-server", "endpoint": url, "repoContext": False, **extra}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(smol_model, llama, tmp_path_factory):
    from lsp_client import lsp_session

    home = tmp_path_factory.mktemp("remote-srv")
    async with lsp_session(home, model=smol_model, init_options=remote_options(llama.url, maxTokens=400),
                           args=["--log-level", "debug"]) as c:
        await c.notes.wait_ready()
        c.home = home
        yield c


async def _complete(c, uri: str, text: str, version: int = 1):
    from lsp_client import inline, open_document

    if version == 1:
        open_document(c, uri, text)
    lines = text.split("\n")
    seen = len(c.notes.statuses)
    result = await inline(c, uri, len(lines) - 1, len(lines[-1]))
    status = await c.notes.wait_status(lambda s: s.get("uri") == uri and "stop_reason" in s, after=seen)
    return result, status


@pytest.mark.asyncio(loop_scope="module")
async def test_inline_completion_comes_from_the_server_with_its_cache_counted(client, llama, tmp_path):
    uri = (tmp_path / "nums.py").as_uri()
    result, status = await _complete(client, uri, LIST_DOC)
    assert status["source"] == "model" and status["generated_tokens"] > 0, status
    assert status["device"] == llama.url and status["prompt_tokens"] > 0
    assert result is not None and result.items and result.items[0].insert_text.startswith("13, 14"), result
    # the same prompt again (from a second document with the same text): the server's prefix cache serves it,
    # and its own counter (timings.cache_n) is what the status reports
    uri2 = (tmp_path / "nums2.py").as_uri()
    _, again = await _complete(client, uri2, LIST_DOC)
    assert again["reused_tokens"] >= again["prompt_tokens"] - 1 and again["prefill_tokens"] <= 1, again


@pytest.mark.asyncio(loop_scope="module")
async def test_chat_streams_a_real_answer(client):
    from test_chat import Chunks, chat

    chunks = getattr(client, "chunks", None) or Chunks(client)
    client.chunks = chunks
    answer = await chat(client, {"messages": [{"role": "user", "content": "In one sentence: what is a Python list?"}]},
                        timeout=120)
    parts = chunks.of(answer["conversationId"])
    assert len(parts) >= 2 and "".join(p["text"] for p in parts) == answer["text"]
    assert "list" in answer["text"].lower(), answer["text"]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_newer_keystroke_supersedes_a_running_request(client, tmp_path):
    from lsp_client import inline, open_document

    uri = (tmp_path / "nums.py").as_uri()
    open_document(client, uri, LIST_DOC)
    logs = len(client.notes.logs)
    seen = len(client.notes.statuses)
    first = asyncio.ensure_future(inline(client, uri, 0, len(LIST_DOC)))
    await client.notes.wait_log("decoding started", after=logs)  # the server is streaming tokens for it now
    text2 = LIST_DOC + "13, "
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text2)]))
    second = await inline(client, uri, 0, len(text2))
    await first
    await client.notes.wait_for(lambda: len([s for s in client.notes.statuses[seen:]
                                              if s.get("uri") == uri and "stop_reason" in s]) >= 2)
    statuses = [s for s in client.notes.statuses[seen:] if s.get("uri") == uri and "stop_reason" in s]
    assert statuses[0]["stop_reason"] in ("cancelled", "superseded"), statuses
    assert statuses[-1]["source"] == "model" and statuses[-1]["stop_reason"] not in ("cancelled", "superseded")
    assert second is not None


@pytest.mark.asyncio
async def test_the_api_key_comes_from_the_environment_and_is_never_logged(smol_model, tmp_path, monkeypatch):
    from lsp_client import log_file, lsp_session

    secret = "s3cret-team-key-1234"
    with LlamaServer(SMOLLM2_GGUF, api_key=secret) as server:
        monkeypatch.delenv("CODELLAMA_LSP_API_KEY", raising=False)
        async with lsp_session(tmp_path / "nokey", model=smol_model, init_options=remote_options(server.url)) as c:
            shown = await c.notes.wait_shown("API key")
            assert "HTTP 401" in shown and "\n" not in shown and secret not in shown
        monkeypatch.setenv("CODELLAMA_LSP_API_KEY", secret)
        home = tmp_path / "withkey"
        async with lsp_session(home, model=smol_model, init_options=remote_options(server.url, maxTokens=8),
                               args=["--log-level", "debug"]) as c:
            await c.notes.wait_ready()
            _, status = await _complete(c, (tmp_path / "a.py").as_uri(), LIST_DOC)
            assert status["source"] == "model" and status["generated_tokens"] > 0, status
        assert secret not in log_file(home).read_text(encoding="utf-8")


@pytest.mark.asyncio
async def test_server_stopped_mid_request_then_restarted(smol_model, tmp_path):
    from lsp_client import inline, lsp_session, open_document

    server = LlamaServer(SMOLLM2_GGUF).start()
    try:
        async with lsp_session(tmp_path / "srv", model=smol_model, init_options=remote_options(server.url, maxTokens=400),
                               args=["--log-level", "debug"]) as c:
            await c.notes.wait_ready()
            uri = (tmp_path / "nums.py").as_uri()
            open_document(c, uri, LIST_DOC)
            logs, seen = len(c.notes.logs), len(c.notes.statuses)
            pending = asyncio.ensure_future(inline(c, uri, 0, len(LIST_DOC)))
            await c.notes.wait_log("decoding started", after=logs)
            server.kill()  # the server dies while streaming
            result = await pending
            assert result is None or not result.items
            shown = await c.notes.wait_shown("inference server")
            assert server.url.split("//")[1] in shown and "\n" not in shown
            status = await c.notes.wait_status(lambda s: s.get("uri") == uri and "stop_reason" in s, after=seen)
            assert status["stop_reason"] == "engine_error" and "inference server" in status["error"]
            # still down: a clear "cannot reach" for the next request, and our server stays up
            seen = len(c.notes.statuses)
            await inline(c, uri, 0, len(LIST_DOC) - 1)
            status = await c.notes.wait_status(lambda s: s.get("uri") == uri and "stop_reason" in s, after=seen)
            assert "cannot reach" in status.get("error", ""), status
            server.start()  # the same port again
            seen = len(c.notes.statuses)
            await inline(c, uri, 0, len(LIST_DOC))
            status = await c.notes.wait_status(lambda s: s.get("uri") == uri and "stop_reason" in s, after=seen)
            assert status["source"] == "model" and status["generated_tokens"] > 0, status
    finally:
        server.stop()


def test_backend_messages_for_refused_connection_and_unknown_model(smol_model, llama):
    from codellama_lsp.config import Settings
    from codellama_lsp.engine import loading
    from codellama_lsp.engine.backend import ModelLoadError
    from llamacpp_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelLoadError, match="cannot reach the inference server .*connection refused"):
        loading.load_backend(Settings(model=str(smol_model), model_explicit=True, backend="openai", endpoint=dead))
    with pytest.raises(ModelLoadError, match="does not serve model 'codellama-70b'"):
        loading.load_backend(Settings(model=str(smol_model), model_explicit=True, backend="openai", endpoint=llama.url,
                                      remote_model="codellama-70b"))
    # a local tokenizer of another model: its ids would mean other tokens on the server
    with pytest.raises(ModelLoadError, match="49152-token vocabulary but the local tokenizer"):
        loading.load_backend(Settings(model="demo", backend="openai", endpoint=llama.url))


def test_detection_and_context_overflow_message(smol_model, tmp_path):
    from codellama_lsp.config import Settings
    from codellama_lsp.engine import loading
    from codellama_lsp.engine.backend import GenerationParams
    from codellama_lsp.engine.remote import RemoteError

    with LlamaServer(SMOLLM2_GGUF, n_ctx=256) as server:
        backend = loading.load_backend(Settings(model=str(smol_model), model_explicit=True, backend="openai",
                                                endpoint=server.url))
        try:
            assert backend.server.dialect == "llamacpp-server" and backend.server.returns_ids
            assert backend.server.context_window == 256 and backend.info.context_length == 256
            # every returned id is a generated token (prefill progress chunks carry none): text == decode(ids)
            result = backend.generate(backend.template.prefix_ids(LIST_DOC), GenerationParams(max_new_tokens=8))
            assert result.stats.stop_reason == "max_tokens" and len(result.token_ids) == 8, result
            assert result.text == backend.decode(result.token_ids) and result.text.startswith("13")
            ids = backend.encode("x = 1\n" * 200)
            with pytest.raises(RemoteError, match="does not fit the server's context window"):
                backend.generate(ids, GenerationParams(max_new_tokens=4))
            backend.server = type(backend.server)(**{**backend.server.describe(), "context_window": 0})
            with pytest.raises(RemoteError, match="context"):  # the server's own refusal, one line
                backend.generate(ids, GenerationParams(max_new_tokens=4))
        finally:
            backend.close()


def test_api_key_file_is_read_and_a_missing_one_is_a_clear_error(tmp_path):
    from codellama_lsp.config import Settings
    from codellama_lsp.engine.backend import ModelLoadError
    from codellama_lsp.engine.remote import read_api_key

    key = tmp_path / "key"
    key.write_text("abc123\n")
    assert read_api_key(Settings(api_key_file=str(key))) == "abc123"
    with pytest.raises(ModelLoadError, match="cannot read the API key file"):
        read_api_key(Settings(api_key_file=str(tmp_path / "missing")))


def test_complete_json_reports_the_server_reuse(smol_model, llama, tmp_path):
    import subprocess
    import sys

    from lsp_client import server_env

    src = tmp_path / "fib.py"
    src.write_text(LIST_DOC)
    config = tmp_path / "config.toml"
    config.write_text(f'backend = "llamacpp-server"\nendpoint = "{llama.url}"\nmax_tokens = 8\n')
    cmd = [sys.executable, "-m", "codellama_lsp", "complete", f"{src}:1:{len(LIST_DOC) + 1}", "--json", "--no-resident",
           "--no-repo-context", "--model", str(smol_model), "--config", str(config)]
    outs = []
    for _ in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=server_env(tmp_path / "home"))
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(proc.stdout))
    second = outs[1]
    blob = json.dumps(second)
    assert '"reused_tokens"' in blob
    stats = second.get("stats") or second.get("timings") or second
    reused = _find(second, "reused_tokens")
    prompt = _find(second, "prompt_tokens")
    assert reused is not None and prompt and reused >= prompt - 1, stats


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


@pytest.mark.asyncio
async def test_fim_completion_with_the_demo_model_as_gguf(tmp_path):
    """The bundled demo model (trained to infill) converted to GGUF and served: a completion between a prefix and a
    suffix goes out as Code Llama FIM ids built here and comes back as ids."""
    from lsp_client import inline, lsp_session, open_document

    from codellama_lsp.engine.gguf_convert import demo_gguf

    gguf = demo_gguf(tmp_path / "gguf")
    doc = "def add(a, b):\n    return \n\n\ndef sub(a, b):\n    return a - b\n"
    with LlamaServer(gguf) as server:
        async with lsp_session(tmp_path / "srv", model=gguf, init_options=remote_options(server.url, maxTokens=24)) as c:
            await c.notes.wait_ready()
            uri = (tmp_path / "m.py").as_uri()
            open_document(c, uri, doc)
            seen = len(c.notes.statuses)
            await inline(c, uri, 1, len("    return "))
            status = await c.notes.wait_status(lambda s: s.get("uri") == uri and "stop_reason" in s, after=seen)
            assert status["generated_tokens"] > 0 and status["stop_reason"] != "engine_error", status
            prompt = await raw_prompt(c, uri, 1, len("    return "))
            assert prompt["fim_mode"] in ("spm", "psm") and prompt["suffix_tokens"] > 0, prompt  # an infilling prompt


async def raw_prompt(c, uri: str, line: int, character: int) -> dict:
    from lsp_client import raw_request, to_plain

    return to_plain(await raw_request(c, "codellama/prompt", {"textDocument": {"uri": uri},
                                                               "position": {"line": line, "character": character}}))


def test_doctor_says_where_prompts_go_and_what_the_server_is(smol_model, llama, tmp_path):
    import subprocess
    import sys

    from lsp_client import server_env

    config = tmp_path / "config.toml"
    config.write_text(f'backend = "openai"\nendpoint = "{llama.url}"\n')
    env = {**server_env(tmp_path / "home"), "CODELLAMA_LSP_API_KEY": "k-never-printed"}
    cmd = [sys.executable, "-m", "codellama_lsp", "doctor", "--model", str(smol_model), "--config", str(config)]
    proc = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["prompts"]["destination"] == llama.url and "CODELLAMA_LSP_API_KEY" in report["prompts"]["api_key"]
    server = report["model"]["server"]
    assert server["dialect"] == "llamacpp-server" and server["returns_ids"] and server["prefix_cache"]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env).stdout
    assert f"prompts are sent to {llama.url} only (UNENCRYPTED http)" in text and "llamacpp-server serving" in text
    assert "k-never-printed" not in text + proc.stdout
    local = subprocess.run([sys.executable, "-m", "codellama_lsp", "doctor", "--json", "--no-load", "--model", "demo"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert json.loads(local.stdout)["prompts"]["destination"] == "this machine only"


def test_https_with_a_ca_bundle_and_an_untrusted_certificate(smol_model, llama, tmp_path):
    import shutil

    from codellama_lsp.config import Settings
    from codellama_lsp.engine import loading
    from codellama_lsp.engine.backend import GenerationParams, ModelLoadError
    from llamacpp_server import TLSProxy, self_signed_cert

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = self_signed_cert(tmp_path)
    with TLSProxy(llama.port, cert, key) as proxy:
        url = f"https://127.0.0.1:{proxy.port}"
        with pytest.raises(ModelLoadError, match="certificate not trusted; set `ca_bundle`"):
            loading.load_backend(Settings(model=str(smol_model), model_explicit=True, backend="openai", endpoint=url))
        backend = loading.load_backend(Settings(model=str(smol_model), model_explicit=True, backend="openai",
                                                endpoint=url, ca_bundle=str(cert)))
        try:
            result = backend.generate(backend.template.prefix_ids(LIST_DOC), GenerationParams(max_new_tokens=6))
            assert result.text.startswith("13") and backend.server.dialect == "llamacpp-server"
        finally:
            backend.close()


def test_typing_replay_slice_reuses_the_server_cache_and_matches_cache_prompt_off(tmp_path):
    """36 real keystrokes (typing, typos deleted again, cursor jumps) against a llama.cpp server serving the demo
    model as GGUF, every request awaited: consecutive keystrokes are served from the server's prefix cache (its own
    counters), and the suggestions are those of the same prompts with ``cache_prompt`` off, request by request."""
    import sys

    from codellama_lsp.engine.gguf_convert import demo_gguf

    from shared_data import REPO

    sys.path.insert(0, str(REPO / "bench"))
    import typing_replay

    name, session = next((n, s) for n, s in typing_replay.load_sessions(["encodings_cp850"]))
    sessions = [(name, dict(session, events=session["events"][:36]))]
    gguf = demo_gguf(tmp_path / "gguf")
    results = {}
    for label, config in (("cached", {"reuseCache": True}), ("uncached", {"reuseCache": False})):
        with LlamaServer(gguf) as server:
            results[label] = typing_replay.run_config(
                str(gguf), {"backend": "llamacpp-server", "endpoint": server.url, "fimMode": "spm", **config},
                sessions, home=tmp_path / label, paced=False, max_tokens=12, context_tokens=256)
    cached = [s for s in results["cached"]["runs"][name]["statuses"] if s.get("source") == "model"]
    uncached = [s for s in results["uncached"]["runs"][name]["statuses"] if s.get("source") == "model"]
    assert results["cached"]["tracebacks"] == [] == results["uncached"]["tracebacks"]
    assert len(cached) >= 5 and sum(s["reused_tokens"] > 0 for s in cached[1:]) >= 0.8 * len(cached[1:]), cached
    assert all(s["reused_tokens"] == 0 and s["prefill_tokens"] == s["prompt_tokens"] for s in uncached)
    outputs = typing_replay.compare_outputs(results["uncached"], results["cached"])
    assert outputs["compared"] == 36 and outputs["different"] == 0, outputs["examples"]
