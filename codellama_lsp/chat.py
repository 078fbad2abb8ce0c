"""Placeholder: the chat feature registers its LSP handlers here (see `register`)."""

from __future__ import annotations


def register(server) -> None:
    """Attach this feature's handlers to the language server; called once by `server.py`."""
