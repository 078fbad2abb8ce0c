"""The one harness that drives the real ``codellama-lsp serve`` over stdio, as an editor would.

Tests, benchmarks and the HumanEval-infilling evaluation all start the server through ``ServerSession``:

- the server process (``python -m codellama_lsp serve``, or any command) in an environment of its own:
  with ``home``, config/state/cache directories under it and a log file ``home/server.log``, so a
  developer's own ``config.toml`` never changes a test or a figure; this package importable from a plain
  checkout (``python bench/x.py``);
- its stderr drained (an undrained pipe would eventually block the server) to a file or to ours;
- ``initialize`` with the client capabilities asked for and the position encoding read back from the answer;
- ``client.notes``: every ``codellama/status``, ``window/logMessage`` and ``window/showMessage``, with
  ``await notes.wait_for(...)`` to wait for an event instead of sleeping;
- waits that give up with the server's stderr tail when the server dies (``ServerError``);
- ``shutdown`` + ``exit`` on leaving, and a kill when the server does not go.

The client is pygls' ``LanguageClient`` (``HarnessClient``). The test suite passes pytest-lsp's
``LanguageClient`` instead (tests/lsp_client.py), for what only it has: checks of every server message
against the client's capabilities, recorded ``$/progress`` reports, and real editors' recorded capabilities.

Also here: ``complete()`` applies an inline-completion answer to a document (positions in the encoding the
server chose, so the cursor lands on the hole even in non-ASCII text), and ``hole_text()`` reads the filled
hole back. Bench scripts that must write malformed bytes or run editors on threads use ``bench/raw_lsp.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from ..positions import LineIndex, normalize_encoding

STATUS_METHOD = STATUS = "codellama/status"
DEFAULT_TIMEOUT = 120.0
IN_HOME = object()  # ServerSession's default root: ``home/workspace``
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class ServerError(Exception):
    """The server could not be started, did not become ready, or died (message includes its stderr tail)."""


# -- the server's process ------------------------------------------------------------------------------------


def default_server_command() -> list[str]:
    return [sys.executable, "-m", "codellama_lsp.cli", "serve"]


def server_command(*, log: Path | None = None, model: Path | str | None = None, args=()) -> list[str]:
    """``python -m codellama_lsp serve`` with a log file, a model and extra arguments."""
    cmd = [sys.executable, "-m", "codellama_lsp", "serve"]
    if log is not None:
        cmd += ["--log-file", str(log)]
    cmd += list(args)
    if model is not None:
        cmd += ["--model", str(model)]
    return cmd


def server_env(home: Path | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a server: ``base`` (default: ours) with this package importable, so the harness also
    works from a plain checkout where the package is not installed. With ``home``: config, state and cache
    directories of its own under ``home``, offline, no model named by the environment."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    if home is not None:
        for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache")):
            env[var] = str(Path(home) / sub)
        env["HF_HUB_OFFLINE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("CODELLAMA_LSP_MODEL", None)
    return env


def log_file(home: Path) -> Path:
    return Path(home) / "server.log"


def stderr_tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- what the server tells the client ------------------------------------------------------------------------


def to_plain(value: Any) -> Any:
    """pygls hands custom notifications over as nested namedtuples; callers want dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: to_plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


class Notes:
    """Notifications from the server, in arrival order, with waiting on a condition."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.logs: list[str] = []
        self.shown: list[str] = []  # window/showMessage texts
        self._waiters: list[asyncio.Future] = []

    def _changed(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    def add_status(self, params: Any) -> None:
        self.statuses.append(to_plain(params))
        self._changed()

    def add_log(self, message: str) -> None:
        self.logs.append(message)
        self._changed()

    def add_shown(self, message: str) -> None:
        self.shown.append(message)
        self._changed()

    async def wait_for(self, check: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Wait until ``check()`` returns something truthy (re-checked on every notification)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = check()
            if found:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s; statuses: {self.statuses[-5:]}")
            fut = loop.create_future()
            self._waiters.append(fut)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, remaining)

    async def wait_status(self, predicate: Callable[[dict], bool], *, after: int = 0,
                          timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The first status at index >= ``after`` that matches ``predicate``."""
        return await self.wait_for(
            lambda: next((s for s in self.statuses[after:] if predicate(s)), None), timeout)

    async def wait_log(self, needle: str, *, after: int = 0, timeout: float = DEFAULT_TIMEOUT) -> str:
        return await self.wait_for(lambda: next((m for m in self.logs[after:] if needle in m), None), timeout)

    async def wait_shown(self, needle: str, *, after: int = 0, timeout: float = DEFAULT_TIMEOUT) -> str:
        return await self.wait_for(lambda: next((m for m in self.shown[after:] if needle in m), None), timeout)

    async def wait_loaded(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The first status that says the model is ready or failed to load."""
        return await self.wait_status(lambda s: s.get("state") in ("ready", "error"), timeout=timeout)

    async def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        status = await self.wait_loaded(timeout)
        assert status["state"] == "ready", f"model failed to load: {status.get('message')}"
        return status

    def index_state(self) -> dict:
        """The workspace index block of the last status that carried one."""
        return next((s["index"] or {} for s in reversed(self.statuses) if "index" in s), {})


def notes_features(notes: Notes, base: dict[str, Callable] | None = None) -> dict[str, Callable]:
    """Client handlers that record into ``notes``, calling ``base``'s handlers for the same messages first."""
    features = dict(base or {})

    def chained(method: str, add: Callable[[str], None]) -> Callable:
        default = features.get(method)

        def handler(ls, params) -> None:  # pygls passes the client to a first parameter named ``ls``
            if default is not None:
                default(ls, params)
            add(params.message)
        return handler

    features[types.WINDOW_LOG_MESSAGE] = chained(types.WINDOW_LOG_MESSAGE, notes.add_log)
    features[types.WINDOW_SHOW_MESSAGE] = chained(types.WINDOW_SHOW_MESSAGE, notes.add_shown)
    features[STATUS] = lambda ls, params: notes.add_status(params)
    return features


def _answer_configuration(ls: "HarnessClient", params: types.ConfigurationParams):
    return [ls.settings for _ in params.items]


PLAIN_FEATURES: dict[str, Callable] = {
    types.WORKSPACE_CONFIGURATION: _answer_configuration,  # every section pulled gets ``client.settings``
    types.WINDOW_WORK_DONE_PROGRESS_CREATE: lambda ls, params: None,
    types.PROGRESS: lambda ls, params: None,
}


def register(client: LanguageClient, features: dict[str, Callable]) -> None:
    for method, handler in features.items():
        client.feature(method)(handler)


class HarnessClient(LanguageClient):
    """pygls' client with ``notes``, ``settings`` (the answer to ``workspace/configuration``), the server's stderr
    drained to ``stderr_log`` (or to ours), a note of why the server went away, and the same
    ``initialize_session`` / ``shutdown_session`` as pytest-lsp's client."""

    def __init__(self, stderr_log: Path | None = None, name: str = "codellama-lsp-harness"):
        super().__init__(name, "1")
        self.notes = Notes()
        self.settings: dict = {}
        self.exited = ""
        self._stderr_log = stderr_log
        self._drain: asyncio.Task | None = None
        register(self, notes_features(self.notes, PLAIN_FEATURES))

    async def start_io(self, cmd: str, *args, **kwargs):
        await super().start_io(cmd, *args, **kwargs)
        if self._server is not None and self._server.stderr is not None:
            self._drain = asyncio.create_task(self._drain_stderr(self._server.stderr))

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        if self._stderr_log is None:
            while chunk := await stream.read(65536):
                sys.stderr.buffer.write(chunk)
            return
        with open(self._stderr_log, "ab") as log:
            while chunk := await stream.read(65536):
                log.write(chunk)
                log.flush()

    async def server_exit(self, server):
        # pygls has already failed the pending requests; remember why, for the error message
        self.exited = f"server exited with code {server.returncode}"

    async def initialize_session(self, params: types.InitializeParams) -> types.InitializeResult:
        if params.process_id is None:
            params.process_id = os.getpid()
        result = await self.initialize_async(params)
        self.initialized(types.InitializedParams())
        return result

    async def shutdown_session(self) -> None:
        await self.shutdown_async(None)
        self.exit(None)
        if self._server is not None:
            await self._server.wait()

    async def stop(self):
        await super().stop()
        if self._drain is not None:
            await asyncio.wait([self._drain], timeout=5)


def plain_capabilities(encoding: str = "utf-16", *, configuration: bool = False, progress: bool = False,
                       did_save: bool = False) -> types.ClientCapabilities:
    """A minimal editor: one position encoding, inline completion, workspace folders."""
    return types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=[encoding]),
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(did_save=did_save or None),
            inline_completion=types.InlineCompletionClientCapabilities(dynamic_registration=False),
        ),
        workspace=types.WorkspaceClientCapabilities(workspace_folders=True, configuration=configuration or None),
        window=types.WindowClientCapabilities(work_done_progress=progress) if progress else None,
    )


# -- the session ---------------------------------------------------------------------------------------------


@dataclass
class Completion:
    """What one inline-completion request did to the document."""

    document: str  # the document after applying the first item (unchanged when there was none)
    inserted: str  # the item's text as sent
    latency_ms: float
    items: int
    error: str = ""  # non-empty when the request failed
    stats: dict = field(default_factory=dict)  # the server's codellama/status numbers for this request


class ServerSession:
    """A started and initialized server. Use as ``async with ServerSession(...) as session``.

    ``home``: config/state/cache directories, ``server.log``, ``stderr.log`` and (unless ``root`` is given;
    None: no root) the workspace folder ``home/workspace``; ``model`` and ``args`` go on the command line; ``init_options``
    become ``initializationOptions``; ``settings`` answer ``workspace/configuration`` pulls. With
    ``ready_timeout_s`` set, entering waits for the model (a load error raises ``ServerError``); with None the
    caller waits (``await session.notes.wait_ready()``)."""

    def __init__(
        self,
        home: Path | None = None,
        *,
        root: Path | None | object = IN_HOME,
        folders: list[Path] | None = None,
        model: Path | str | None = None,
        args=(),
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        init_options: dict | None = None,
        settings: dict | None = None,
        caps: types.ClientCapabilities | None = None,
        encoding: str = "utf-16",
        client: LanguageClient | None = None,
        stderr_log: Path | None = None,
        client_info: str | None = None,
        ready_timeout_s: float | None = 900.0,
        request_timeout_s: float = 120.0,
    ):
        self.home = Path(home) if home is not None else None
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True)
        if root is IN_HOME:
            root = self.home / "workspace" if self.home is not None else None
        self.root = Path(root) if root is not None else None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        self.folders = folders if folders is not None else ([self.root] if self.root is not None else [])
        if command is None:
            command = server_command(log=log_file(self.home) if self.home else None, model=model, args=args)
        self.command = command
        self.env = env if env is not None else server_env(self.home)
        self.cwd = cwd
        self.init_options = init_options
        if stderr_log is None and self.home is not None:
            stderr_log = self.home / "stderr.log"
        self.stderr_log = Path(stderr_log) if stderr_log is not None else None
        self.client = client if client is not None else HarnessClient(self.stderr_log)
        if settings is not None:
            self.client.settings = dict(settings)
        self.notes: Notes = self.client.notes
        self.caps = caps or plain_capabilities(encoding)
        self.client_info = client_info
        self.ready_timeout_s = ready_timeout_s
        self.request_timeout_s = request_timeout_s
        self.encoding = "utf-16"
        self.initialize_result: types.InitializeResult | None = None
        self.ready: dict = {}

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.client._server.pid

    def stderr_tail(self, lines: int = 25) -> str:
        return stderr_tail(self.stderr_log, lines) if self.stderr_log is not None else ""

    async def __aenter__(self) -> "ServerSession":
        try:
            await self.client.start_io(self.command[0], *self.command[1:], env=self.env,
                                       **({"cwd": str(self.cwd)} if self.cwd is not None else {}))
        except OSError as exc:
            raise ServerError(f"cannot start {' '.join(self.command)}: {exc}") from exc
        try:
            await self._initialize()
            if self.ready_timeout_s is not None:
                await self.wait_loaded(self.ready_timeout_s)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _initialize(self) -> None:
        params = types.InitializeParams(
            capabilities=self.caps,
            root_uri=self.root.as_uri() if self.root is not None else None,
            workspace_folders=[types.WorkspaceFolder(uri=f.as_uri(), name=f.name or "root") for f in self.folders],
            initialization_options=self.init_options,
            client_info=types.ClientInfo(name=self.client_info) if self.client_info else None,
        )
        result = await self._request(self.client.initialize_session(params), "initialize", self.request_timeout_s)
        self.initialize_result = self.client.initialize_result = result
        self.encoding = normalize_encoding(result.capabilities.position_encoding)

    async def wait_loaded(self, timeout: float) -> dict:
        """Wait for the model; a load error raises ``ServerError``."""
        status = await self._guard(self.notes.wait_loaded(timeout + 5), "waiting for the model to load", timeout)
        if status.get("state") == "error":
            raise ServerError(f"the model failed to load: {status.get('message', '')}\n{self.stderr_tail()}")
        self.ready = status
        return status

    @property
    def model_info(self) -> dict:
        """The last ``codellama/status`` notification (model, device, quantization, ...)."""
        return dict(self.notes.statuses[-1]) if self.notes.statuses else {}

    async def close(self) -> None:
        client = self.client
        server = client._server
        if server is not None and server.returncode is None and not getattr(client, "exited", ""):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.shutdown_session(), 30)
            if server.returncode is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(server.wait(), 5)
            if server.returncode is None:
                server.kill()
        await client.stop()

    async def configure(self, **values) -> None:
        """Change settings as an editor does (``didChangeConfiguration``, then the server pulls them) and wait
        for the server to say they are applied."""
        mark = len(self.notes.logs)
        self.client.settings = {**self.client.settings, **values}
        self.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        await self.notes.wait_log("settings applied", after=mark, timeout=self.request_timeout_s)

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

    def open(self, uri: str, text: str, language_id: str = "python", version: int = 1) -> None:
        open_document(self.client, uri, text, language_id, version)

    def close_document(self, uri: str) -> None:
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    def edit(self, uri: str, version: int, line: int, start: int, end: int, text: str) -> None:
        edit_line(self.client, uri, version, line, start, end, text)

    async def inline(self, uri: str, line: int, character: int, **kwargs) -> types.InlineCompletionList | None:
        return await self._request(inline(self.client, uri, line, character, **kwargs), "inlineCompletion",
                                   self.request_timeout_s)

    async def complete(self, uri: str, text: str, offset: int) -> Completion:
        """Inline completion at ``offset`` of the open document ``uri`` whose content is ``text``; the first item
        applied to ``text``, its ``range`` included."""
        provider = self.initialize_result.capabilities.inline_completion_provider
        if provider in (None, False):
            raise ServerError("the server does not advertise inlineCompletionProvider")
        index = LineIndex.of(text)
        line, character = index.position_at(offset, self.encoding)
        seen = len(self.notes.statuses)
        started = time.perf_counter()
        try:
            answer = await self.inline(uri, line, character)
        except ServerError:
            raise
        except Exception as exc:  # an LSP error answer: record it, keep going
            return Completion(text, "", (time.perf_counter() - started) * 1000, 0, error=f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        # the server reports each request's numbers in a status notification sent before its answer
        stats = request_stats(self.notes.statuses[seen:], uri)
        items = answer.items if answer is not None else []
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


def request_stats(statuses: list[dict], uri: str) -> dict:
    """The numbers of the last status about ``uri`` (prompt_tokens, generation_ms, ...), without the model's."""
    stats = next((dict(s) for s in reversed(statuses) if s.get("uri") == uri), {})
    for key in ("model", "device", "quantization", "state", "message", "uri"):
        stats.pop(key, None)
    return stats


# -- messages, as an editor sends them ----------------------------------------------------------------------


def open_document(client: LanguageClient, uri: str, text: str, language_id: str = "python", version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=version, text=text)))


def edit_line(client: LanguageClient, uri: str, version: int, line: int, start: int, end: int, text: str) -> None:
    """``didChange``: characters ``start`` to ``end`` of ``line`` replaced by ``text``."""
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=line, character=start),
                              end=types.Position(line=line, character=end)), text=text)]))


def inline_params(uri: str, line: int, character: int, *,
                  trigger: types.InlineCompletionTriggerKind = types.InlineCompletionTriggerKind.Invoked,
                  selected: types.SelectedCompletionInfo | None = None) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=trigger, selected_completion_info=selected),
    )


async def inline(client: LanguageClient, uri: str, line: int, character: int, *,
                 trigger: types.InlineCompletionTriggerKind = types.InlineCompletionTriggerKind.Invoked,
                 selected: types.SelectedCompletionInfo | None = None) -> types.InlineCompletionList:
    """An inline-completion request; a bare array in the answer comes back as a list."""
    result = await client.text_document_inline_completion_async(
        inline_params(uri, line, character, trigger=trigger, selected=selected))
    if isinstance(result, list):
        return types.InlineCompletionList(items=result)
    return result


async def raw_request(client: LanguageClient, method: str, params: Any, timeout: float = 30.0) -> Any:
    """Send ``params`` exactly as given (no typed serialisation), e.g. to send malformed params.
    Returns the result; a JSON-RPC error raises ``pygls.exceptions.JsonRpcException``."""
    import uuid
    from concurrent.futures import Future

    from pygls.protocol import JsonRPCRequestMessage

    msg_id = str(uuid.uuid4())
    future: Future = Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data(JsonRPCRequestMessage(id=msg_id, method=method, params=params, jsonrpc="2.0"))
    return await asyncio.wait_for(asyncio.wrap_future(future), timeout)


# -- reading answers ----------------------------------------------------------------------------------------


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
