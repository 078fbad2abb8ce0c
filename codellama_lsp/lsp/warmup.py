"""Warming the model's KV cache while the user pauses in typing.

After a pause the prompt at the edit is built and prefilled, so the next completion there only prefills what
changed. It is a guess made with idle time, so it gives way to everything: any real request stops it
(``stop``), and it does nothing while a request is in flight or the model is not ready.
"""

from __future__ import annotations

import asyncio
import logging

from lsprotocol import types as lsp

from ..engine.backend import CancelToken
from ..positions import normalize_encoding
from . import ranges

log = logging.getLogger(__name__)

WARM_AFTER_S = 0.4  # a pause in typing this long prefills the KV cache for the cursor


class KvCacheWarmup:
    """The pending or running warm-up of one server (a ``CodeLlamaServer``, of which only public names are used)."""

    def __init__(self, server) -> None:
        self._server = server
        self._timer: asyncio.TimerHandle | None = None
        self._token: CancelToken | None = None

    def schedule(self, uri: str, position: lsp.Position) -> None:
        """After a pause in typing, prefill the model's KV cache with the prompt at the edit, so the
        next completion there only prefills what changed. Cancelled by any real request."""
        self.stop()
        if not self._server.engine.ready:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(WARM_AFTER_S, lambda: self._server.spawn(self._warm(uri, position)))

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._token is not None:
            self._token.cancel("request")
            self._token = None

    async def _warm(self, uri: str, position: lsp.Position) -> None:
        server = self._server
        self._timer = None
        if server.inflight or not server.engine.ready:
            return
        doc = server.workspace.get_text_document(uri)
        try:
            text = doc.source
        except (OSError, UnicodeDecodeError):
            return
        offset = ranges.offset(text, position, normalize_encoding(server.workspace.position_encoding))
        completion = server.completion
        try:
            plan = await completion.off_loop(
                completion.build_plan, text, offset, uri=uri, path=doc.path, language_id=doc.language_id or "",
                open_documents=server.open_documents() if server.settings.repo_context else None,
                recent_edits=list(server.recent_edits), invoked=False)
        except Exception:
            log.exception("warm-up prompt failed")
            return
        if plan is None or not plan.prompt_ids:
            return
        token = self._token = CancelToken()
        try:
            info = await server.engine.warm(plan.prompt_ids, token)
        except Exception as exc:
            log.debug("warm-up skipped: %s", exc)
            return
        finally:
            if self._token is token:
                self._token = None
        log.debug("warmed %s: %s", uri, info)
