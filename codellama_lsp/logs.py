"""Logging for the language server: a rotating file, the editor's log (``window/logMessage``), and
no document text in either unless the user turned ``log_document_text`` on.

Why three pieces: the file survives the editor (users attach it to bug reports); the editor's log is
where users look first; and source code is private, so it stays out of both by default. pygls logs
every message it sends and receives (bodies included) at INFO/DEBUG, so its logger is kept at WARNING
and its message arguments are redacted unless document text logging is on.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
from pathlib import Path
from typing import Callable

LOGGER_NAME = "codellama_lsp"
LOG_FILE_NAME = "server.log"
_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}
_ID_LIKE = re.compile(r"[\w./$:-]{1,64}")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def level_of(name: str) -> int:
    return _LEVELS.get((name or "info").lower(), logging.INFO)


def default_log_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_log_dir("codellama-lsp"))


def _safe_arg(value):
    """A third-party log argument as it may appear in the log: numbers and short id-like strings (message
    ids, method names) as they are; anything else (message bodies, params: document text) by its type only."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and _ID_LIKE.fullmatch(value):
        return value
    return f"<{type(value).__name__}>"


class _RedactThirdParty(logging.Filter):
    """Redacts the arguments (message bodies, params) of third-party records: they carry document text.
    Ids and other short values stay, so a line still says which message it is about."""

    def __init__(self, allow: Callable[[], bool]) -> None:
        super().__init__()
        self._allow = allow

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(LOGGER_NAME) and record.args and not self._allow():
            if isinstance(record.args, dict):
                record.args = {k: _safe_arg(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_safe_arg(v) for v in record.args)
        return True


class _Switches:
    """Mutable logging switches shared by the handlers (the settings can change at run time)."""

    log_document_text = False


SWITCHES = _Switches()


def document_text(text: str) -> str:
    """What a log line may say about document text: the text itself only with ``log_document_text``."""
    return text if SWITCHES.log_document_text else f"<{len(text)} characters>"


def setup_logging(
    level: str = "info", *, log_document_text: bool = False, log_file: Path | None = None
) -> Path | None:
    """Attach the rotating file handler to the package logger; returns the log file path (None when
    the directory cannot be created, e.g. a read-only home: logging must never stop the server)."""
    SWITCHES.log_document_text = log_document_text
    package = logging.getLogger(LOGGER_NAME)
    package.setLevel(level_of(level))
    pygls_logger = logging.getLogger("pygls")
    pygls_logger.setLevel(logging.DEBUG if log_document_text and level == "debug" else logging.WARNING)
    path = log_file or default_log_dir() / LOG_FILE_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_RedactThirdParty(lambda: SWITCHES.log_document_text))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_codellama_file", False)]:
        root.removeHandler(old)
        old.close()
    handler._codellama_file = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # third-party libraries (watchdog, pygls, ...) only warn; ours log at ``level``
    return path


def set_level(level: str, *, log_document_text: bool) -> None:
    """Apply a configuration change without re-creating handlers."""
    SWITCHES.log_document_text = log_document_text
    logging.getLogger(LOGGER_NAME).setLevel(level_of(level))
    logging.getLogger("pygls").setLevel(logging.DEBUG if log_document_text and level == "debug" else logging.WARNING)


class EditorLogHandler(logging.Handler):
    """Forwards package log records to the editor as ``window/logMessage``.

    Records can come from any thread (the model worker logs too); ``send`` is called on the asyncio
    loop through ``call_soon_threadsafe`` because pygls' writer is not thread-safe.
    """

    def __init__(self, send: Callable[[int, str], None], loop) -> None:
        super().__init__(level=logging.DEBUG)
        self._send = send
        self._loop = loop
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(_RedactThirdParty(lambda: SWITCHES.log_document_text))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if self._loop.is_closed():
                return
            self._loop.call_soon_threadsafe(self._send, record.levelno, message)
        except Exception:  # logging must never take the server down
            self.handleError(record)
