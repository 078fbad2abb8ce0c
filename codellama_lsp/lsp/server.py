"""The language server: the LSP wiring — handlers that parse, delegate and answer — and nothing else.

Model work is the engine's (one worker thread), prompts are the context engine's, and the request
logic is ``completion.py``'s. What the server itself keeps is split by job into the modules beside it:
``protocol.py`` (every request gets an answer), ``model_lifecycle.py`` (the model's state, loads and
reloads), ``client_settings.py`` (settings from the client and what a change sets off),
``index_lifecycle.py`` (the workspace index of the editor's folders), ``warmup.py`` (KV-cache warm-up
while the user pauses) and ``status.py`` (``codellama/status``). Left here: the server object that holds
them, which request supersedes which, and the handlers with their registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from .. import __version__
from ..config import Settings
from ..errors import RequestError
from ..features.completion import AUTOMATIC, INVOKED, CompletionOutcome, CompletionService, Selected
from ..logs import EditorLogHandler
from ..positions import LineIndex, normalize_encoding, units
from . import actions, chat, ranges
from .client_settings import ClientSettings
from .documents import fs_path, install_document_model
from .errors import jsonrpc_error
from .index_lifecycle import IndexLifecycle
from .inflight import InFlight
from .model_lifecycle import ModelLifecycle
from .protocol import PROMPT, AnsweringProtocol
from .status import StatusReporter
from .warmup import KvCacheWarmup

log = logging.getLogger(__name__)

PING = "codellama/ping"
MAX_RECENT_EDITS = 16
# Documents longer than this get no incremental syntax tree: re-parsing one costs seconds per keystroke at
# 20 MB; the prompt then parses only the cursor's neighbourhood (as for any document without a tree).
MAX_TREE_CHARS = 2_000_000


class CodeLlamaServer(LanguageServer):
    """Holds the resident model (``engine``) and what the features share. Handlers here and in
    ``actions.py`` and ``chat.py`` use only its public names (``engine``, ``settings``, ``completion``,
    ``index``, ``retriever``, ``trees``, ``inflight``, ``chat_service``, ``send_status``, ``wait_ready``, ...)
    and its parts: ``model_lifecycle``, ``client_settings``, ``index_lifecycle``, ``warmup`` and ``status``."""

    def __init__(self, settings: Settings, *, engine=None) -> None:
        super().__init__("codellama-lsp", __version__, protocol_cls=AnsweringProtocol,
                         text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.client_settings = ClientSettings(self, settings)
        if engine is None:
            from ..engine.worker import Engine

            engine = Engine(settings)
        self.engine = engine
        self.trees = _make_trees()
        self.chat_service = None  # lsp/chat.py's, created on first use
        self.completion = CompletionService(engine, settings, trees=self.trees)
        self.model_lifecycle = ModelLifecycle(self)
        self.status = StatusReporter(self)
        self.index_lifecycle = IndexLifecycle(self)
        self.warmup = KvCacheWarmup(self)
        self.completion.report = self.status.report_outcome
        self.completion.wait_ready = self.wait_ready
        self.log_file: str | None = None  # set by ``serve``
        self.inflight = InFlight()
        self.shutdown_requested = False  # set by ``shutdown``: ``exit`` then ends with status 0
        self._background: set[asyncio.Task] = set()
        self._log_handler: logging.Handler | None = None
        self.recent_edits: list[tuple[str, int, int]] = []  # (path, start_line, end_line), most recent last

    # -- what the parts hold, by the names handlers use ------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force: the server's own with the client's over them."""
        return self.client_settings.current

    @property
    def state(self) -> str:
        """The model's state: starting, loading, ready or error."""
        return self.model_lifecycle.state

    @property
    def state_message(self) -> str:
        return self.model_lifecycle.message

    @property
    def index(self):
        """The workspace index (``context.workspace.WorkspaceIndex``), None without one."""
        return self.index_lifecycle.index

    @property
    def retriever(self):
        return self.index_lifecycle.retriever

    def send_status(self, stats: dict[str, Any] | None = None) -> None:
        """Send ``codellama/status``: the model, its state, and the numbers of the last request."""
        self.status.send(stats)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait (bounded) while the model is starting or loading; True when it is ready."""
        return await self.model_lifecycle.wait_ready(timeout)

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
        self.warmup.stop()
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
        ls.client_settings.apply(params.initialization_options, source="initializationOptions")


async def initialized(ls: CodeLlamaServer, params: lsp.InitializedParams) -> None:
    ls.start_editor_log()
    log.info("codellama-lsp %s, position encoding %s", __version__,
             normalize_encoding(ls.workspace.position_encoding))
    await ls.client_settings.pull()
    ls.model_lifecycle.start_loading()
    ls.spawn(ls.index_lifecycle.restart())


async def did_change_configuration(ls: CodeLlamaServer, params: lsp.DidChangeConfigurationParams) -> None:
    caps = ls.client_capabilities
    if caps and caps.workspace and caps.workspace.configuration:
        await ls.client_settings.pull()  # the pushed value may be null or partial (pull model)
    elif isinstance(params.settings, dict):
        ls.client_settings.apply(params.settings, source="workspace/didChangeConfiguration")


async def did_change_folders(ls: CodeLlamaServer, params: lsp.DidChangeWorkspaceFoldersParams) -> None:
    ls.spawn(ls.index_lifecycle.restart())


def did_open(ls: CodeLlamaServer, params: lsp.DidOpenTextDocumentParams) -> None:
    _update_tree(ls, params.text_document.uri)
    _tell_index(ls, "focus_on", params.text_document.uri)


def did_save(ls: CodeLlamaServer, params: lsp.DidSaveTextDocumentParams) -> None:
    _tell_index(ls, "saved", params.text_document.uri)


def did_change(ls: CodeLlamaServer, params: lsp.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    _update_tree(ls, uri)
    path = fs_path(uri)
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
        ls.warmup.schedule(uri, cursor)


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
    ls.warmup.stop()
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
    path = fs_path(uri)
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
