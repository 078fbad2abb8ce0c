"""A resident model process for the command line, so `codellama-lsp complete` answers in a fraction of a second.

Why: on a 2-core CPU, importing torch and transformers costs about 4.5 s before the first token, while the
bundled demo model answers in about 0.4 s (a real model's load costs far more). Editors never pay this: the
language server keeps the model loaded. A shell command would pay it on every call, so `complete` hands its
request to a resident process that holds the model. The first call starts it and waits for it; later calls
connect to it; it exits after ``resident_minutes`` without a request (default 10). There is one per user
and per model-loading settings (model, device, quantization, ...); per-request settings (max tokens, FIM
order, context budget, ...) travel with each request.

Privacy and safety: the socket is a Unix-domain socket (nothing listens on a network interface) in a
directory only the user can enter (``$XDG_RUNTIME_DIR/codellama-lsp``, else ``/tmp/codellama-lsp-<uid>``,
mode 0700, owner checked), and every connection's peer uid is checked. Requests carry the document text;
nothing is written to disk. Off with ``complete --no-resident``, ``resident_minutes = 0`` or
``CODELLAMA_LSP_RESIDENT=0``; where Unix sockets are missing (Windows) `complete` simply runs in-process.

Protocol: one JSON object per line each way. The client sends ``{"settings", "text", "offset", "path",
"root"}`` and gets ``{"ok": true, "data": ...}`` (what ``complete --json`` prints) or ``{"ok": false,
"error": "..."}`` (an actionable one-line error, e.g. missing weights; the process then exits).
``{"op": "status"}`` answers its pid and how many completions it served; ``{"op": "shutdown"}`` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .errors import first_line

#: How long the client waits for a newly started process to listen (it binds before importing torch).
START_TIMEOUT_S = 60.0
MAX_LINE = 64 * 1024 * 1024  # a request carries a whole document


class ResidentUnavailable(Exception):
    """No resident process could be reached or started: the caller runs in-process instead."""


def enabled(settings: Any) -> bool:
    if os.environ.get("CODELLAMA_LSP_RESIDENT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return getattr(settings, "resident_minutes", 0) > 0 and hasattr(socket, "AF_UNIX") and hasattr(os, "getuid")


def runtime_dir() -> Path:
    """The private directory holding the sockets (created 0700; refused if someone else owns it)."""
    override = os.environ.get("CODELLAMA_LSP_RUNTIME_DIR")
    base = Path(override) if override else (
        Path(os.environ["XDG_RUNTIME_DIR"]) / "codellama-lsp" if os.environ.get("XDG_RUNTIME_DIR")
        else Path(tempfile.gettempdir()) / f"codellama-lsp-{os.getuid()}")
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = base.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ResidentUnavailable(f"{base} is not private to this user")
    return base


def key_of(settings: Any) -> str:
    """Which resident process serves these settings: the loading settings, this package and interpreter."""
    spec = {**settings.load_spec(), "model_explicit": settings.model_explicit}  # what is loaded (config.py)
    spec.update(version=__version__, package=str(Path(__file__).resolve().parent), python=sys.executable)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ client


def complete(settings: Any, text: str, offset: int, path: Path, root: Path) -> dict:
    """Answer through the resident process for ``settings``, starting it if needed.

    Returns the ``complete --json`` object; raises :class:`~codellama_lsp.engine.backend.EngineError` for an
    actionable failure (the same ones the in-process path raises) and :class:`ResidentUnavailable` when the
    resident route itself failed (the caller then runs in-process)."""
    request = {"settings": settings.as_dict(), "text": text, "offset": offset, "path": str(path), "root": str(root)}
    directory = runtime_dir()
    key = key_of(settings)
    sock_path = directory / f"{key}.sock"
    reply = None
    with _locked(sock_path.with_suffix(".lock")):
        conn = _connect(sock_path)
        if conn is None:
            _start(sock_path, settings)
            minutes = f"{settings.resident_minutes:g}"
            print(f"codellama-lsp: keeping the model loaded for {minutes} idle minutes so the next `complete`"
                  " answers at once (--no-resident or resident_minutes = 0 to opt out)", file=sys.stderr)
            conn = _connect(sock_path)
            if conn is None:
                raise ResidentUnavailable("the resident process did not start listening")
    with conn:
        try:
            conn.sendall(json.dumps(request).encode() + b"\n")
            reply = _read_line(conn)
        except OSError as exc:
            raise ResidentUnavailable(f"lost the resident process: {exc}") from None
    if reply is None:
        raise ResidentUnavailable("the resident process closed the connection")
    if reply.get("ok"):
        return reply["data"]
    from .engine.backend import EngineError

    raise EngineError(str(reply.get("error") or "the resident process failed"))


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def request(settings: Any, message: dict) -> dict | None:
    """Send one control message (``status``, ``shutdown``) to the running resident process, if any."""
    conn = _connect(runtime_dir() / f"{key_of(settings)}.sock")
    if conn is None:
        return None
    with conn:
        conn.sendall(json.dumps(message).encode() + b"\n")
        return _read_line(conn)


def _connect(path: Path) -> socket.socket | None:
    if not path.exists():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:  # a stale socket left by a process that died: the new one replaces it
        conn.close()
        return None
    return conn


def _start(sock_path: Path, settings: Any) -> None:
    """Start a resident process and wait until it listens (it binds before loading anything heavy)."""
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    proc = subprocess.Popen(
        [sys.executable, "-m", "codellama_lsp.resident", "--socket", str(sock_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
    try:
        proc.stdin.write(json.dumps(settings.as_dict()).encode() + b"\n")
        proc.stdin.close()
        line = _readline_with_timeout(proc, START_TIMEOUT_S)
    except OSError as exc:
        raise ResidentUnavailable(f"could not start the resident process: {exc}") from None
    finally:
        proc.stdout.close()
    if line.strip() != b"listening":
        raise ResidentUnavailable("the resident process did not start")


def _readline_with_timeout(proc: subprocess.Popen, timeout: float) -> bytes:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            return b""
    return proc.stdout.readline()


def _read_line(conn: socket.socket) -> dict | None:
    chunks = []
    total = 0
    while True:
        data = conn.recv(1 << 16)
        if not data:
            return None
        nl = data.find(b"\n")
        if nl >= 0:
            chunks.append(data[:nl])
            return json.loads(b"".join(chunks))
        chunks.append(data)
        total += len(data)
        if total > MAX_LINE:
            return None


# ------------------------------------------------------------------------------------------------ server


class Resident:
    """The process side: one engine, one workspace index per repository root, requests one at a time."""

    def __init__(self, settings: Any, idle_s: float) -> None:
        from .engine.worker import Engine

        self.settings = settings
        self.idle_s = idle_s
        self.engine = Engine(settings)
        self.load_error: str | None = None
        self.served = 0
        self.indexes: dict[str, Any] = {}
        self._loaded: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._activity = asyncio.Event()
        self._stop = asyncio.Event()

    async def serve(self, sock: socket.socket) -> None:
        server = await asyncio.start_unix_server(self._handle, sock=sock, limit=MAX_LINE)
        with contextlib.suppress(NotImplementedError, RuntimeError):  # `kill` stops it cleanly (socket removed)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._shutdown)
        self._loaded = asyncio.create_task(self._load())
        try:
            while not self._stop.is_set():
                self._activity.clear()
                try:
                    await asyncio.wait_for(self._activity.wait(), timeout=self.idle_s)
                except asyncio.TimeoutError:
                    if not self._lock.locked():
                        break
        finally:
            server.close()
            for index in self.indexes.values():
                with contextlib.suppress(Exception):
                    index.stop()
            self.engine.close()

    def _shutdown(self) -> None:
        self._stop.set()
        self._activity.set()

    async def _load(self) -> None:
        from .engine.backend import EngineError

        try:
            await self.engine.load(None)
        except EngineError as exc:
            self.load_error = first_line(exc)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._activity.set()
        try:
            if not _same_user(writer.get_extra_info("socket")):
                return
            line = await reader.readline()
            if not line:
                return
            request = json.loads(line)
            op = request.get("op", "complete")
            if op == "status":
                reply = {"ok": True, "pid": os.getpid(), "served": self.served, "loaded": self.engine.info is not None}
            elif op == "shutdown":
                reply = {"ok": True}
            else:
                async with self._lock:
                    reply = await self._answer(request)
                self.served += 1
            writer.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
            await writer.drain()
            if op == "shutdown" or self.load_error is not None:
                self._shutdown()  # (nothing loaded: the next call starts afresh, the user may have fixed it)
        except Exception as exc:  # a bad request never takes the process down
            with contextlib.suppress(Exception):
                writer.write(json.dumps({"ok": False, "error": f"resident process: {exc}"}).encode() + b"\n")
                await writer.drain()
        finally:
            self._activity.set()
            writer.close()

    async def _answer(self, request: dict) -> dict:
        from .commands.complete import complete_file
        from .engine.backend import EngineError

        await asyncio.shield(self._loaded)
        if self.load_error is not None:
            return {"ok": False, "error": self.load_error}
        settings = settings_from(request["settings"])
        path = Path(request["path"])
        retriever = self._retriever(request["root"], settings)
        try:
            data = await complete_file(self.engine, settings, retriever, request["text"], int(request["offset"]), path)
            return {"ok": True, "data": data}
        except EngineError as exc:
            return {"ok": False, "error": first_line(exc)}

    def _retriever(self, root: str, settings: Any):
        """A watched index per repository root: later requests see saved edits without re-indexing."""
        if not settings.repo_context:
            return None
        from .context.retrieval import Retriever
        from .context.workspace import WorkspaceIndex

        index = self.indexes.get(root)
        if index is None:
            index = self.indexes[root] = WorkspaceIndex([root], watch=True).start()
        return Retriever(index)


def settings_from(values: dict) -> Any:
    """The client's settings, rebuilt (and validated) on this side of the socket."""
    from .config import Settings

    settings, _ = Settings().updated({k: v for k, v in values.items() if k != "model_explicit"})
    settings.model_explicit = bool(values.get("model_explicit"))
    return settings


def _same_user(sock: socket.socket | None) -> bool:
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return sock is not None  # the 0700 directory is the guard where peer credentials are not available
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the resident process (started by the client; not a user command)."""
    parser = argparse.ArgumentParser(prog="python -m codellama_lsp.resident")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    values = json.loads(sys.stdin.readline())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        sock.bind(args.socket)
    finally:
        os.umask(old_umask)
    sock.listen(16)
    inode = os.stat(args.socket).st_ino
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the client reads up to EOF of this pipe: close it
    settings = settings_from(values)
    try:
        asyncio.run(Resident(settings, idle_s=max(1.0, settings.resident_minutes * 60)).serve(sock))
    finally:
        # under the clients' lock, so that a successor started meanwhile never loses its socket to us
        with _locked(Path(args.socket).with_suffix(".lock")), contextlib.suppress(OSError):
            if os.stat(args.socket).st_ino == inode:
                os.unlink(args.socket)
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
