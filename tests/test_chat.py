"""Chat: prompt assembly (token-exact template, history, context budget) and ``codellama/chat`` over LSP
against a real server: chunks in order, concatenating to the response; multi-turn history; cancel."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
import pytest_asyncio
from lsprotocol import types as lsp

from codellama_lsp.features.chat import (
    SYSTEM_PROMPT,
    ChatParamsError,
    ChatService,
    CodeContext,
    Conversations,
    _validate,
)
from codellama_lsp.commands.chat import line_span, parse_lines
from codellama_lsp.config import Settings

from scripted_model import TOKENIZER_DIR

CHUNK = "codellama/chatChunk"
ANSWER = "```\nreturn a + b"  # what the scripted model answers to any chat prompt

CODE = '''import math


def area(r):
    """Area of a circle."""
    return math.pi * r * r


def perimeter(r):
    return 2 * math.pi * r
'''


# --- prompt assembly (real tokenizer and template, no model) ------------------------------------------


@pytest.fixture(scope="module")
def backend():
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    from codellama_lsp.engine.templates import template_for
    from codellama_lsp.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(TOKENIZER_DIR)
    template = template_for(tok, model_name="codellama/CodeLlama-7b-Instruct-hf")
    return SimpleNamespace(template=template, count_tokens=tok.count, tokenizer=tok,
                           info=SimpleNamespace(context_length=16384))


def service(**settings) -> ChatService:
    s, errors = Settings().updated(settings)
    assert not errors
    return ChatService(engines=None, settings=s)


def test_prompt_is_the_instruct_template_of_system_history_and_question(backend):
    svc = service()
    history = [{"role": "user", "content": "first?"}, {"role": "assistant", "content": "one"}]
    kept, new, ids = svc.build_messages(history, [{"role": "user", "content": "second?"}], None, backend)
    assert kept == history
    expected = backend.template.chat_ids([{"role": "system", "content": SYSTEM_PROMPT}, *history, *new])
    assert ids == expected
    text = backend.tokenizer.decode(ids)
    assert text.index("first?") < text.index("one") < text.index("second?")
    assert text.rstrip().endswith("[/INST]")


def test_old_turns_are_dropped_first_when_over_budget(backend):
    svc = service(context_tokens=400, chat_max_tokens=100)  # 300 prompt tokens
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"question {i} " + "word " * 20},
                    {"role": "assistant", "content": f"answer {i} " + "word " * 20}]
    kept, _, ids = svc.build_messages(history, [{"role": "user", "content": "latest?"}], None, backend)
    assert len(ids) <= 300
    assert 0 < len(kept) < len(history) and kept == history[len(history) - len(kept):]
    assert "question 5" in backend.tokenizer.decode(ids) and "question 0" not in backend.tokenizer.decode(ids)


def test_context_has_the_lines_and_their_enclosing_function(backend):
    start = CODE.index("return math.pi")
    ctx = CodeContext("/p/geo.py", CODE, start, CODE.index("\n", start), "python")
    block = service().context_block(ctx, backend, 1000)
    assert block.startswith("Code from `geo.py` (lines 6-6):\n```python\nreturn math.pi * r * r\n```")
    assert "It is part of `area`:" in block and '"""Area of a circle."""' in block
    assert "perimeter" not in block


def test_a_huge_selection_is_cut_to_the_budget(backend):
    text = "x = 1\n" * 5000
    block = service().context_block(CodeContext("/p/a.py", text, 0, len(text), "python"), backend, 400)
    assert backend.count_tokens(block) < 400 and "(truncated)" in block


@pytest.mark.parametrize(
    "messages",
    [[], "hi", [{"role": "user"}], [{"role": "assistant", "content": "x"}],
     [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], [{"role": "bot", "content": "x"}]],
)
def test_malformed_messages_are_refused(messages):
    with pytest.raises(ChatParamsError):
        _validate(messages)


def test_conversations_are_bounded():
    store = Conversations(limit=3)
    for i in range(5):
        store.put(str(i), [{"role": "user", "content": str(i)}])
    assert len(store) == 3 and "0" not in store and "4" in store
    store.get("2")  # used: survives the next eviction
    store.put("5", [])
    assert "2" in store and "3" not in store


def test_cli_line_ranges():
    text = "a\nbb\r\nccc\n"
    assert parse_lines("2-3", 3) == (2, 3)
    assert parse_lines("2", 3) == (2, 2)
    assert parse_lines("2-99", 3) == (2, 3)
    assert text[slice(*line_span(text, 2, 3))] == "bb\r\nccc"
    from codellama_lsp.commands.complete import UsageError

    for bad in ("x", "3-2", "0-1", "9"):
        with pytest.raises(UsageError):
            parse_lines(bad, 3)


# --- over LSP, against the real server with a scripted checkpoint --------------------------------


@pytest.fixture(scope="session")
def scripted_model_dir(tmp_path_factory):
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"shared tokenizer not found at {TOKENIZER_DIR}")
    from scripted_model import build_scripted_llama

    return build_scripted_llama(tmp_path_factory.mktemp("scripted") / "model", TOKENIZER_DIR)


class Chunks:
    """``codellama/chatChunk`` notifications received, and a way to wait for the first one."""

    def __init__(self, client) -> None:
        from lsp_client import to_plain

        self.items: list[dict] = []
        self.first = asyncio.get_running_loop().create_future()

        @client.feature(CHUNK)
        def on_chunk(params) -> None:
            self.items.append(to_plain(params))
            if not self.first.done():
                self.first.set_result(None)

    def of(self, conversation_id: str) -> list[dict]:
        return [c for c in self.items if c["conversationId"] == conversation_id]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(scripted_model_dir, tmp_path_factory):
    from lsp_client import lsp_session

    home = tmp_path_factory.mktemp("chat-srv")
    async with lsp_session(home, model=scripted_model_dir, init_options={"repoContext": False}) as c:
        await c.notes.wait_ready()
        c.chunks = Chunks(c)
        yield c


async def chat(client, params, timeout=60):
    from lsp_client import raw_request, to_plain

    return to_plain(await raw_request(client, "codellama/chat", params, timeout))


@pytest.mark.asyncio(loop_scope="module")
async def test_chunks_arrive_in_order_and_concatenate_to_the_answer(client, tmp_path):
    from lsp_client import open_document

    uri = (tmp_path / "geo.py").as_uri()
    open_document(client, uri, CODE)
    answer = await chat(client, {
        "messages": [{"role": "user", "content": "What does this do?"}],
        "textDocument": {"uri": uri},
        "range": {"start": {"line": 5, "character": 4}, "end": {"line": 5, "character": 26}},
    })
    assert answer["text"] == ANSWER
    chunks = client.chunks.of(answer["conversationId"])
    assert len(chunks) >= 3
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert "".join(c["text"] for c in chunks) == answer["text"]


@pytest.mark.asyncio(loop_scope="module")
async def test_multi_turn_keeps_history_in_the_prompt(client):
    question = [{"role": "user", "content": "Name a prime number."}]
    first = await chat(client, {"messages": question})
    s1 = client.notes.statuses[-1]
    again = await chat(client, {"messages": question, "conversationId": first["conversationId"]})
    s2 = client.notes.statuses[-1]
    fresh = await chat(client, {"messages": question})
    s3 = client.notes.statuses[-1]
    assert again["conversationId"] == first["conversationId"] != fresh["conversationId"]
    assert s1["source"] == s2["source"] == s3["source"] == "chat"
    # the follow-up's prompt holds the first question and answer; a new conversation's does not
    assert s2["prompt_tokens"] > s1["prompt_tokens"] + s1["generated_tokens"]
    assert s3["prompt_tokens"] == s1["prompt_tokens"]


@pytest.mark.asyncio(loop_scope="module")
async def test_malformed_chat_params_get_invalid_params(client):
    from pygls.exceptions import JsonRpcException

    for params in ({"messages": []}, {"messages": [{"role": "user", "content": "x"}], "conversationId": 7}, {}):
        with pytest.raises(JsonRpcException) as err:
            await chat(client, params)
        assert err.value.code == -32602


@pytest.mark.asyncio(loop_scope="module")
async def test_chat_about_a_missing_file_is_a_clear_error(client, tmp_path):
    from pygls.exceptions import JsonRpcException

    with pytest.raises(JsonRpcException) as err:
        await chat(client, {"messages": [{"role": "user", "content": "x"}],
                            "textDocument": {"uri": (tmp_path / "nope.py").as_uri()}})
    assert "nope.py" in err.value.message


# --- a separate chat model --------------------------------------------------------------------------


async def test_a_separate_chat_model_is_loaded_once_and_shared(scripted_model_dir, tiny_model_dir):
    from codellama_lsp.features.chat import ChatEngines
    from codellama_lsp.engine.worker import Engine

    settings, _ = Settings().updated({"model": str(tiny_model_dir), "chatModel": str(scripted_model_dir)})
    main = Engine(settings)  # the completion model (not even loaded: chat must not need it)
    engines = ChatEngines(main, settings)
    svc = ChatService(engines, settings)
    try:
        answer = await svc.ask([{"role": "user", "content": "hi"}])
        chat_engine = await engines.get()
        assert chat_engine is not main and chat_engine.info.path == str(scripted_model_dir)
        assert answer.text == ANSWER  # the scripted chat model answered
        again = await svc.ask([{"role": "user", "content": "again"}])
        assert again.text == ANSWER and await engines.get() is chat_engine  # loaded once, reused
        engines.settings = settings.updated({"chatModel": ""})[0]
        assert await engines.get() is main and engines._chat_engine is None  # unset: freed
    finally:
        engines.close()
        main.close()


# --- cancel: a model that talks until stopped -------------------------------------------------------


@pytest.mark.asyncio
async def test_cancel_stops_generation_and_status_says_cancelled(tiny_model_dir, tmp_path):
    from concurrent.futures import Future

    from lsp_client import lsp_session
    from pygls.exceptions import JsonRpcException
    from pygls.protocol import JsonRPCRequestMessage

    async with lsp_session(tmp_path, model=tiny_model_dir, init_options={"chatMaxTokens": 4000, "repoContext": False}) as c:
        await c.notes.wait_ready()
        chunks = Chunks(c)
        msg_id = str(uuid.uuid4())
        future: Future = Future()
        c.protocol._request_futures[msg_id] = future
        c.protocol._send_data(JsonRPCRequestMessage(
            id=msg_id, method="codellama/chat", params={"messages": [{"role": "user", "content": "Talk."}]},
            jsonrpc="2.0"))
        await asyncio.wait_for(chunks.first, 60)
        seen = len(c.notes.statuses)
        c.protocol.notify("$/cancelRequest", lsp.CancelParams(id=msg_id))
        with pytest.raises(JsonRpcException) as err:
            await asyncio.wait_for(asyncio.wrap_future(future), 30)
        assert err.value.code == -32800
        status = await c.notes.wait_status(lambda s: s.get("source") == "chat", after=seen, timeout=30)
        assert status["stop_reason"] == "cancelled"
        assert status["generated_tokens"] < 4000


# --- the command line -------------------------------------------------------------------------------


def test_cli_chat_streams_the_answer(scripted_model_dir, tmp_path, monkeypatch, capsys):
    """In-process (the model loads in this interpreter, no second torch import): same code path as the
    installed ``codellama-lsp chat``."""
    from codellama_lsp.cli import main

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("CODELLAMA_LSP_MODEL", raising=False)
    src = tmp_path / "geo.py"
    src.write_text(CODE)
    rc = main(["chat", "What does area do?", "--file", str(src), "--lines", "4-6",
               "--model", str(scripted_model_dir), "--no-repo-context"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out == ANSWER + "\n"
    assert main(["chat", "q", "--file", str(src), "--lines", "40-42"]) == 2
    assert "line 40 does not exist" in capsys.readouterr().err
    assert main(["chat", "q", "--lines", "1-2"]) == 2
    assert "--lines needs --file" in capsys.readouterr().err
