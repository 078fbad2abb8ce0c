"""End to end over stdio, the control side: cancellation, supersession, configuration changes
without a restart, a model reload, and UTF-8 positions (Neovim 0.11's encoding).

Long generations come from a configuration change (``maxTokens`` very high); the tests wait for the
server's "decoding started" log line instead of sleeping, so they are deterministic.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from codellama_lsp.positions import UTF8
from shared_data import build_tiny_llama
from lsp_client import capabilities, inline, inline_params, lsp_session, open_document, raw_request
from test_server_lsp import check_position_after_an_emoji

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

SHORT = {"maxTokens": 3, "logLevel": "debug"}
LONG = {"maxTokens": 100000, "completionTimeoutS": 120.0, "logLevel": "debug"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("server-control")
    # Like Neovim 0.11, nvim-cmp, Helix or Kate: no inline completion capability, so the completion
    # fallback is on (inline requests are still answered).
    caps = capabilities("utf-8", inline=False)
    async with lsp_session(home, model=tiny_model_dir, caps=caps, init_options=dict(SHORT), ready=True,
                           configuration={"codellama": dict(SHORT)}) as c:
        yield c


async def configure(client, values: dict) -> None:
    """Change the client's settings, notify the server, and wait until it has applied them."""
    mark = len(client.notes.logs)
    client.set_configuration({"codellama": dict(values)})
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings=None))
    await client.notes.wait_log("settings applied from workspace/configuration", after=mark)


def params(uri: str, line: int, character: int) -> lsp.InlineCompletionParams:
    return inline_params(uri, line, character, trigger=lsp.InlineCompletionTriggerKind.Automatic)


def start_inline(client, uri: str, line: int, character: int, msg_id: str) -> asyncio.Future:
    return asyncio.ensure_future(client.protocol.send_request_async(
        lsp.TEXT_DOCUMENT_INLINE_COMPLETION, params(uri, line, character), msg_id=msg_id))


async def start_long_generation(client, uri: str, text: str, msg_id: str) -> tuple[asyncio.Future, int]:
    """With ``LONG`` settings, an inline request at the end of the one-line document ``text``, once it decodes:
    the pending answer and the number of statuses before it."""
    open_document(client, uri, text, "plaintext")
    await configure(client, LONG)
    logs, statuses = len(client.notes.logs), len(client.notes.statuses)
    pending = start_inline(client, uri, 0, len(text), msg_id)
    await client.notes.wait_log("decoding started", after=logs)
    return pending, statuses


async def test_cancel_request_stops_decoding_and_answers_request_cancelled(client):
    uri = "file:///tmp/codellama-lsp-tests/cancel.txt"
    pending, statuses = await start_long_generation(client, uri, "a long story ", "cancel-me")
    ping_started = time.perf_counter()
    await raw_request(client, "codellama/ping", None)
    assert time.perf_counter() - ping_started < 1.0  # the event loop is free while the model decodes
    client.cancel_request(lsp.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcException) as err:
        await pending
    assert err.value.code == -32800
    status = await client.notes.wait_status(lambda s: s.get("uri") == uri, after=statuses)
    assert status["stop_reason"] == "cancelled"
    assert status["generated_tokens"] < 100000  # decoding stopped long before its limit
    await configure(client, SHORT)


async def test_a_newer_request_supersedes_the_older_one(client):
    uri = "file:///tmp/codellama-lsp-tests/supersede.txt"
    older, statuses = await start_long_generation(client, uri, "first words ", "older")
    logs = len(client.notes.logs)
    newer = start_inline(client, uri, 0, 12, "newer")
    result = await asyncio.wait_for(older, 30)
    assert not result.items  # answered, empty, and promptly
    superseded = await client.notes.wait_status(lambda s: s.get("reason") == "superseded", after=statuses)
    assert superseded["stop_reason"] == "cancelled"
    await client.notes.wait_log("decoding started", after=logs)  # the newer one runs now
    client.cancel_request(lsp.CancelParams(id="newer"))
    with pytest.raises(JsonRpcException):
        await newer
    await configure(client, SHORT)


async def test_a_configuration_change_applies_to_the_next_request(client):
    uri = "file:///tmp/codellama-lsp-tests/short.txt"
    open_document(client, uri, "some words ", "plaintext")

    async def generated_tokens() -> int:
        statuses = len(client.notes.statuses)
        await client.text_document_inline_completion_async(params(uri, 0, 11))
        status = await client.notes.wait_status(lambda s: s.get("uri") == uri, after=statuses)
        return status["generated_tokens"]

    await configure(client, {**SHORT, "maxTokens": 6})
    assert await generated_tokens() > 2
    await configure(client, {**SHORT, "maxTokens": 2})
    assert await generated_tokens() <= 2
    await configure(client, SHORT)


async def test_a_request_cut_by_the_time_budget_is_explained_once(client):
    # a slow model on a CPU answers nothing at first: the user is told why, once, not at every keystroke
    uri = "file:///tmp/codellama-lsp-tests/budget.txt"
    open_document(client, uri, "some words ", "plaintext")
    await configure(client, {**SHORT, "completionTimeoutS": 0.000001})
    shown = len(client.notes.shown)
    for _ in range(2):
        statuses = len(client.notes.statuses)
        result = await client.text_document_inline_completion_async(params(uri, 0, 11))
        status = await client.notes.wait_status(lambda s: s.get("uri") == uri, after=statuses)
        assert status["stop_reason"] == "time_budget" and not (result and result.items)
    message = await client.notes.wait_shown("No suggestion: completion_timeout_s (1e-06 s) ran out", after=shown)
    assert "raise completion_timeout_s" in message
    assert len([m for m in client.notes.shown[shown:] if "No suggestion" in m]) == 1
    await configure(client, SHORT)


async def test_invalid_setting_is_named_to_the_user_and_the_default_kept(client):
    shown = len(client.notes.shown)
    await configure(client, {**SHORT, "maxTokens": "lots", "temprature": 0.2})
    message = await client.notes.wait_shown("maxTokens", after=shown)
    assert "temprature" in message
    uri = "file:///tmp/codellama-lsp-tests/invalid.txt"
    open_document(client, uri, "more words ", "plaintext")
    statuses = len(client.notes.statuses)
    await inline(client, uri, 0, 11)
    status = await client.notes.wait_status(lambda s: s.get("uri") == uri, after=statuses)
    assert status["generated_tokens"] <= 128  # the default max_tokens; the server still works
    await configure(client, SHORT)


async def test_position_after_an_emoji_is_read_in_utf8_units(client):
    await check_position_after_an_emoji(client, "file:///tmp/codellama-lsp-tests/emoji8.txt", UTF8, 9)


async def test_changing_the_model_reloads_it_without_a_restart(client, tmp_path_factory):
    other = build_tiny_llama(tmp_path_factory.mktemp("other-model") / "model", seed=1)
    statuses = len(client.notes.statuses)
    await configure(client, {**SHORT, "model": str(other)})
    await client.notes.wait_status(lambda s: s.get("state") == "loading", after=statuses)
    ready = await client.notes.wait_status(lambda s: s.get("state") in ("ready", "error"), after=statuses)
    assert ready["state"] == "ready" and ready["model"] == str(other)
    uri = "file:///tmp/codellama-lsp-tests/reloaded.txt"
    open_document(client, uri, "after reload ", "plaintext")
    assert (await inline(client, uri, 0, 13)).items


async def test_switching_speculation_to_draft_from_the_editor_loads_the_draft_model(tiny_model_dir, tmp_path):
    """``speculation = "draft"`` decodes with ``draft_model``, which is loaded with the model: switching it on
    from the editor must reload (before, the server kept the model without a draft and decoding fell back to
    prompt lookup without a word)."""
    caps = capabilities(configuration=False)  # the pushed settings are the ones applied
    start = {**SHORT, "draftModel": str(tiny_model_dir), "speculation": "prompt_lookup"}
    async with lsp_session(tmp_path / "home", model=tiny_model_dir, caps=caps, init_options=start) as c:
        await c.notes.wait_ready()
        statuses = len(c.notes.statuses)
        c.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
            settings={"codellama": {**start, "speculation": "draft"}}))
        await c.notes.wait_status(lambda s: s.get("state") == "loading", after=statuses, timeout=60)
        ready = await c.notes.wait_status(lambda s: s.get("state") in ("ready", "error"), after=statuses)
        assert ready["state"] == "ready", ready
        messages = [getattr(r, "message", None) or "" for reports in c.progress_reports.values() for r in reports]
        assert any(m.startswith("loading draft model") for m in messages), messages


async def test_completion_fallback_is_one_labelled_item_with_a_text_edit(client):
    text = "alpha beta gamma "
    uri = "file:///tmp/codellama-lsp-tests/fallback.txt"
    open_document(client, uri, text, "plaintext")
    inline_result = await inline(client, uri, 0, len(text))
    result = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=0, character=len(text))))
    assert isinstance(result, lsp.CompletionList)
    assert len(result.items) == 1
    item = result.items[0]
    assert item.label.startswith("codellama: ")
    assert item.text_edit.range.start == item.text_edit.range.end == lsp.Position(line=0, character=len(text))
    assert item.text_edit.new_text == inline_result.items[0].insert_text  # same model answer


async def test_a_workspace_folder_added_later_is_indexed(client, tmp_path_factory):
    extra = tmp_path_factory.mktemp("second-root")
    (extra / "lib.py").write_text("def helper():\n    return 1\n")
    (extra / "setup.cfg").write_text("")  # a project: indexed whole (a bare folder only around open files)
    mark = len(client.notes.logs)
    client.workspace_did_change_workspace_folders(lsp.DidChangeWorkspaceFoldersParams(
        event=lsp.WorkspaceFoldersChangeEvent(added=[lsp.WorkspaceFolder(uri=extra.as_uri(), name="second")],
                                              removed=[])))
    message = await client.notes.wait_log(f"{extra}", after=mark)
    assert message.startswith("indexed 1 files in ")  # the new root's file; the first root is empty
