"""The workspace index of the editor's folders, for one server: built, rebuilt, and heard from.

``context/workspace.py``'s ``WorkspaceIndex`` knows files; what only the server knows is *which* folders
(the client's workspace folders, or its root), *when* to start over (``initialized``, a change of folders or
of an ``index_*`` setting), and how the index's news reaches the user (each notice once, then
``codellama/status``). That is kept here, apart from the LSP wiring in ``server.py``.
"""

from __future__ import annotations

import asyncio
import logging

from lsprotocol import types as lsp

from .documents import fs_path

log = logging.getLogger(__name__)


class IndexLifecycle:
    """The current index and its retriever (None until built, or without folders) for one server (a
    ``CodeLlamaServer``, of which only public names are used)."""

    def __init__(self, server) -> None:
        self._server = server
        self.index = None
        self.retriever = None
        self._notices: set[str] = set()  # told once per session

    def roots(self) -> list[str]:
        """The client's workspace folders as paths, else its root path."""
        workspace = self._server.workspace
        roots = []
        for folder in workspace.folders.values():
            path = fs_path(folder.uri)
            if path:
                roots.append(path)
        if not roots and workspace.root_path:
            roots.append(workspace.root_path)
        return roots

    async def restart(self) -> None:
        """(Re)build the workspace index for the current folders. It fills on a background thread within the
        ``index_*`` caps; completions use what is there meanwhile and never wait for it."""
        from ..context.retrieval import Retriever
        from ..context.workspace import WorkspaceIndex

        server = self._server
        old, roots = self.index, self.roots()
        self.index = self.retriever = server.completion.retriever = None
        if old is not None:
            await asyncio.to_thread(old.stop)
        if not roots:
            return
        s, loop = server.settings, asyncio.get_running_loop()
        try:
            index = WorkspaceIndex(roots, max_files=s.index_max_files, memory_mb=s.index_memory_mb,
                                   broad_roots=s.index_broad_roots, focus=list(server.open_documents()))
            index.on_state = lambda: loop.call_soon_threadsafe(self._state_changed, index)
            self.index = index
            self.retriever = server.completion.retriever = Retriever(index)  # fed by the index as it fills
            await asyncio.to_thread(index.start_background)
        except Exception:
            log.exception("workspace index failed for %s", roots)

    def _state_changed(self, index) -> None:
        """On the loop: tell the user each index notice once, log the result, refresh ``codellama/status``."""
        if index is not self.index:
            return
        for notice in index.notices:
            if notice not in self._notices:
                self._notices.add(notice)
                log.info("index: %s", notice)
                if notice not in index.quiet_notices:
                    self._server.show(notice, lsp.MessageType.Info)
        if index.state == "ready":
            info = index.summary()
            skipped = ", ".join(f"{n} {why}" for why, n in info["skipped"].items())
            log.info("indexed %d files in %s (skipped: %s)", info["files"], ", ".join(info["scope"]) or "nothing",
                     skipped or "none")
        self._server.send_status()
