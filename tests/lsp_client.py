"""The test suite's face of the one harness (``codellama_lsp/evaluation/lsp_driver.py``): the same
``ServerSession``, with pytest-lsp's client in place of pygls' plain one.

pytest-lsp stays for three things only it has: every message the server sends is checked against the
client's capabilities (an ``LspSpecificationWarning`` otherwise), ``$/progress`` reports are recorded
(``client.progress_reports``, read by test_server_lsp), and real editors' recorded capabilities
(``client_capabilities("neovim@v0.11.0")``; none of them has inline completion, so it is added).
``workspace/configuration`` pulls are answered from ``client.set_configuration(...)``.

Typical use (module-scoped: one server process for a test module)::

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def client(tiny_model_dir, tmp_path_factory):
        async with lsp_session(tmp_path_factory.mktemp("srv"), model=tiny_model_dir, ready=True) as c:
            yield c
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

from lsprotocol import types as lsp
from pygls.protocol import default_converter
from pytest_lsp import client_capabilities
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, LanguageClient, register_lsp_features

from codellama_lsp.evaluation.lsp_driver import (  # noqa: F401  (re-exported for the tests)
    DEFAULT_TIMEOUT, STATUS, Notes, ServerSession, edit_line, inline, inline_params, log_file, notes_features,
    open_document, raw_request, server_env, to_plain)


def make_client() -> LanguageClient:
    """A pytest-lsp client that also records ``codellama/status`` and log messages in ``client.notes``."""
    client = LanguageClient(converter_factory=default_converter)
    notes = Notes()
    register_lsp_features(client, notes_features(notes, DEFAULT_CLIENT_FEATURES))
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
    ready: bool = False,
) -> AsyncIterator[LanguageClient]:
    """A started and initialized server with a pytest-lsp client; shut down (shutdown + exit) on leaving.
    With ``ready``, the model has loaded (else the caller waits: ``await client.notes.wait_ready()``)."""
    home.mkdir(parents=True, exist_ok=True)
    client = make_client()
    if configuration is not None:
        client.set_configuration(configuration)
    session = ServerSession(home, model=model, args=args, env=server_env(home), client=client,
                            caps=caps or capabilities(encoding), root=root or home / "workspace", folders=folders,
                            init_options=init_options, ready_timeout_s=None, request_timeout_s=300.0)
    async with session:
        if ready:
            await client.notes.wait_ready()
        yield client
