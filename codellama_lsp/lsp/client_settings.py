"""Settings from the client, merged over the server's own, and what a change sets off.

A client sends settings three ways — ``initializationOptions``, ``workspace/configuration`` (pulled when it
offers that), ``workspace/didChangeConfiguration`` — flat or under a ``"codellama"`` key. Each later value is
merged over the server's settings *and* the initialization options, so a partial update keeps the rest.
Invalid values are reported by name and the defaults kept. A change then reaches everything that holds
settings: the completion service, the log level, the workspace index (``index_*``), the model (a reload
only when it needs one, ``ModelLifecycle.settings_changed``).
"""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol import types as lsp

from ..config import Settings
from ..logs import set_level

log = logging.getLogger(__name__)

CONFIG_SECTION = "codellama"


class ClientSettings:
    """The settings in force for one server (a ``CodeLlamaServer``, of which only public names are used)."""

    def __init__(self, server, base: Settings) -> None:
        self._server = server
        self.base = base  # defaults < config file < environment < command line
        self.current = base
        self._init_options: dict[str, Any] = {}

    def apply(self, values: Any, *, source: str) -> list[str]:
        """Merge settings from the client over the server's own; report invalid ones by name;
        reload the model when a model setting changed. Returns the errors."""
        server = self._server
        values = _section(values)
        if source == "initializationOptions":
            self._init_options = values
            new, errors = self.base.updated(values)
        else:
            merged, _ = self.base.updated(self._init_options)
            new, errors = merged.updated(values)
        for error in errors:
            log.warning("%s: %s", source, error)
        if errors:
            server.show("; ".join(errors) + " (defaults kept)")
        old, self.current = self.current, new
        server.completion.settings = new
        set_level(new.log_level, log_document_text=new.log_document_text)
        changed = sorted(k for k, v in new.as_dict().items() if getattr(old, k) != v)
        log.info("settings applied from %s; changed: %s", source, ", ".join(changed) or "nothing")
        if changed and server.index is not None and any(k.startswith("index_") for k in changed):
            server.spawn(server.index_lifecycle.restart())
        if changed:
            server.completion.forget()
            server.model_lifecycle.settings_changed(old, new)
        return errors

    async def pull(self) -> None:
        """``workspace/configuration`` for the "codellama" section, only if the client offers it."""
        server = self._server
        caps = server.client_capabilities
        if not (caps and caps.workspace and caps.workspace.configuration):
            return
        try:
            result = await server.workspace_configuration_async(
                lsp.ConfigurationParams(items=[lsp.ConfigurationItem(section=CONFIG_SECTION)]))
        except Exception as exc:
            log.warning("workspace/configuration failed: %s", exc)
            return
        if result and isinstance(result[0], dict):
            self.apply(result[0], source="workspace/configuration")


def _section(values: Any) -> dict[str, Any]:
    """Client settings arrive flat or under a "codellama" key (VS Code style); both are accepted."""
    if not isinstance(values, dict):
        return {}
    inner = values.get(CONFIG_SECTION)
    if isinstance(inner, dict):
        return inner
    return values
