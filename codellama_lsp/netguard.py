"""A runtime socket guard: proof that a session opens no network connection.

Why: "no byte leaves the machine" is a promise about every library the server imports (transformers,
huggingface_hub, tokenizers, pygls), not only about our own code, so it is checked where all of them
meet the operating system — the ``socket`` module. With the guard installed, any attempt to resolve a
host name or to connect/send to a non-local-socket address is refused with ``PermissionError`` and
written, one line per attempt, to the record file. Unix-domain sockets (asyncio's self-pipe, the
stdio transport never needs more) stay allowed.

Enable it in a server process with the environment (``CODELLAMA_LSP_NETGUARD=/path/to/record``) and
``install_from_env()`` — the tests do so from a ``sitecustomize`` module, before anything else is
imported — or call ``install(record)`` directly.
"""

from __future__ import annotations

import os
import socket
import threading
import traceback
from pathlib import Path

ENV_VAR = "CODELLAMA_LSP_NETGUARD"

_lock = threading.Lock()
_record: Path | None = None
_installed = False


def _is_local(family: int) -> bool:
    return family == getattr(socket, "AF_UNIX", -1)


def _note(what: str, target: object) -> None:
    """Append one line per refused attempt (with the innermost caller outside this module)."""
    frames = [f for f in traceback.extract_stack()[:-2] if not f.filename.endswith("netguard.py")]
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    line = f"{what} {target!r} from {where}\n"
    with _lock:
        if _record is not None:
            with open(_record, "a", encoding="utf-8") as fh:
                fh.write(line)


def _refuse(what: str, target: object) -> None:
    _note(what, target)
    raise PermissionError(f"network access blocked by codellama-lsp netguard: {what} {target!r}")


def install(record: str | os.PathLike | None = None) -> None:
    """Patch ``socket`` so that name lookups and non-Unix connects/sends are refused and recorded."""
    global _record, _installed
    _record = Path(record) if record else None
    if _installed:
        return
    _installed = True
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto = socket.socket.sendto

    def connect(self, address):
        if not _is_local(self.family):
            _refuse("connect", address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _is_local(self.family):
            _refuse("connect_ex", address)
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        if not _is_local(self.family):
            _refuse("sendto", args[-1] if args else None)
        return real_sendto(self, data, *args)

    def getaddrinfo(host, port, *args, **kwargs):
        _refuse("getaddrinfo", (host, port))

    def create_connection(address, *args, **kwargs):
        _refuse("create_connection", address)

    def gethostbyname(host):
        _refuse("gethostbyname", host)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = getaddrinfo
    socket.create_connection = create_connection
    socket.gethostbyname = gethostbyname


def install_from_env() -> bool:
    """Install the guard when ``CODELLAMA_LSP_NETGUARD`` names a record file; returns whether it did."""
    record = os.environ.get(ENV_VAR)
    if not record:
        return False
    install(record)
    return True


def attempts(record: str | os.PathLike) -> list[str]:
    """The refused attempts written to ``record`` (empty when there were none)."""
    path = Path(record)
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
