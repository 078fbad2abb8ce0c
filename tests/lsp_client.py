"""Start the real server (``python -m codellama_lsp serve``) over stdio and talk to it with pytest-lsp.

Shared by every end-to-end test. What it adds to pytest-lsp:

- an isolated environment per server (config, log and cache directories under a temp dir), so a
  developer's own ``config.toml`` never changes a test;
- client capabilities of a real editor with inline completion and the position encoding you ask for
  (none of pytest-lsp's bundled snapshots has inline completion);
- ``client.notes``: every ``codellama/status`` and ``window/logMessage`` the server sent, with
  ``await client.notes.wait_for(...)`` — wait for an event instead of sleeping.

Typical use (module-scoped: one server process for a test module)::

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def client(tiny_model_dir, tmp_path_factory):
        async with lsp_session(tmp_path_factory.mktemp("srv"), model=tiny_model_dir) as c:
            await c.notes.wait_ready()
            yield c
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from lsprotocol import types as lsp
from pygls.protocol import default_converter
from pytest_lsp import client_capabilities
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, LanguageClient, register_lsp_features

STATUS = "codellama/status"
DEFAULT_TIMEOUT = 120.0


def to_plain(value: Any) -> Any:
    """pygls hands custom notifications over as nested namedtuples; tests want dicts and lists."""
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

    async def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        status = await self.wait_status(lambda s: s.get("state") in ("ready", "error"), timeout=timeout)
        assert status["state"] == "ready", f"model failed to load: {status.get('message')}"
        return status


def make_client() -> LanguageClient:
    """A pytest-lsp client that also records ``codellama/status`` and log messages in ``client.notes``."""
    client = LanguageClient(converter_factory=default_converter)
    notes = Notes()
    features = dict(DEFAULT_CLIENT_FEATURES)
    default_log = features[lsp.WINDOW_LOG_MESSAGE]

    def log_message(c: LanguageClient, params: lsp.LogMessageParams) -> None:
        default_log(c, params)
        notes.add_log(params.message)

    default_show = features[lsp.WINDOW_SHOW_MESSAGE]

    def show_message(c: LanguageClient, params: lsp.ShowMessageParams) -> None:
        default_show(c, params)
        notes.add_shown(params.message)

    def status(c: LanguageClient, params: Any) -> None:
        notes.add_status(params)

    features[lsp.WINDOW_SHOW_MESSAGE] = show_message

    features[lsp.WINDOW_LOG_MESSAGE] = log_message
    features[STATUS] = status
    register_lsp_features(client, features)
    client.notes = notes  # type: ignore[attr-defined]
    return client


def capabilities(encoding: str = "utf-16", *, editor: str = "neovim@v0.11.0", inline: bool = True,
                 progress: bool = True, configuration: bool = True) -> lsp.ClientCapabilities:
    """A real editor's capabilities, offering exactly ``encoding`` and (by default) inline completion."""
    caps = client_capabilities(editor)
    caps.general = caps.general or lsp.GeneralClientCapabilities()
    caps.general.position_encodings = [encoding]
    if inline:
        caps.text_document.inline_completion = lsp.InlineCompletionClientCapabilities()
    caps.window.work_done_progress = progress
    caps.workspace.configuration = configuration
    return caps


def server_env(home: Path) -> dict[str, str]:
    """Environment for a server under test: own config/log/cache directories, offline."""
    env = dict(os.environ)
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache")):
        env[var] = str(home / sub)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CODELLAMA_LSP_MODEL", None)
    return env


def log_file(home: Path) -> Path:
    return home / "server.log"


@contextlib.asynccontextmanager
async def lsp_session(
    home: Path,
    *,
    model: Path | str | None = None,
    encoding: str = "utf-16",
    init_options: dict[str, Any] | None = None,
    configuration: dict[str, Any] | None = None,
    caps: lsp.ClientCapabilities | None = None,
    root: Path | None = None,
    folders: list[Path] | None = None,
    args: list[str] = (),
) -> AsyncIterator[LanguageClient]:
    """A started and initialized server with a client; shut down (shutdown + exit) on leaving.

    ``model`` goes on the command line (``--model``); ``init_options`` become
    ``initializationOptions``; ``configuration`` answers ``workspace/configuration`` pulls.
    """
    home.mkdir(parents=True, exist_ok=True)
    client = make_client()
    if configuration is not None:
        client.set_configuration(configuration)
    cmd = [sys.executable, "-m", "codellama_lsp", "serve", "--log-file", str(log_file(home)), *args]
    if model is not None:
        cmd += ["--model", str(model)]
    await client.start_io(*cmd, env=server_env(home))
    root = root or home / "workspace"
    root.mkdir(parents=True, exist_ok=True)
    folders = folders if folders is not None else [root]
    try:
        client.initialize_result = await client.initialize_session(lsp.InitializeParams(
            capabilities=caps or capabilities(encoding),
            root_uri=root.as_uri(),
            workspace_folders=[lsp.WorkspaceFolder(uri=f.as_uri(), name=f.name) for f in folders],
            initialization_options=init_options,
        ))
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 30)
        await client.stop()


def open_document(client: LanguageClient, uri: str, text: str, language_id: str = "python", version: int = 1) -> None:
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id=language_id, version=version, text=text)))


async def inline(client: LanguageClient, uri: str, line: int, character: int, *,
                 trigger: lsp.InlineCompletionTriggerKind = lsp.InlineCompletionTriggerKind.Invoked,
                 selected: lsp.SelectedCompletionInfo | None = None) -> lsp.InlineCompletionList:
    result = await client.text_document_inline_completion_async(lsp.InlineCompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri),
        position=lsp.Position(line=line, character=character),
        context=lsp.InlineCompletionContext(trigger_kind=trigger, selected_completion_info=selected),
    ))
    if isinstance(result, list):
        return lsp.InlineCompletionList(items=result)
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
