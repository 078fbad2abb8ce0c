"""The language server: LSP handlers that parse, delegate and answer — nothing else.

Model work is the engine's (one worker thread), prompts are the context engine's, and the request
logic is ``completion.py``'s. What lives here is what only a server can know: which client features
exist (progress, configuration pulls, position encoding), which request supersedes which, and that
every request gets an answer — pygls 2 leaves requests whose params fail to parse unanswered, so
``AnsweringProtocol`` answers them with InvalidParams.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
from typing import Any

import attrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from .. import __version__
from ..config import Settings, reload_reasons
from ..engine.backend import CancelToken
from ..errors import RequestError
from ..features.completion import AUTOMATIC, INVOKED, CompletionOutcome, CompletionService, Selected
from ..logs import EditorLogHandler, document_text, set_level
from ..positions import LineIndex, normalize_encoding, units
from . import actions, chat, ranges
from .documents import install_document_model
from .errors import jsonrpc_error
from .inflight import InFlight

log = logging.getLogger(__name__)

STATUS = "codellama/status"
PROMPT = "codellama/prompt"
PING = "codellama/ping"
CONFIG_SECTION = "codellama"
MAX_RECENT_EDITS = 16
# A request made while the model loads waits this long for it (the client shows the load's progress)
# instead of being answered empty: the keystroke that asked is not lost.
LOAD_WAIT_S = 120.0
# Documents longer than this get no incremental syntax tree: re-parsing one costs seconds per keystroke at
# 20 MB; the prompt then parses only the cursor's neighbourhood (as for any document without a tree).
MAX_TREE_CHARS = 2_000_000
WARM_AFTER_S = 0.4  # a pause in typing this long prefills the KV cache for the cursor


# --- protocol: typed custom requests, and an answer for every request ------------------------------


@attrs.define
class PromptRequest:
    """``codellama/prompt``: the prompt (and completion) the model sees at a position."""

    id: int | str = attrs.field()
    params: lsp.TextDocumentPositionParams = attrs.field()
    method: str = PROMPT
    jsonrpc: str = attrs.field(default="2.0")


class _ClientWriter:
    """pygls' writer, quiet once the client has gone: an editor that quits (Neovim's ``:qa!``) closes the
    pipe while answers and notifications are still on their way; each would log an ERROR and a
    ``BrokenPipeError`` traceback. The first failure is logged once (debug) and the rest are dropped."""

    def __init__(self, writer) -> None:
        self._writer = writer
        self.gone = False

    def write(self, data: bytes):
        if self.gone:
            return None
        try:
            return self._writer.write(data)
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:  # ValueError: write to a closed file
            self.gone = True
            log.debug("the client has gone (%s); nothing more is sent", type(exc).__name__)
            return None

    def close(self):
        try:
            return self._writer.close()
        except (OSError, ValueError):
            return None


@attrs.define
class _Answered:
    """Stands in for a request that was already answered with an error while being parsed."""

    id: int | str
    jsonrpc: str = ""


class AnsweringProtocol(LanguageServerProtocol):
    """pygls' protocol, plus: requests with malformed params get -32602 instead of silence, and
    custom requests can have typed params (``register_request_type``)."""

    custom_types: dict[str, type] = {PROMPT: PromptRequest}

    @classmethod
    def register_request_type(cls, method: str, request_cls: type) -> None:
        """Give a custom method attrs-typed params (see ``PromptRequest`` for the shape)."""
        cls.custom_types[method] = request_cls

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: lsp.DidChangeTextDocumentParams):
        """A change to a document that was never opened (Emacs sends one for a file it could not send
        in didOpen, e.g. binary content named ``.py``) is ignored quietly, not an "Error in server" popup."""
        if not self._is_open(params.text_document.uri):
            log.debug("change to a document that is not open ignored: %s", params.text_document.uri)
            return
        yield from super().lsp_text_document__did_change(params)

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: lsp.DidCloseTextDocumentParams):
        if not self._is_open(params.text_document.uri):
            log.debug("close of a document that is not open ignored: %s", params.text_document.uri)
            return
        yield from super().lsp_text_document__did_close(params)

    def _is_open(self, uri: str) -> bool:
        from urllib.parse import unquote

        return unquote(uri) in self.workspace.text_documents

    def set_writer(self, writer, include_headers: bool = True):
        return super().set_writer(_ClientWriter(writer), include_headers)

    def get_message_type(self, method: str):
        return self.custom_types.get(method) or super().get_message_type(method)

    def structure_message(self, data: dict[str, Any]):
        try:
            if isinstance(data, dict) and "method" in data and not isinstance(data["method"], str):
                raise JsonRpcInvalidParams("the method is not a string")  # pygls fails on it with a traceback
            return super().structure_message(data)
        except (TypeError, ValueError, KeyError) as exc:  # e.g. unknown member names in a notification
            if isinstance(data, dict) and "method" in data:
                log.warning("malformed message for %r; ignored", str(data.get("method"))[:80])
                if "id" in data and isinstance(data["id"], (int, str)):
                    self._send_response(data["id"], error=JsonRpcInvalidParams(
                        f"Invalid message: {type(exc).__name__}").to_response_error())
                return _Answered(id="")
            raise
        except JsonRpcException as exc:
            is_request = isinstance(data, dict) and "id" in data and "method" in data
            if isinstance(data, dict) and "method" in data and not is_request:  # a notification: drop it
                log.warning("invalid params for notification %s; ignored", data.get("method"))
                return _Answered(id="")
            if not is_request:
                raise
            log.warning("invalid params for %s (request %s)", data.get("method"), data.get("id"))
            message = f"Invalid params for {data.get('method')}"
            if exc.__cause__ is not None:
                message += f": {_describe(exc.__cause__)}"
            self._send_response(data["id"], error=JsonRpcInvalidParams(message).to_response_error())
            return _Answered(id=data["id"])

    def handle_message(self, message):
        if isinstance(message, _Answered):
            return
        if not hasattr(message, "jsonrpc"):  # valid JSON, but not a JSON-RPC message: nothing to answer
            log.warning("ignored a frame that is not a JSON-RPC message (%s)", type(message).__name__)
            return
        try:
            return super().handle_message(message)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # e.g. $/cancelRequest {id: [..]}
            log.warning("ignored a malformed %s: %s: %s", getattr(message, "method", "message"),
                        type(exc).__name__, str(exc)[:200])


def _describe(exc: BaseException) -> str:
    """cattrs' nested validation errors as "required field missing @ $.params.context"."""
    try:
        from cattrs import transform_error

        details = transform_error(exc, path="$")
    except Exception:
        details = [str(exc)]
    return "; ".join(details)[:500]


# --- the server ------------------------------------------------------------------------------------


class CodeLlamaServer(LanguageServer):
    """Holds the resident model (``engine``) and what the features share. Handlers here and in
    ``actions.py`` and ``chat.py`` use only its public names (``engine``, ``settings``, ``completion``,
    ``index``, ``retriever``, ``trees``, ``inflight``, ``chat_service``, ``send_status``, ``wait_ready``, ...)."""

    def __init__(self, settings: Settings, *, engine=None) -> None:
        super().__init__("codellama-lsp", __version__, protocol_cls=AnsweringProtocol,
                         text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.base_settings = settings  # defaults < config file < environment < command line
        self.settings = settings
        self._init_options: dict[str, Any] = {}
        if engine is None:
            from ..engine.worker import Engine

            engine = Engine(settings)
        self.engine = engine
        self.trees = _make_trees()
        self.index = None
        self.retriever = None
        self.chat_service = None  # lsp/chat.py's, created on first use
        self.completion = CompletionService(engine, settings, trees=self.trees)
        self.completion.report = self._report_outcome
        self.state = "starting"
        self.state_message = ""
        self._settled = asyncio.Event()  # set while the state is "ready" or "error"
        self.completion.wait_ready = self.wait_ready
        # Latest latencies by kind: a chat answer must not read as the completion latency.
        self.last_ms: dict[str, float] = {}
        self.log_file: str | None = None  # set by ``serve``
        self.inflight = InFlight()
        self.shutdown_requested = False  # set by ``shutdown``: ``exit`` then ends with status 0
        self._load_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._log_handler: logging.Handler | None = None
        self.recent_edits: list[tuple[str, int, int]] = []  # (path, start_line, end_line), most recent last
        self._warm_timer: asyncio.TimerHandle | None = None
        self._warm_token: CancelToken | None = None
        self._index_notices: set[str] = set()  # told once per session
        self._shown_error = ""  # the last generation error shown to the user

    # -- status ----------------------------------------------------------------------------------

    def send_status(self, stats: dict[str, Any] | None = None) -> None:
        """Send ``codellama/status``: the model, its state, and the numbers of the last request."""
        info = self.engine.info
        payload: dict[str, Any] = {
            "model": (info.name if info else None) or self.settings.model,
            "device": info.device if info else None,
            "quantization": info.quantization if info else None,
            "runtime": info.runtime if info else None,
            "state": self.state,
            "message": self.state_message,
            "log_file": self.log_file,
            "pid": os.getpid(),
        }
        if self.index is not None:
            payload["index"] = self.index.summary()
        stats = stats or {}
        if isinstance(stats.get("total_ms"), (int, float)) and not stats.get("reason"):  # answered, not dropped
            self.last_ms["chat" if stats.get("source") == "chat" else "completion"] = stats["total_ms"]
        payload.update(stats)
        # Kept across notifications so a status bar can show each kind; ``total_ms`` stays "the last request".
        payload["last_completion_ms"] = self.last_ms.get("completion")
        payload["last_chat_ms"] = self.last_ms.get("chat")
        self.protocol.notify(STATUS, payload)

    def _set_state(self, state: str, message: str = "") -> None:
        self.state, self.state_message = state, message
        if state in ("ready", "error"):
            self._settled.set()
        else:
            self._settled.clear()
        self.send_status()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout``, default LOAD_WAIT_S) while the model is starting or loading;
        True when it is ready. An error state, or a model that failed to load, answers False at once."""
        if self.engine.ready:
            return True
        if self.state not in ("starting", "loading"):
            return False
        try:
            await asyncio.wait_for(self._settled.wait(), LOAD_WAIT_S if timeout is None else timeout)
        except asyncio.TimeoutError:
            log.info("still loading after %.0f s; the request is answered empty", LOAD_WAIT_S)
        return self.engine.ready

    def _report_outcome(self, outcome: CompletionOutcome) -> None:
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
            self.show(outcome.error, lsp.MessageType.Error)
        if outcome.error or outcome.source == "model":
            self._shown_error = outcome.error
        self.send_status(stats)

    # -- messages to the user --------------------------------------------------------------------

    def show(self, message: str, kind: lsp.MessageType = lsp.MessageType.Warning) -> None:
        self.window_show_message(lsp.ShowMessageParams(type=kind, message=f"codellama-lsp: {message}"))

    def start_editor_log(self) -> None:
        """Send this package's log records to the editor too (``window/logMessage``), from now on."""
        self._log_handler = EditorLogHandler(self._send_log, asyncio.get_running_loop())
        logging.getLogger("codellama_lsp").addHandler(self._log_handler)

    def _send_log(self, level: int, message: str) -> None:
        kind = (lsp.MessageType.Error if level >= logging.ERROR else lsp.MessageType.Warning
                if level >= logging.WARNING else lsp.MessageType.Info if level >= logging.INFO
                else lsp.MessageType.Log)
        try:
            self.window_log_message(lsp.LogMessageParams(type=kind, message=message))
        except Exception:  # the client may be gone; the log file still has it
            pass

    def spawn(self, coro) -> asyncio.Task:
        """Run a background coroutine, keeping a reference (asyncio only keeps weak ones)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- configuration ---------------------------------------------------------------------------

    def apply_client_settings(self, values: Any, *, source: str) -> list[str]:
        """Merge settings from the client over the server's own; report invalid ones by name;
        reload the model when a model setting changed. Returns the errors."""
        values = _section(values)
        if source == "initializationOptions":
            self._init_options = values
            new, errors = self.base_settings.updated(values)
        else:
            merged, _ = self.base_settings.updated(self._init_options)
            new, errors = merged.updated(values)
        for error in errors:
            log.warning("%s: %s", source, error)
        if errors:
            self.show("; ".join(errors) + " (defaults kept)")
        old, self.settings = self.settings, new
        self.completion.settings = new
        set_level(new.log_level, log_document_text=new.log_document_text)
        changed = sorted(k for k, v in new.as_dict().items() if getattr(old, k) != v)
        log.info("settings applied from %s; changed: %s", source, ", ".join(changed) or "nothing")
        if changed and self.index is not None and any(k.startswith("index_") for k in changed):
            self.spawn(self.restart_index())
        if changed:
            self.completion.forget()
            # a setting the loaded model was sized for (llama.cpp's context) reloads only when it no longer fits
            holds = self.engine.holds if self.engine.ready else None
            reasons = reload_reasons(old, new, holds) if self.state != "starting" else []
            if reasons:
                log.info("reloading the model for %s", ", ".join(reasons))
                self.spawn(self.load_model(reload=True))
        return errors

    async def pull_configuration(self) -> None:
        """``workspace/configuration`` for the "codellama" section, only if the client offers it."""
        caps = self.client_capabilities
        if not (caps and caps.workspace and caps.workspace.configuration):
            return
        try:
            result = await self.workspace_configuration_async(
                lsp.ConfigurationParams(items=[lsp.ConfigurationItem(section=CONFIG_SECTION)]))
        except Exception as exc:
            log.warning("workspace/configuration failed: %s", exc)
            return
        if result and isinstance(result[0], dict):
            self.apply_client_settings(result[0], source="workspace/configuration")

    # -- model loading ---------------------------------------------------------------------------

    async def load_model(self, *, reload: bool = False) -> None:
        """Load (or reload) the model on the engine's worker, reporting ``$/progress`` when the
        client supports it. Requests are answered meanwhile (empty until ready)."""
        if self._load_task is not None and self._load_task is not asyncio.current_task():
            if not self._load_task.done():
                await asyncio.wait([self._load_task])
        self._load_task = asyncio.current_task()
        self.inflight.cancel_all("reload")
        self._set_state("loading", f"loading {self.settings.model}")
        progress = await self._progress_begin("codellama-lsp", f"Loading {self.settings.model}")
        loop = asyncio.get_running_loop()

        def on_progress(percent: int, message: str) -> None:  # any thread
            if progress is not None:
                loop.call_soon_threadsafe(self._progress_report, progress, percent, message)

        started = time.perf_counter()
        gc.unfreeze()  # let the previous model's objects be collected
        try:
            if reload:
                await self.engine.reload(self.settings, on_progress)
            else:
                self.engine.settings = self.settings  # initializationOptions may have changed the model or backend
                await self.engine.load(on_progress)
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            log.error("model load failed: %s", message)
            self._set_state("error", message)
            self.show(message, lsp.MessageType.Error)
        else:
            info = self.engine.info
            if self.engine.notice:
                self.show(self.engine.notice, lsp.MessageType.Info)
            log.info("model %s ready on %s (%s) in %.1f s", info.name, info.device, info.quantization,
                     time.perf_counter() - started)
            # The model, tokenizer and libraries are hundreds of thousands of long-lived objects: keep
            # them out of the cyclic GC, whose full passes would otherwise stall requests for a while.
            gc.freeze()
            self._set_state("ready", "")
        finally:
            self._progress_end(progress, self.state_message or "Model ready")

    async def _progress_begin(self, title: str, message: str) -> str | None:
        caps = self.client_capabilities
        if not (caps and caps.window and caps.window.work_done_progress):
            return None
        token = str(uuid.uuid4())  # fresh each time: pygls never frees a token
        try:
            await self.work_done_progress.create_async(token)
        except Exception as exc:
            log.debug("progress not available: %s", exc)
            return None
        self.work_done_progress.begin(
            token, lsp.WorkDoneProgressBegin(title=title, message=message, percentage=0, cancellable=False))
        return token

    def _progress_report(self, token: str, percent: int, message: str) -> None:
        self.work_done_progress.report(
            token, lsp.WorkDoneProgressReport(message=message, percentage=max(0, min(100, int(percent)))))

    def _progress_end(self, token: str | None, message: str) -> None:
        if token is not None:
            self.work_done_progress.end(token, lsp.WorkDoneProgressEnd(message=message))

    # -- workspace index -------------------------------------------------------------------------

    def workspace_roots(self) -> list[str]:
        roots = []
        for folder in self.workspace.folders.values():
            path = _fs_path(folder.uri)
            if path:
                roots.append(path)
        if not roots and self.workspace.root_path:
            roots.append(self.workspace.root_path)
        return roots

    async def restart_index(self) -> None:
        """(Re)build the workspace index for the current folders. It fills on a background thread within the
        ``index_*`` caps; completions use what is there meanwhile and never wait for it."""
        from ..context.retrieval import Retriever
        from ..context.workspace import WorkspaceIndex

        old, roots = self.index, self.workspace_roots()
        self.index = self.retriever = self.completion.retriever = None
        if old is not None:
            await asyncio.to_thread(old.stop)
        if not roots:
            return
        s, loop = self.settings, asyncio.get_running_loop()
        try:
            index = WorkspaceIndex(roots, max_files=s.index_max_files, memory_mb=s.index_memory_mb,
                                   broad_roots=s.index_broad_roots, focus=list(self.open_documents()))
            index.on_state = lambda: loop.call_soon_threadsafe(self._index_state_changed, index)
            self.index = index
            self.retriever = self.completion.retriever = Retriever(index)  # fed by the index as it fills
            await asyncio.to_thread(index.start_background)
        except Exception:
            log.exception("workspace index failed for %s", roots)

    def _index_state_changed(self, index) -> None:
        """On the loop: tell the user each index notice once, log the result, refresh ``codellama/status``."""
        if index is not self.index:
            return
        for notice in index.notices:
            if notice not in self._index_notices:
                self._index_notices.add(notice)
                log.info("index: %s", notice)
                if notice not in index.quiet_notices:
                    self.show(notice, lsp.MessageType.Info)
        if index.state == "ready":
            info = index.summary()
            skipped = ", ".join(f"{n} {why}" for why, n in info["skipped"].items())
            log.info("indexed %d files in %s (skipped: %s)", info["files"], ", ".join(info["scope"]) or "nothing",
                     skipped or "none")
        self.send_status()

    # -- completion ------------------------------------------------------------------------------

    def open_documents(self) -> dict[str, str]:
        return {doc.path: doc.source for doc in self.workspace.text_documents.values() if doc.path}

    async def complete_at(self, uri: str, position: lsp.Position, *, trigger: str = INVOKED,
                          selected: lsp.SelectedCompletionInfo | None = None,
                          kind: str = "inline") -> tuple[CompletionOutcome, LineIndex]:
        """Complete at an LSP position; a newer request of the same ``kind`` for the same document
        supersedes this one (an inline and a completion request for one keystroke both get answered)."""
        if not self.engine.ready:
            # Wait for the model first, then read the document: a request can come before the editor's
            # didOpen (Neovim asks while its client still initializes), and the text it is about is the one
            # the editor has sent by the time the model is loaded.
            await self.wait_ready()
        doc = self.workspace.get_text_document(uri)
        try:
            text = doc.source
        except (OSError, UnicodeDecodeError):  # never opened and not readable on disk
            return CompletionOutcome(reason="unknown_document", uri=uri), LineIndex.of("")
        encoding = normalize_encoding(self.workspace.position_encoding)
        lines = LineIndex.of(text)
        offset = ranges.offset(text, position, encoding)
        chosen = None
        if selected is not None:
            chosen = Selected(ranges.offset(text, selected.range.start, encoding),
                              ranges.offset(text, selected.range.end, encoding), selected.text)
        self.stop_warming()
        token = self.inflight.start(kind, uri)
        version = doc.version
        busy = self.index.busy() if self.index is not None else contextlib.nullcontext()
        try:
            with busy:  # background indexing pauses meanwhile
                outcome = await self.completion.complete(
                    text, offset, uri=uri, path=doc.path, language_id=doc.language_id or "", cancel=token,
                    trigger=trigger, selected=chosen,
                    open_documents=self.open_documents() if self.settings.repo_context else None,
                    recent_edits=list(self.recent_edits), alternatives=kind == "inline")
        finally:
            self.inflight.finish(kind, uri, token)
        if outcome.text and doc.version != version:  # edited meanwhile: the suggestion is for old text
            outcome = CompletionOutcome(reason="stale", uri=uri)
        return outcome, lines

    def to_range(self, lines: LineIndex, start: int, end: int) -> lsp.Range:
        return ranges.to_range(lines.text, start, end, normalize_encoding(self.workspace.position_encoding))

    def note_edit(self, path: str, start_line: int, end_line: int) -> None:
        """Remember where the user edits (retrieval shows the model code around recent edits)."""
        last = self.recent_edits[-1] if self.recent_edits else None
        if last and last[0] == path and last[1] <= start_line <= last[2] + 1:
            self.recent_edits[-1] = (path, min(last[1], start_line), max(last[2], end_line))
        else:
            self.recent_edits.append((path, start_line, end_line))
            del self.recent_edits[:-MAX_RECENT_EDITS]

    # -- KV cache warm-up -------------------------------------------------------------------------

    def schedule_warm(self, uri: str, position: lsp.Position) -> None:
        """After a pause in typing, prefill the model's KV cache with the prompt at the edit, so the
        next completion there only prefills what changed. Cancelled by any real request."""
        self.stop_warming()
        if not self.engine.ready:
            return
        loop = asyncio.get_running_loop()
        self._warm_timer = loop.call_later(WARM_AFTER_S, lambda: self.spawn(self._warm(uri, position)))

    def stop_warming(self) -> None:
        if self._warm_timer is not None:
            self._warm_timer.cancel()
            self._warm_timer = None
        if self._warm_token is not None:
            self._warm_token.cancel("request")
            self._warm_token = None

    async def _warm(self, uri: str, position: lsp.Position) -> None:
        self._warm_timer = None
        if self.inflight or not self.engine.ready:
            return
        doc = self.workspace.get_text_document(uri)
        try:
            text = doc.source
        except (OSError, UnicodeDecodeError):
            return
        offset = ranges.offset(text, position, normalize_encoding(self.workspace.position_encoding))
        try:
            plan = await self.completion.off_loop(
                self.completion.build_plan, text, offset, uri=uri, path=doc.path, language_id=doc.language_id or "",
                open_documents=self.open_documents() if self.settings.repo_context else None,
                recent_edits=list(self.recent_edits), invoked=False)
        except Exception:
            log.exception("warm-up prompt failed")
            return
        if plan is None or not plan.prompt_ids:
            return
        token = self._warm_token = CancelToken()
        try:
            info = await self.engine.warm(plan.prompt_ids, token)
        except Exception as exc:
            log.debug("warm-up skipped: %s", exc)
            return
        finally:
            if self._warm_token is token:
                self._warm_token = None
        log.debug("warmed %s: %s", uri, info)

    def start_loading(self) -> None:
        """Load the model in the background (``initialized``); requests meanwhile wait for it, bounded."""
        self._load_task = self.spawn(self.load_model())


def _section(values: Any) -> dict[str, Any]:
    """Client settings arrive flat or under a "codellama" key (VS Code style); both are accepted."""
    if not isinstance(values, dict):
        return {}
    inner = values.get(CONFIG_SECTION)
    if isinstance(inner, dict):
        return inner
    return values


def _fs_path(uri: str) -> str | None:
    from pygls.uris import to_fs_path

    try:
        return to_fs_path(uri)
    except Exception:
        return None


def _make_trees():
    from ..context.syntax import DocumentTrees

    try:
        return DocumentTrees()
    except Exception:
        log.exception("tree-sitter unavailable")
        return None


def _language_of(doc) -> str:
    from ..context.syntax import language_for

    return language_for(doc.language_id or "", doc.path) or ""


# --- handlers: each parses its params, delegates to the server or a feature, and answers ------------


def initialize(ls: CodeLlamaServer, params: lsp.InitializeParams) -> None:
    install_document_model(ls.workspace)  # pygls' own edit application mis-splits lines
    if params.initialization_options is not None:
        ls.apply_client_settings(params.initialization_options, source="initializationOptions")


async def initialized(ls: CodeLlamaServer, params: lsp.InitializedParams) -> None:
    ls.start_editor_log()
    log.info("codellama-lsp %s, position encoding %s", __version__,
             normalize_encoding(ls.workspace.position_encoding))
    await ls.pull_configuration()
    ls.start_loading()
    ls.spawn(ls.restart_index())


async def did_change_configuration(ls: CodeLlamaServer, params: lsp.DidChangeConfigurationParams) -> None:
    caps = ls.client_capabilities
    if caps and caps.workspace and caps.workspace.configuration:
        await ls.pull_configuration()  # the pushed value may be null or partial (pull model)
    elif isinstance(params.settings, dict):
        ls.apply_client_settings(params.settings, source="workspace/didChangeConfiguration")


async def did_change_folders(ls: CodeLlamaServer, params: lsp.DidChangeWorkspaceFoldersParams) -> None:
    ls.spawn(ls.restart_index())


def did_open(ls: CodeLlamaServer, params: lsp.DidOpenTextDocumentParams) -> None:
    _update_tree(ls, params.text_document.uri)
    _tell_index(ls, "focus_on", params.text_document.uri)


def did_save(ls: CodeLlamaServer, params: lsp.DidSaveTextDocumentParams) -> None:
    _tell_index(ls, "saved", params.text_document.uri)


def did_change(ls: CodeLlamaServer, params: lsp.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    _update_tree(ls, uri)
    path = _fs_path(uri)
    cursor = None
    for change in params.content_changes:
        if isinstance(change, lsp.TextDocumentContentChangePartial):
            start = change.range.start
            lines = change.text.split("\n")
            end_line = start.line + len(lines) - 1
            if path:
                ls.note_edit(path, start.line, end_line)
            encoding = normalize_encoding(ls.workspace.position_encoding)
            column = (start.character if len(lines) == 1 else 0) + units(lines[-1], encoding)
            cursor = lsp.Position(line=end_line, character=column)
    ls.inflight.cancel_document(uri, "edited")  # a suggestion for the old text is of no use
    if cursor is not None:
        ls.schedule_warm(uri, cursor)


def did_close(ls: CodeLlamaServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.completion.forget(uri)
    ls.inflight.cancel_document(uri, "closed")


async def inline_completion(ls: CodeLlamaServer, params: lsp.InlineCompletionParams) -> lsp.InlineCompletionList:
    context = params.context
    trigger = AUTOMATIC if context.trigger_kind == lsp.InlineCompletionTriggerKind.Automatic else INVOKED
    outcome, lines = await ls.complete_at(params.text_document.uri, params.position, trigger=trigger,
                                          selected=context.selected_completion_info)
    if not outcome.text:
        return lsp.InlineCompletionList(items=[])
    # an invoked request (the user asked, or pressed "next") gets the alternatives too, best first
    answers = [(outcome.text, outcome.replace_end), *outcome.alternatives]
    return lsp.InlineCompletionList(items=[
        lsp.InlineCompletionItem(insert_text=text, range=ls.to_range(lines, outcome.replace_start, end))
        for text, end in answers])


async def completion(ls: CodeLlamaServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    """The fallback for clients without inline completion: one clearly labelled item. Clients that
    have inline completion get nothing here (the same suggestion twice, and two requests per keystroke
    superseding each other, would be worse than none)."""
    caps = ls.client_capabilities
    if caps and caps.text_document and caps.text_document.inline_completion is not None:
        return lsp.CompletionList(is_incomplete=False, items=[])
    invoked = params.context is None or params.context.trigger_kind == lsp.CompletionTriggerKind.Invoked
    outcome, lines = await ls.complete_at(params.text_document.uri, params.position,
                                          trigger=INVOKED if invoked else AUTOMATIC, kind="completion")
    if not outcome.text:
        return lsp.CompletionList(is_incomplete=True, items=[])
    first = outcome.text.strip().splitlines()[0] if outcome.text.strip() else outcome.text
    label = "codellama: " + (first[:60] + ("…" if len(first) > 60 or "\n" in outcome.text.strip() else ""))
    edit = lsp.TextEdit(range=ls.to_range(lines, outcome.replace_start, outcome.replace_end),
                        new_text=outcome.text)
    item = lsp.CompletionItem(
        label=label, kind=lsp.CompletionItemKind.Text, detail="codellama-lsp suggestion",
        documentation=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=f"```\n{outcome.text}\n```"),
        text_edit=edit, filter_text=outcome.text, sort_text="0", preselect=True,
        insert_text_format=lsp.InsertTextFormat.PlainText)
    return lsp.CompletionList(is_incomplete=True, items=[item])


async def prompt(ls: CodeLlamaServer, params: lsp.TextDocumentPositionParams) -> dict[str, Any]:
    """What the model sees (and answers) at a position: the JSON of ``complete --show-prompt --json``."""
    if not await ls.wait_ready():
        raise jsonrpc_error(RequestError(f"model not ready ({ls.state})"))
    uri = params.text_document.uri
    doc = ls.workspace.get_text_document(uri)
    try:
        text = doc.source
    except (OSError, UnicodeDecodeError) as exc:
        raise jsonrpc_error(RequestError(f"cannot read {uri}: {exc}")) from None
    offset = ranges.offset(text, params.position, normalize_encoding(ls.workspace.position_encoding))
    return await ls.completion.prompt(text, offset, uri=uri, path=doc.path, language_id=doc.language_id or "",
                                      open_documents=ls.open_documents() if ls.settings.repo_context else None,
                                      recent_edits=list(ls.recent_edits))


async def ping(ls: CodeLlamaServer, params: Any) -> dict[str, Any]:
    """Answered straight from the event loop: how responsive the server is while the model works."""
    return {"state": ls.state, "time": time.time()}


def shutdown(ls: CodeLlamaServer, params: Any) -> None:
    ls.shutdown_requested = True
    ls.stop_warming()
    ls.inflight.cancel_all("shutdown")
    if ls.index is not None:
        try:
            ls.index.stop()
        except Exception:
            log.exception("index stop failed")
    ls.completion.close()
    try:
        ls.engine.close()
    except Exception:
        log.exception("engine close failed")


def exit_(ls: CodeLlamaServer, params: Any) -> None:
    """Leave at once: tearing down torch and a few hundred thousand objects at interpreter exit
    takes seconds, and the editor waits for the process (everything worth keeping was saved at
    ``shutdown``)."""
    logging.shutdown()
    os._exit(0 if ls.shutdown_requested else 1)


HANDLERS = (
    (lsp.INITIALIZE, initialize),
    (lsp.INITIALIZED, initialized),
    (lsp.WORKSPACE_DID_CHANGE_CONFIGURATION, did_change_configuration),
    (lsp.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS, did_change_folders),
    (lsp.TEXT_DOCUMENT_DID_OPEN, did_open),
    (lsp.TEXT_DOCUMENT_DID_SAVE, did_save),
    (lsp.TEXT_DOCUMENT_DID_CHANGE, did_change),
    (lsp.TEXT_DOCUMENT_DID_CLOSE, did_close),
    (lsp.TEXT_DOCUMENT_INLINE_COMPLETION, inline_completion, lsp.InlineCompletionOptions(work_done_progress=False)),
    (lsp.TEXT_DOCUMENT_COMPLETION, completion, lsp.CompletionOptions(resolve_provider=False)),
    (PROMPT, prompt),
    (PING, ping),
    (lsp.SHUTDOWN, shutdown),
    (lsp.EXIT, exit_),
)


def create_server(settings: Settings, *, engine=None) -> CodeLlamaServer:
    """Build the server with every feature registered: the handlers below, code actions and chat."""
    server = CodeLlamaServer(settings, engine=engine)
    for method, handler, *options in HANDLERS:
        server.feature(method, *options)(handler)
    actions.register(server)
    chat.register(server)
    return server


def _tell_index(ls: CodeLlamaServer, method: str, uri: str) -> None:
    """An opened or saved document, for the index (off the loop: it may read and parse the file)."""
    path = _fs_path(uri)
    if ls.index is not None and path:
        ls.spawn(asyncio.to_thread(getattr(ls.index, method), path))


def _update_tree(ls: CodeLlamaServer, uri: str) -> None:
    if ls.trees is None:
        return
    doc = ls.workspace.get_text_document(uri)
    language = _language_of(doc)
    if not language:
        return
    try:
        text = doc.source
    except (OSError, UnicodeDecodeError):  # a change for a document never opened, not readable (or refused)
        return
    if len(text) > MAX_TREE_CHARS:
        ls.trees.close(uri)
        return
    try:
        ls.trees.update(uri, text, language)
    except Exception:
        log.exception("parse failed for %s", uri)
