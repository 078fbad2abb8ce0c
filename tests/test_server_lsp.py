"""End to end over stdio: the real server process, a tiny real model, a pytest-lsp client (UTF-16,
the LSP default and Neovim 0.7's encoding). One server for the module; generations are kept short.

The tiny model has random weights: its text is garbage but deterministic, so these tests assert
structure, ranges and lifecycle, not quality. Documents are mostly ``plaintext`` so that no syntax
rule trims the garbage away.
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from lsp_client import inline, lsp_session, open_document, raw_request
from codellama_lsp.positions import UTF16, units

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

MAX_TOKENS = 6


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_model_dir, tmp_path_factory):
    async with lsp_session(tmp_path_factory.mktemp("server-lsp"), model=tiny_model_dir, encoding="utf-16", ready=True,
                           init_options={"maxTokens": MAX_TOKENS, "logLevel": "debug", "alternatives": 1,
                                         "device": "cpu"}) as c:
        yield c


def new_uri(client, name: str, text: str, language_id: str = "plaintext") -> str:
    uri = f"file:///tmp/codellama-lsp-tests/{name}"
    open_document(client, uri, text, language_id)
    return uri


async def test_capabilities_advertise_inline_completion_in_a_form_every_editor_reads(client):
    caps = client.initialize_result.capabilities
    # {} would read as false in Emacs; {"workDoneProgress": false} works everywhere
    assert client.protocol._converter.unstructure(caps.inline_completion_provider) == {"workDoneProgress": False}
    assert caps.completion_provider is not None
    assert caps.position_encoding == lsp.PositionEncodingKind.Utf16
    assert (await raw_request(client, "codellama/ping", None)).state == "ready"


async def test_model_load_reported_with_progress_begin_report_end(client):
    reports = [r for rs in client.progress_reports.values() for r in rs]
    kinds = [r.kind for r in reports]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    percentages = [r.percentage for r in reports if r.kind == "report"]
    assert percentages and all(0 <= p <= 100 for p in percentages)
    assert percentages == sorted(percentages)


async def test_inline_completion_replaces_nothing_at_a_plain_cursor(client):
    text = "The quick brown fox\njumps over "
    uri = new_uri(client, "plain.txt", text)
    before = len(client.notes.statuses)
    result = await inline(client, uri, 1, len("jumps over "))
    assert len(result.items) == 1
    item = result.items[0]
    assert isinstance(item.insert_text, str) and item.insert_text
    assert item.range.start == item.range.end == lsp.Position(line=1, character=len("jumps over "))
    status = await client.notes.wait_status(lambda s: s.get("uri") == uri, after=before)
    assert status["state"] == "ready"
    assert status["prompt_tokens"] > 0
    assert 0 < status["generated_tokens"] <= MAX_TOKENS
    assert status["forward_passes"] >= 1
    assert status["total_ms"] >= status["time_to_first_token_ms"] > 0
    assert status["model"] and status["device"] == "cpu" and status["quantization"] == "none"


async def test_selected_completion_item_is_kept_and_its_range_replaced(client):
    text = "result = compu\n"
    uri = new_uri(client, "selected.txt", text)
    selected = lsp.SelectedCompletionInfo(
        range=lsp.Range(start=lsp.Position(line=0, character=9), end=lsp.Position(line=0, character=14)),
        text="compute(")
    result = await inline(client, uri, 0, 14, selected=selected)
    assert len(result.items) == 1
    item = result.items[0]
    assert item.insert_text.startswith("compute(") and len(item.insert_text) > len("compute(")
    assert item.range.start == lsp.Position(line=0, character=9)
    assert item.range.end == lsp.Position(line=0, character=14)


async def test_completion_is_left_to_inline_completion_when_the_client_has_it(client):
    uri = new_uri(client, "no-fallback.txt", "alpha beta ")
    result = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=0, character=11)))
    assert not result.items


async def test_typing_the_suggestion_answers_the_rest_without_the_model(client):
    text = "one two three "
    uri = new_uri(client, "typing.txt", text)
    first = (await inline(client, uri, 0, len(text))).items[0].insert_text
    assert len(first) >= 2
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[lsp.TextDocumentContentChangePartial(
            range=lsp.Range(start=lsp.Position(line=0, character=len(text)),
                            end=lsp.Position(line=0, character=len(text))),
            text=first[0])]))
    before = len(client.notes.statuses)
    result = await inline(client, uri, 0, len(text) + units(first[0], UTF16))
    assert result.items[0].insert_text == first[1:]
    status = await client.notes.wait_status(lambda s: s.get("uri") == uri, after=before)
    assert status["source"] == "cache" and status["generated_tokens"] == 0


async def check_position_after_an_emoji(client, uri: str, encoding: str, expected_units: int) -> None:
    """A cursor between two emoji, sent in ``encoding``'s units, is read as that place (the prompt) and the
    answer's range starts there (shared with test_server_control's UTF-8 server)."""
    text = 's = "😋😋" + tail\n'
    open_document(client, uri, text, "plaintext")
    cursor_chars = text.index("😋") + 1  # between the two emoji
    character = units(text[:cursor_chars], encoding)
    assert character == expected_units
    described = await raw_request(client, "codellama/prompt",
                                  {"textDocument": {"uri": uri}, "position": {"line": 0, "character": character}})
    assert described.replace_start == cursor_chars
    result = await inline(client, uri, 0, character)
    assert result.items and result.items[0].range.start == lsp.Position(line=0, character=character)


async def test_position_after_an_emoji_is_read_in_utf16_units(client):
    await check_position_after_an_emoji(client, "file:///tmp/codellama-lsp-tests/emoji16.txt", UTF16, 7)


async def test_prompt_request_shows_what_the_model_saw(client):
    text = "first line\nsecond "
    uri = new_uri(client, "prompt.txt", text)
    described = await raw_request(client, "codellama/prompt",
                                  {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 7}})
    assert described.prompt_ids and all(isinstance(i, int) for i in described.prompt_ids)
    assert described.fim_mode in ("psm", "spm", "none")
    assert isinstance(described.completion, str)
    assert described.timings.prompt_tokens == len(described.prompt_ids)
    assert described.model


async def test_untitled_documents_complete_without_a_path(client):
    uri = "untitled:Untitled-1"
    open_document(client, uri, "scratch notes ", "plaintext")
    result = await inline(client, uri, 0, len("scratch notes "))
    assert len(result.items) == 1


async def test_malformed_params_are_answered_with_invalid_params(client):
    with pytest.raises(JsonRpcException) as err:
        await raw_request(client, "textDocument/inlineCompletion",
                          {"textDocument": {"uri": "file:///x.txt"}, "position": {"line": 0, "character": 0}})
    assert err.value.code == -32602
    assert "context" in str(err.value)
    with pytest.raises(JsonRpcException) as err:
        await raw_request(client, "codellama/prompt", {"position": "nowhere"})
    assert err.value.code == -32602


async def test_an_unknown_document_gets_an_empty_answer_not_an_error(client):
    result = await inline(client, "file:///nonexistent/dir/missing.txt", 3, 2)
    assert not result.items


async def test_a_pause_after_typing_warms_the_cache_for_the_next_request(client):
    text = "warm me up "
    uri = new_uri(client, "warm.txt", text)
    logs = len(client.notes.logs)
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[lsp.TextDocumentContentChangePartial(
            range=lsp.Range(start=lsp.Position(line=0, character=len(text)),
                            end=lsp.Position(line=0, character=len(text))),
            text="now ")]))
    await client.notes.wait_log(f"warmed {uri}", after=logs)
    statuses = len(client.notes.statuses)
    await inline(client, uri, 0, len(text) + 4)
    status = await client.notes.wait_status(lambda s: s.get("uri") == uri, after=statuses)
    assert status["prompt_tokens"] > 2
    assert status["reused_tokens"] >= status["prompt_tokens"] - 1  # only the last token ran again
