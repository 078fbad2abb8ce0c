"""Errors, once: the one-line message of an exception, the request errors and the LSP code each maps to,
and how the command-line tools report an actionable failure.

A user sees one line — ``codellama-lsp: error: <what to run or change>`` on the command line, a message in
the editor — never a traceback. Requests that cannot be served raise :class:`RequestError` (or
:class:`ParamsError` for malformed params); ``lsp/errors.py`` answers them with ``code``.
"""

from __future__ import annotations

import sys
from typing import TextIO

EXIT_USER_ERROR = 2

# JSON-RPC / LSP error codes the server answers with
INVALID_PARAMS = -32602  # JSON-RPC InvalidParams
CONTENT_MODIFIED = -32801  # LSPErrorCodes.ContentModified
REQUEST_FAILED = -32803  # LSPErrorCodes.RequestFailed


def first_line(exc: BaseException, *, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), or its type's name when it has none."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit] if limit is not None else line


def named(exc: BaseException) -> str:
    """``TypeName: first line`` (just the type's name for an exception without a message)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class RequestError(Exception):
    """A request that cannot be served; the message says why, in one line, for the user."""

    code = REQUEST_FAILED


class ParamsError(RequestError):
    """The request itself is malformed (answered with InvalidParams, not shown as a failure of ours)."""

    code = INVALID_PARAMS


def report_cli_error(exc: BaseException, stream: TextIO | None = None) -> int:
    """Print ``codellama-lsp: error: <message>`` (first line only) and return the exit status (2)."""
    print(f"codellama-lsp: error: {first_line(exc)}", file=stream or sys.stderr, flush=True)
    return EXIT_USER_ERROR
