"""The resident model's life in the server: its state, (re)loading it with ``$/progress``, waiting for it.

The state goes ``starting`` (before ``initialized``) → ``loading`` → ``ready`` or ``error``, and back to
``loading`` when a changed setting needs another model. The rules that come with it live here, apart from
the LSP wiring in ``server.py``: a load waits for the one before it, a (re)load cancels the requests in
flight, a settings change reloads only what the loaded model no longer holds (``config.reload_reasons``), and
a request made meanwhile waits for the load, bounded, instead of being answered empty.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from lsprotocol import types as lsp

from ..config import Settings, reload_reasons
from . import progress

log = logging.getLogger(__name__)

# A request made while the model loads waits this long for it (the client shows the load's progress)
# instead of being answered empty: the keystroke that asked is not lost.
LOAD_WAIT_S = 120.0


class ModelLifecycle:
    """The model's state for one server (a ``CodeLlamaServer``, of which only public names are used: its
    ``engine``, ``settings``, ``inflight``, ``spawn``, ``show`` and ``send_status``)."""

    def __init__(self, server) -> None:
        self._server = server
        self.state = "starting"
        self.message = ""
        self._settled = asyncio.Event()  # set while the state is "ready" or "error"
        self._load_task: asyncio.Task | None = None

    def set_state(self, state: str, message: str = "") -> None:
        self.state, self.message = state, message
        if state in ("ready", "error"):
            self._settled.set()
        else:
            self._settled.clear()
        self._server.send_status()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout``, default LOAD_WAIT_S) while the model is starting or loading;
        True when it is ready. An error state, or a model that failed to load, answers False at once."""
        engine = self._server.engine
        if engine.ready:
            return True
        if self.state not in ("starting", "loading"):
            return False
        try:
            await asyncio.wait_for(self._settled.wait(), LOAD_WAIT_S if timeout is None else timeout)
        except asyncio.TimeoutError:
            log.info("still loading after %.0f s; the request is answered empty", LOAD_WAIT_S)
        return engine.ready

    def start_loading(self) -> None:
        """Load the model in the background (``initialized``); requests meanwhile wait for it, bounded."""
        self._load_task = self._server.spawn(self.load())

    def settings_changed(self, old: Settings, new: Settings) -> None:
        """Reload when a changed setting needs another model; a setting the loaded model was sized for
        (llama.cpp's context) reloads only when it no longer fits. Before ``initialized`` nothing is loaded yet."""
        engine = self._server.engine
        holds = engine.holds if engine.ready else None
        reasons = reload_reasons(old, new, holds) if self.state != "starting" else []
        if reasons:
            log.info("reloading the model for %s", ", ".join(reasons))
            self._server.spawn(self.load(reload=True))

    async def load(self, *, reload: bool = False) -> None:
        """Load (or reload) the model on the engine's worker, reporting ``$/progress`` when the
        client supports it. Requests are answered meanwhile (empty until ready)."""
        server, engine = self._server, self._server.engine
        if self._load_task is not None and self._load_task is not asyncio.current_task():
            if not self._load_task.done():
                await asyncio.wait([self._load_task])
        self._load_task = asyncio.current_task()
        server.inflight.cancel_all("reload")
        settings = server.settings
        self.set_state("loading", f"loading {settings.model}")
        token = await progress.begin(server, "codellama-lsp", f"Loading {settings.model}")
        loop = asyncio.get_running_loop()

        def on_progress(percent: int, message: str) -> None:  # any thread
            if token is not None:
                loop.call_soon_threadsafe(progress.report, server, token, percent, message)

        started = time.perf_counter()
        gc.unfreeze()  # let the previous model's objects be collected
        try:
            if reload:
                await engine.reload(server.settings, on_progress)
            else:
                engine.settings = server.settings  # initializationOptions may have changed the model or backend
                await engine.load(on_progress)
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            log.error("model load failed: %s", message)
            self.set_state("error", message)
            server.show(message, lsp.MessageType.Error)
        else:
            info = engine.info
            if engine.notice:
                server.show(engine.notice, lsp.MessageType.Info)
            log.info("model %s ready on %s (%s) in %.1f s", info.name, info.device, info.quantization,
                     time.perf_counter() - started)
            # The model, tokenizer and libraries are hundreds of thousands of long-lived objects: keep
            # them out of the cyclic GC, whose full passes would otherwise stall requests for a while.
            gc.freeze()
            self.set_state("ready", "")
        finally:
            progress.end(server, token, self.message or "Model ready")
