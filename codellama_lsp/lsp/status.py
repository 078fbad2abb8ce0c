"""``codellama/status``: what a status bar shows, and the log line and error popup of each completion.

One notification carries everything a client may show — the model and where it runs, its state, the index,
the numbers of the last request, the latest latency of each kind — so it is built in one place, from the
server's public names (``engine``, ``settings``, ``state``, ``state_message``, ``index``, ``log_file``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lsprotocol import types as lsp

from ..features.completion import CompletionOutcome, why_empty
from ..logs import document_text

log = logging.getLogger(__name__)

STATUS = "codellama/status"


class StatusReporter:
    """Sends ``codellama/status`` for one server; keeps the latest latencies and the last error shown."""

    def __init__(self, server) -> None:
        self._server = server
        # Latest latencies by kind: a chat answer must not read as the completion latency.
        self.last_ms: dict[str, float] = {}
        self._shown_error = ""  # the last generation error shown to the user
        self._shown_timeout = False  # a request cut by completion_timeout_s is explained once per session

    def send(self, stats: dict[str, Any] | None = None) -> None:
        """Send ``codellama/status``: the model, its state, and the numbers of the last request."""
        server = self._server
        info = server.engine.info
        payload: dict[str, Any] = {
            "model": (info.name if info else None) or server.settings.model,
            "device": info.device if info else None,
            "quantization": info.quantization if info else None,
            "runtime": info.runtime if info else None,
            "state": server.state,
            "message": server.state_message,
            "log_file": server.log_file,
            "pid": os.getpid(),
        }
        if server.index is not None:
            payload["index"] = server.index.summary()
        stats = stats or {}
        if isinstance(stats.get("total_ms"), (int, float)) and not stats.get("reason"):  # answered, not dropped
            self.last_ms["chat" if stats.get("source") == "chat" else "completion"] = stats["total_ms"]
        payload.update(stats)
        # Kept across notifications so a status bar can show each kind; ``total_ms`` stays "the last request".
        payload["last_completion_ms"] = self.last_ms.get("completion")
        payload["last_chat_ms"] = self.last_ms.get("chat")
        server.protocol.notify(STATUS, payload)

    def report_outcome(self, outcome: CompletionOutcome) -> None:
        """A completion's outcome (``CompletionService.report``): logged, its error shown, its numbers sent."""
        stats = outcome.stats()
        stats["uri"] = outcome.uri
        if outcome.reason and not outcome.text:
            stats["reason"] = outcome.reason
        log.info("completion %s: %s, %d+%d tokens, %.0f ms", outcome.source, stats["stop_reason"] or "-",
                 stats["prompt_tokens"], stats["generated_tokens"], stats["total_ms"])
        if outcome.text:
            log.debug("completion text: %s", document_text(outcome.text))
        # a failing engine (an inference server that is down) is shown once per distinct message, not per keystroke
        if outcome.error and outcome.error != self._shown_error:
            self._server.show(outcome.error, lsp.MessageType.Error)
        if outcome.error or outcome.source == "model":
            self._shown_error = outcome.error
        if stats["stop_reason"] == "time_budget" and not outcome.text and not self._shown_timeout:
            # a slow model on a CPU answers nothing at first, and nothing in the editor says why
            self._shown_timeout = True
            info, settings = self._server.engine.info, self._server.settings
            why = why_empty(stats, outcome.reason, info.device if info else None, settings.completion_timeout_s)
            self._server.show(f"No suggestion: {why}.", lsp.MessageType.Warning)
        self.send(stats)
