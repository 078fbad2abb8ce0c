"""Alternatives over the real LSP: an invoked request (the user asked, or pressed "next") gets up to
``alternatives`` distinct suggestions, best first, sampled on the prompt the first answer already put in the
KV cache (each prefills one token, never the prompt again; ``codellama/status`` shows it); an automatic
request gets one. The tiny model has random weights, so its samples differ; structure is what is checked."""

from __future__ import annotations

import pytest
import pytest_asyncio
from lsprotocol import types as lsp

from lsp_client import inline, lsp_session, open_document

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

ALTERNATIVES = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_model_dir, tmp_path_factory):
    async with lsp_session(tmp_path_factory.mktemp("alternatives"), model=tiny_model_dir, ready=True,
                           init_options={"maxTokens": 8, "alternatives": ALTERNATIVES}) as c:
        yield c


async def test_invoked_requests_get_distinct_alternatives_from_one_prefill(client):
    text = "The quick brown fox\njumps over "
    uri = "file:///tmp/codellama-lsp-tests/alternatives.txt"
    open_document(client, uri, text, "plaintext")
    before = len(client.notes.statuses)
    result = await inline(client, uri, 1, len("jumps over "))
    texts = [item.insert_text for item in result.items]
    assert 2 <= len(texts) <= ALTERNATIVES
    assert len({t.rstrip() for t in texts}) == len(texts), texts  # distinct after clean-up
    for item in result.items:
        assert item.range.start == lsp.Position(line=1, character=len("jumps over "))
    status = await client.notes.wait_status(lambda s: s.get("uri") == uri, after=before)
    alternatives = status["alternatives"]
    assert alternatives["count"] == len(texts) - 1
    assert alternatives["samples"] >= alternatives["count"]
    # the prompt is in the cache: every sample feeds only the prompt's last token
    assert alternatives["prefill_tokens"] == alternatives["samples"]
    assert alternatives["reused_tokens"] == alternatives["samples"] * (status["prompt_tokens"] - 1)

    # the same question again (an editor's "next" re-asks) gives the same ranked list: seeded samples
    again = await inline(client, uri, 1, len("jumps over "))
    assert [item.insert_text for item in again.items][1:] == texts[1:]


async def test_automatic_requests_get_one_suggestion(client):
    text = "alpha beta gamma "
    uri = "file:///tmp/codellama-lsp-tests/automatic.txt"
    open_document(client, uri, text, "plaintext")
    result = await inline(client, uri, 0, len(text), trigger=lsp.InlineCompletionTriggerKind.Automatic)
    assert len(result.items) == 1
