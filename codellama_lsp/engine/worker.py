"""The engine: one worker thread that owns the model, and an asyncio face for the server.

Why one thread: a transformers model and its KV cache are not thread-safe, the cache is only worth
keeping if requests run one after another against it, and the asyncio loop (pygls) must never block on
a forward pass. So the model is loaded on the worker thread and every model call runs there, in order;
the loop awaits futures. Cancellation does not queue behind the model: ``CancelToken`` is a flag the decode
loop reads before every forward pass.

If the worker thread dies (an exception that is not an ``Exception``, e.g. ``SystemExit`` raised by a
library), a new one takes over the queue and ``Engine.error`` says what happened. A CUDA out-of-memory during
generation is retried once, then reported: with a prompt the caller rebuilds under a smaller budget
(``smaller``; slicing ids would cut the FIM layout's ``<PRE>``/``<SUF>``/``<MID>``), or, without one, with
the same prompt after the failed pass's KV cache and the allocator's cached blocks are freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from typing import Any, Callable, Sequence

from ..errors import named
from .backend import CancelToken, EngineError, GenerationParams, GenerationResult, ModelInfo, ModelLoadError, OnText

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, str], None]
SmallerPrompt = Callable[[], "Sequence[int] | None"]  # the prompt rebuilt under a smaller budget
_STOP = object()


class _Worker:
    """A single thread running submitted callables in order; replaced if it ever dies."""

    def __init__(self, on_death: Callable[[BaseException], None]) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._on_death = on_death
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0
        self.thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="codellama-engine", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except Exception as exc:  # an ordinary failure: the caller gets it, the thread lives on
                future.set_exception(exc)
            except BaseException as exc:  # the thread is going down: hand over (error recorded first), then die
                self._replace(exc)
                future.set_exception(EngineError(f"engine worker thread died: {type(exc).__name__}: {exc}"))
                return
            else:
                future.set_result(result)

    def _replace(self, exc: BaseException) -> None:
        with self._lock:
            if self._closed:
                return
            self.restarts += 1
            self.thread = self._start()
        self._on_death(exc)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise EngineError("the engine is closed")
            if not self.thread.is_alive():  # died without passing through _replace (killed mid-call)
                self.restarts += 1
                self.thread = self._start()
            self._queue.put((fn, args, future))
        return future

    def close(self, timeout: float | None = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
            thread = self.thread
        if thread is not threading.current_thread():
            thread.join(timeout)


class Engine:
    """Owns the model through one worker thread; see the module docstring.

    ``loader(settings, progress) -> backend`` defaults to :func:`engine.loading.load_backend`."""

    def __init__(self, settings: Any, *, loader: Callable[..., Any] | None = None) -> None:
        self.settings = settings
        self._loader = loader
        self.backend: Any = None
        self.info: ModelInfo | None = None
        self.error: str | None = None
        self.notice: str = ""
        self._worker = _Worker(self._worker_died)

    # -- state -------------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.backend is not None

    @property
    def worker_thread(self) -> threading.Thread:
        return self._worker.thread

    def _worker_died(self, exc: BaseException) -> None:
        self.error = f"engine worker thread died ({type(exc).__name__}: {exc}); restarted"
        log.error(self.error)

    # -- running things on the worker --------------------------------------------------------------------------

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker thread (after whatever is queued) and await its result."""
        return await asyncio.wrap_future(self._worker.submit(fn, *args))

    def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``run`` for callers without an event loop (the CLI). Never call it on the worker itself."""
        if threading.current_thread() is self._worker.thread:
            return fn(*args)
        return self._worker.submit(fn, *args).result()

    # -- loading -----------------------------------------------------------------------------------------------

    def _load_on_worker(self, settings: Any, progress: ProgressFn | None) -> Any:
        old, self.backend, self.info = self.backend, None, None
        if old is not None:
            old.close()  # free the previous model's memory before loading the next one
            _free_accelerator_memory()
        loader = self._loader
        if loader is None:
            from .loading import load_backend as loader
        try:
            backend = loader(settings, progress)
        except EngineError as exc:
            self.error = str(exc)
            raise
        except Exception as exc:  # a loader bug must still end in one line, not a dead server
            self.error = f"could not load the model: {type(exc).__name__}: {exc}"
            raise ModelLoadError(self.error) from exc
        self.settings = settings
        self.backend = backend
        self.info = backend.info
        self.notice = backend.notice
        self.error = None
        return backend

    def load_sync(self, progress: ProgressFn | None = None) -> Any:
        """Load the model on the worker and wait. Raises ModelLoadError (also kept in ``error``)."""
        return self.run_sync(self._load_on_worker, self.settings, progress)

    async def load(self, progress: ProgressFn | None = None) -> Any:
        """Load the model on the worker; ``progress(percent, message)`` is called on the event loop.
        Raises ModelLoadError (also kept in ``error``)."""
        return await self.run(self._load_on_worker, self.settings, _on_loop(progress))

    async def reload(self, settings: Any, progress: ProgressFn | None = None) -> Any:
        """Replace the model (new settings). The old one is released first, so on failure none is loaded."""
        return await self.run(self._load_on_worker, settings, _on_loop(progress))

    def holds(self, settings: Any) -> bool:
        """Whether the loaded model serves ``settings`` as one loaded for them would (``config.reload_reasons``
        asks about the settings it was sized for: llama.cpp's context is allocated at load). A backend without
        ``holds`` (a remote server, whose context is the server's) always does; with nothing loaded, False."""
        backend = self.backend
        if backend is None:
            return False
        holds = getattr(backend, "holds", None)
        return holds is None or bool(holds(settings))

    # -- generation --------------------------------------------------------------------------------------------

    def _require_backend(self) -> Any:
        if self.backend is None:
            raise EngineError(self.error or "the model is not loaded yet")
        return self.backend

    def _generate_on_worker(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: CancelToken | None,
        on_text: OnText | None,
        smaller: SmallerPrompt | None = None,
    ) -> GenerationResult:
        from .loading import is_out_of_memory

        backend = self._require_backend()
        try:
            return backend.generate(prompt_ids, params, cancel, on_text)
        except EngineError:
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise EngineError(f"generation failed: {named(exc)}") from exc
        _free_accelerator_memory()
        retry = list(prompt_ids)
        if smaller is not None:
            try:
                retry = list(smaller() or []) or retry
            except Exception as exc:  # noqa: BLE001 - a failed rebuild must not hide the out-of-memory
                log.warning("could not rebuild a smaller prompt (%s: %s)", type(exc).__name__, exc)
        log.warning("out of memory generating from %d prompt tokens; retrying with %d", len(prompt_ids), len(retry))
        try:
            return backend.generate(retry, params, cancel, on_text)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise EngineError(f"generation failed: {type(exc).__name__}: {exc}") from exc
            _free_accelerator_memory()
            self.error = (
                f"out of memory generating from {len(prompt_ids)} prompt tokens (retried with {len(retry)}); "
                "lower the `context_tokens` setting or use --quantization 4bit"
            )
            raise EngineError(self.error) from None

    async def generate(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: CancelToken | None = None,
        on_text: OnText | None = None,
        smaller: SmallerPrompt | None = None,
    ) -> GenerationResult:
        """Generate on the worker thread. ``on_text`` runs on the worker thread: hop to the loop with
        ``loop.call_soon_threadsafe`` if it touches asyncio objects. ``smaller()`` (also on the worker thread)
        rebuilds the prompt under a smaller budget for the one retry after an out-of-memory."""
        return await self.run(self._generate_on_worker, list(prompt_ids), params, cancel, on_text, smaller)

    def generate_sync(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: CancelToken | None = None,
        on_text: OnText | None = None,
        smaller: SmallerPrompt | None = None,
    ) -> GenerationResult:
        return self.run_sync(self._generate_on_worker, list(prompt_ids), params, cancel, on_text, smaller)

    async def warm(self, prompt_ids: Sequence[int], cancel: CancelToken | None = None) -> dict[str, Any]:
        """Prefill the KV cache with ``prompt_ids`` (the user paused); the next generate for the same document
        prefills only what changed. A no-op returning {} for backends without a cache."""

        def work() -> dict[str, Any]:
            return self._require_backend().warm(prompt_ids, cancel)

        return await self.run(work)

    def close(self) -> None:
        """Release the model and stop the worker thread."""

        def release() -> None:
            if self.backend is not None:
                self.backend.close()
            self.backend = None

        try:
            self._worker.submit(release).result(timeout=30)
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        self._worker.close()


def _on_loop(progress: ProgressFn | None) -> ProgressFn | None:
    """Wrap ``progress`` so that calls from the worker thread run on the current event loop."""
    if progress is None:
        return None
    loop = asyncio.get_running_loop()

    def hop(percent: int, message: str) -> None:
        loop.call_soon_threadsafe(progress, percent, message)

    return hop


def _free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")  # nothing to free where torch was never loaded (the GGUF path)
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
