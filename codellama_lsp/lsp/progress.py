"""``$/progress`` for a long piece of work (loading the model), when the client offers it.

Every token is created fresh and asked for with ``window/workDoneProgress/create`` first: pygls never frees
a token, and a client that does not support progress must not be sent any.
"""

from __future__ import annotations

import logging
import uuid

from lsprotocol import types as lsp

log = logging.getLogger(__name__)


async def begin(server, title: str, message: str) -> str | None:
    """Start a progress on ``server`` (a pygls LanguageServer); its token, or None when the client has none."""
    caps = server.client_capabilities
    if not (caps and caps.window and caps.window.work_done_progress):
        return None
    token = str(uuid.uuid4())  # fresh each time: pygls never frees a token
    try:
        await server.work_done_progress.create_async(token)
    except Exception as exc:
        log.debug("progress not available: %s", exc)
        return None
    server.work_done_progress.begin(
        token, lsp.WorkDoneProgressBegin(title=title, message=message, percentage=0, cancellable=False))
    return token


def report(server, token: str, percent: int, message: str) -> None:
    server.work_done_progress.report(
        token, lsp.WorkDoneProgressReport(message=message, percentage=max(0, min(100, int(percent)))))


def end(server, token: str | None, message: str) -> None:
    if token is not None:
        server.work_done_progress.end(token, lsp.WorkDoneProgressEnd(message=message))
