"""`codellama-lsp bench` (not yet implemented)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    print("codellama-lsp bench: not implemented yet")
    return 1
