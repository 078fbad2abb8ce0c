"""Alternatives over the real LSP: an invoked request (the user asked, or pressed "next") gets up to
``alternatives`` distinct suggestions, best first, sampled on the prompt the first answer already put in the
KV cache (each prefills one token, never the prompt again; ``codellama/status`` shows it); an automatic
request gets one; new samples stop a few times the first answer's time after it. The tiny model has random
weights, so its samples differ; structure is what is checked."""

from __future__ import annotations

import pytest
import pytest_asyncio
from lsprotocol import types as lsp

from codellama_lsp.features.completion import ALTERNATIVES_MIN_FIRST_S, alternatives_window_s
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


async def test_the_alternatives_window_scales_with_the_first_answer():
    # a fast first answer (the prompt was cached) still leaves room for samples; 0 means no bound
    assert alternatives_window_s(0.01, 2.0) == pytest.approx(2 * ALTERNATIVES_MIN_FIRST_S)
    assert alternatives_window_s(3.0, 2.0) == pytest.approx(6.0)
    assert alternatives_window_s(3.0, 0.0) is None


async def test_a_spent_alternatives_window_stops_sampling_at_the_first_alternative(tiny_model_dir, tmp_path_factory):
    """With a window that is over as soon as it opens, sampling still goes on until there is one alternative
    (so "next" has something to offer), and no further sample starts; status says why."""
    home = tmp_path_factory.mktemp("alternatives-window")
    async with lsp_session(home, model=tiny_model_dir, encoding="utf-16", init_options={
            "maxTokens": 8, "alternatives": ALTERNATIVES, "alternativesTimeFactor": 1e-9}) as c:
        await c.notes.wait_ready()
        text = "The quick brown fox\njumps over "
        uri = "file:///tmp/codellama-lsp-tests/window.txt"
        open_document(c, uri, text, "plaintext")
        before = len(c.notes.statuses)
        result = await inline(c, uri, 1, len("jumps over "))
        status = await c.notes.wait_status(lambda s: s.get("uri") == uri, after=before)
    alternatives = status["alternatives"]
    assert alternatives["count"] == 1 and len(result.items) == 2, (alternatives, result.items)
    assert alternatives["stopped"] == "alternatives_time", alternatives
