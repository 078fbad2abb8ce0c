"""How the command-line tools turn an actionable failure into one line on stderr and an exit code.

Every command reports :class:`~codellama_lsp.engine.backend.EngineError` (and its subclass
``ModelLoadError``) the same way, so that a user sees ``codellama-lsp: error: <what to run or change>``
and never a traceback, and scripts can rely on exit status 2.
"""

from __future__ import annotations

import sys
from typing import TextIO

EXIT_USER_ERROR = 2


def report_cli_error(exc: BaseException, stream: TextIO | None = None) -> int:
    """Print ``codellama-lsp: error: <message>`` (first line only) and return the exit status (2)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"codellama-lsp: error: {message}", file=stream or sys.stderr, flush=True)
    return EXIT_USER_ERROR
