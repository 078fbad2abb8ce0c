"""Drive the real ``codellama-lsp serve`` over stdio, as an editor would, with pygls' language client.

One ``ServerSession`` = one server process with one set of settings (``initializationOptions``): initialize
with a workspace folder, wait for the ``codellama/status`` notification that says the model is ready, then for
each task open the hole-less program as a virtual document, ask for an inline completion at the hole, apply
the returned item (its ``range`` included) to the document, and close the document again.

Positions are computed in the position encoding the server chose in its ``InitializeResult``, so the cursor
lands on the hole even in tasks with non-ASCII text.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from ..positions import LineIndex, normalize_encoding

STATUS_METHOD = "codellama/status"


class ServerError(Exception):
    """The server could not be started, did not become ready, or died (message includes its stderr tail)."""


@dataclass
class Completion:
    """What one inline-completion request did to the document."""

    document: str  # the document after applying the first item (unchanged when there was none)
    inserted: str  # the item's text as sent
    latency_ms: float
    items: int
    error: str = ""  # non-empty when the request failed
    stats: dict = field(default_factory=dict)  # the server's codellama/status numbers for this request


@dataclass
class _Capture:
    statuses: list[dict] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class _Client(LanguageClient):
    """pygls' client plus what a long unattended run needs: the server's stderr drained to a log file (an
    undrained pipe would eventually block the server) and a note of why the server went away."""

    def __init__(self, stderr_log: Path):
        super().__init__("codellama-lsp-bench", "1")
        self._stderr_log = stderr_log
        self._drain: asyncio.Task | None = None
        self.exited: str = ""

    async def start_io(self, cmd: str, *args, **kwargs):
        await super().start_io(cmd, *args, **kwargs)
        if self._server is not None and self._server.stderr is not None:
            self._drain = asyncio.create_task(self._drain_stderr(self._server.stderr))

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        with open(self._stderr_log, "ab") as log:
            while chunk := await stream.read(65536):
                log.write(chunk)
                log.flush()

    async def server_exit(self, server):
        # pygls has already failed the pending requests; remember why, for the error message
        self.exited = f"server exited with code {server.returncode}"

    async def stop(self):
        await super().stop()
        if self._drain is not None:
            await asyncio.wait([self._drain], timeout=5)


def default_server_command() -> list[str]:
    return [sys.executable, "-m", "codellama_lsp.cli", "serve"]


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the server: ``base`` (default: ours) with this package importable, so the harness
    also works from a plain checkout (``python bench/fim_eval.py``) where the package is not installed."""
    env = dict(os.environ if base is None else base)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _snippet_to_text(value: str) -> str:
    """Plain text of an LSP snippet: tab stops and placeholders become their default text."""
    value = re.sub(r"(?<!\\)\$\{\d+:([^}]*)\}", r"\1", value)
    value = re.sub(r"(?<!\\)(\$\{\d+\}|\$\d+)", "", value)
    return value.replace("\\$", "$").replace("\\}", "}").replace("\\\\", "\\")


def _item_text(item: types.InlineCompletionItem) -> str:
    text = item.insert_text
    if isinstance(text, types.StringValue):
        return _snippet_to_text(text.value)
    return text or ""


class ServerSession:
    """An initialized server. Use as ``async with ServerSession(...) as session``."""

    def __init__(
        self,
        *,
        init_options: dict,
        workspace: Path,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        stderr_log: Path,
        ready_timeout_s: float = 900.0,
        request_timeout_s: float = 120.0,
    ):
        self.init_options = init_options
        self.workspace = Path(workspace)
        self.command = command or default_server_command()
        self.env = env
        self.stderr_log = Path(stderr_log)
        self.ready_timeout_s = ready_timeout_s
        self.request_timeout_s = request_timeout_s
        self.encoding = "utf-16"
        self.capture = _Capture()
        self.client = _Client(self.stderr_log)
        self._register_handlers()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def _register_handlers(self) -> None:
        capture = self.capture

        @self.client.feature(STATUS_METHOD)
        def on_status(params):
            status = _plain(params)
            capture.statuses.append(status)
            if status.get("state") in ("ready", "error"):
                capture.ready.set()

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(params: types.ShowMessageParams):
            capture.messages.append(params.message)

        @self.client.feature(types.WINDOW_LOG_MESSAGE)
        def on_log(params: types.LogMessageParams):
            pass

        @self.client.feature("codellama/chatChunk")
        def on_chunk(params):
            pass

    def stderr_tail(self, lines: int = 25) -> str:
        try:
            text = self.stderr_log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def __aenter__(self) -> "ServerSession":
        try:
            await self.client.start_io(self.command[0], *self.command[1:], env=self.env, cwd=str(self.workspace))
        except OSError as exc:
            raise ServerError(f"cannot start {' '.join(self.command)}: {exc}") from exc
        try:
            await self._initialize()
            await self._wait_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _initialize(self) -> None:
        capabilities = types.ClientCapabilities(
            general=types.GeneralClientCapabilities(
                position_encodings=[types.PositionEncodingKind.Utf16],
            ),
            text_document=types.TextDocumentClientCapabilities(
                synchronization=types.TextDocumentSyncClientCapabilities(),
                inline_completion=types.InlineCompletionClientCapabilities(dynamic_registration=False),
            ),
            workspace=types.WorkspaceClientCapabilities(workspace_folders=True),
        )
        folder = types.WorkspaceFolder(uri=self.workspace.as_uri(), name=self.workspace.name)
        params = types.InitializeParams(
            capabilities=capabilities,
            process_id=os.getpid(),
            root_uri=folder.uri,
            workspace_folders=[folder],
            initialization_options=self.init_options,
            client_info=types.ClientInfo(name="codellama-lsp-bench"),
        )
        result = await self._request(self.client.initialize_async(params), "initialize", self.request_timeout_s)
        self.server_capabilities = result.capabilities
        self.encoding = normalize_encoding(result.capabilities.position_encoding)
        if result.capabilities.inline_completion_provider in (None, False):
            raise ServerError("the server does not advertise inlineCompletionProvider")
        self.client.initialized(types.InitializedParams())

    async def _wait_ready(self) -> None:
        waiter = asyncio.ensure_future(self.capture.ready.wait())
        try:
            await self._guard(waiter, "waiting for the model to load", self.ready_timeout_s)
        finally:
            waiter.cancel()
        last = self.capture.statuses[-1]
        if last.get("state") == "error":
            raise ServerError(f"the model failed to load: {last.get('message', '')}\n{self.stderr_tail()}")

    @property
    def model_info(self) -> dict:
        """The last ``codellama/status`` notification (model, device, quantization, ...)."""
        return dict(self.capture.statuses[-1]) if self.capture.statuses else {}

    async def close(self) -> None:
        client = self.client
        if client.exited or client._server is None:
            await client.stop()
            return
        try:
            await asyncio.wait_for(client.shutdown_async(None), timeout=30)
            client.exit(None)
            await asyncio.wait_for(client._server.wait(), timeout=30)
        except (asyncio.TimeoutError, Exception):
            if client._server.returncode is None:
                client._server.kill()
        await client.stop()

    # -- requests --------------------------------------------------------------------------------------------

    async def _guard(self, awaitable, what: str, timeout: float):
        """Await ``awaitable`` but give up when the server dies or ``timeout`` passes."""
        task = asyncio.ensure_future(awaitable)
        server = self.client._server
        died = asyncio.ensure_future(server.wait()) if server is not None else None
        try:
            done, _ = await asyncio.wait([t for t in (task, died) if t], timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if died is not None:
                died.cancel()
        if task in done:
            try:
                return task.result()
            except Exception as exc:
                if server is not None and server.returncode is not None:
                    raise ServerError(f"server exited (code {server.returncode}) while {what}\n{self.stderr_tail()}") from exc
                raise
        task.cancel()
        if died is not None and died in done:
            raise ServerError(f"server exited (code {server.returncode}) while {what}\n{self.stderr_tail()}")
        raise ServerError(f"timed out after {timeout:g} s {what}\n{self.stderr_tail()}")

    async def _request(self, awaitable, what: str, timeout: float):
        return await self._guard(awaitable, f"answering {what}", timeout)

    def open(self, uri: str, text: str, language_id: str = "python") -> None:
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=1, text=text)
            )
        )

    def close_document(self, uri: str) -> None:
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    async def complete(self, uri: str, text: str, offset: int) -> Completion:
        """Inline completion at ``offset`` of the open document ``uri`` whose content is ``text``."""
        index = LineIndex.of(text)
        line, character = index.position_at(offset, self.encoding)
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
        seen = len(self.capture.statuses)
        started = time.perf_counter()
        try:
            answer = await self._request(
                self.client.text_document_inline_completion_async(params), "inlineCompletion", self.request_timeout_s
            )
        except ServerError:
            raise
        except Exception as exc:  # an LSP error answer: record it, keep going
            return Completion(text, "", (time.perf_counter() - started) * 1000, 0, error=f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        # the server reports each request's numbers in a status notification sent before its answer
        stats = next((dict(s) for s in reversed(self.capture.statuses[seen:]) if s.get("uri") == uri), {})
        for key in ("model", "device", "quantization", "state", "message", "uri"):
            stats.pop(key, None)
        items = answer.items if isinstance(answer, types.InlineCompletionList) else (answer or [])
        if not items:
            return Completion(text, "", latency, 0, stats=stats)
        item = items[0]
        inserted = _item_text(item)
        if item.range is not None:
            start = index.offset_at(item.range.start.line, item.range.start.character, self.encoding)
            end = index.offset_at(item.range.end.line, item.range.end.character, self.encoding)
            start, end = min(start, end), max(start, end)
        else:
            start = end = offset
        return Completion(text[:start] + inserted + text[end:], inserted, latency, len(items), stats=stats)


def _plain(params) -> dict:
    """Notification params as a plain dict (pygls hands custom-method params over as a namedtuple-like object)."""
    if isinstance(params, dict):
        return params
    if hasattr(params, "_asdict"):
        return {k: _plain(v) if hasattr(v, "_asdict") else v for k, v in params._asdict().items()}
    try:
        return dict(vars(params))
    except TypeError:
        return {"value": params}


def hole_text(document: str, prefix: str, suffix: str) -> str:
    """The text between ``prefix`` and ``suffix`` in an edited document; when an edit reached into the prefix or
    the suffix, the part that differs (longest common head and tail removed)."""
    if len(document) >= len(prefix) + len(suffix) and document.startswith(prefix) and document.endswith(suffix):
        return document[len(prefix): len(document) - len(suffix)]
    head = 0
    while head < min(len(document), len(prefix)) and document[head] == prefix[head]:
        head += 1
    tail = 0
    while (tail < min(len(document) - head, len(suffix))
           and document[len(document) - 1 - tail] == suffix[len(suffix) - 1 - tail]):
        tail += 1
    return document[head: len(document) - tail]
