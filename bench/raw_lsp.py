"""``codellama-lsp serve`` spoken to in raw JSON-RPC frames, from plain threads: the benches' second driver.

The one harness for driving the server is ``codellama_lsp/evaluation/lsp_driver.py`` (asyncio, pygls' typed
client). This one stays beside it because what these benches need is what a typed client cannot give:

- ``fuzz_lsp.py`` writes malformed frames, wrong types and missing fields (``write_raw``, ``send``);
- ``typing_replay.py``, ``typing_storm.py`` and ``team_server.py`` send keystrokes on a wall-clock schedule from
  threads, one server per editor, and time each answer by when its frame arrived (``_arrived``), without an
  event loop between the pipe and the clock.

The server's command line and environment (own config/state/cache under ``home``, offline) are the harness's.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from codellama_lsp.evaluation.lsp_driver import log_file, server_command, server_env  # noqa: E402


class RawServer:
    """``codellama-lsp serve`` as a child process, spoken to in raw frames.

    A reader thread parses the server's frames: responses are recorded per id (to check "exactly one
    answer"), requests from the server (progress tokens, configuration, applyEdit) are answered so it
    never waits on us, notifications are kept for the caller."""

    def __init__(self, model: str, home: Path, *, init_options: dict | None = None,
                 root: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.root = root or home / "workspace"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = log_file(home)
        self.stderr_path = home / "stderr.txt"
        env = server_env(home)
        env.update(extra_env or {})
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            server_command(log=self.log_path, model=model),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, cwd=str(home))
        self.responses: dict[Any, list[dict]] = {}
        self.notifications: queue.Queue = queue.Queue()
        self.statuses: list[dict] = []
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._next_id = 0
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.init_options = init_options or {}

    # -- wire -------------------------------------------------------------------------------------------

    def write_raw(self, data: bytes) -> None:
        with self._write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode("utf-8")
        self.write_raw(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def request(self, method: str, params: Any = None, *, timeout: float = 120.0) -> dict:
        msg_id = self.new_id()
        message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.wait_response(msg_id, timeout)

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait_response(self, msg_id: Any, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.responses.get(msg_id):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no response to request {msg_id!r} (server exit code {self.proc.poll()})")
                self._cond.wait(min(left, 1.0))
            return self.responses[msg_id][0]

    def wait_all(self, ids, timeout: float) -> list:
        """Wait until every id in ``ids`` has a response; returns those still unanswered at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = [i for i in ids if not self.responses.get(i)]
                left = deadline - time.monotonic()
                if not missing or left <= 0 or self.proc.poll() is not None:
                    return missing
                self._cond.wait(min(left, 1.0))

    def _read_loop(self) -> None:
        stream = self.proc.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    with self._cond:
                        self._cond.notify_all()
                    return
                if line in (b"\r\n", b"\n"):
                    break
                match = re.match(rb"Content-Length:\s*(\d+)", line, re.I)
                if match:
                    length = int(match.group(1))
            if length is None:
                continue
            message = json.loads(stream.read(length))
            self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        if "method" in message and "id" in message:  # a request from the server: answer it
            result: Any = None
            if message["method"] == "workspace/configuration":
                result = [self.init_options for _ in (message.get("params") or {}).get("items", [])]
            elif message["method"] == "workspace/applyEdit":
                result = {"applied": False}
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": result})
        elif "method" in message:
            if message["method"] == "codellama/status":
                with self._cond:
                    self.statuses.append(message.get("params") or {})
                    self._cond.notify_all()
            else:
                self.notifications.put(message)
        else:
            message["_arrived"] = time.monotonic()  # when the client saw it (typing_storm compares)
            with self._cond:
                self.responses.setdefault(message.get("id"), []).append(message)
                self._cond.notify_all()

    # -- session ----------------------------------------------------------------------------------------

    def initialize(self, *, inline: bool = True, timeout: float = 300.0) -> dict:
        caps: dict[str, Any] = {"general": {"positionEncodings": ["utf-16"]},
                                "window": {"workDoneProgress": True},
                                "workspace": {"configuration": False}, "textDocument": {}}
        if inline:
            caps["textDocument"]["inlineCompletion"] = {}
        result = self.request("initialize", {
            "processId": os.getpid(), "rootUri": self.root.as_uri(), "capabilities": caps,
            "workspaceFolders": [{"uri": self.root.as_uri(), "name": "ws"}],
            "initializationOptions": self.init_options}, timeout=timeout)
        self.notify("initialized", {})
        self.initialize_result = result
        return self.wait_state(timeout)

    def wait_state(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                done = [s for s in self.statuses if s.get("state") in ("ready", "error")]
                if done:
                    return done[-1]
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError("the model never became ready")
                self._cond.wait(min(left, 1.0))

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            return "result" in self.request("codellama/ping", {}, timeout=120)
        except TimeoutError:
            return False

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def close(self) -> int | None:
        try:
            if self.proc.poll() is None:
                self.request("shutdown", None, timeout=60)
                self.notify("exit", None)
                self.proc.wait(30)
        except Exception:
            self.proc.kill()
            self.proc.wait(30)
        self._stderr.close()
        return self.proc.returncode

    def tracebacks(self, *, kind: str = "unhandled") -> list[str]:
        """Log records with a traceback in the server's stderr or log file, by kind:

        - ``unhandled``: an exception nobody meant (what must never happen);
        - ``answered``: pygls logs a traceback when a handler answers with a deliberate JSON-RPC error
          (e.g. InvalidParams) or when it cannot deserialize params (the request is answered with -32602);
        - ``unparseable``: a frame whose body is not JSON / not UTF-8, logged by pygls' reader (no id to answer).
        """
        found = []
        for path in (self.stderr_path, self.log_path):
            if not path.exists():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            records = re.split(r"(?m)^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text) if path == self.log_path else [text]
            for record in records:
                if "Traceback (most recent call last)" not in record:
                    continue
                head = record.splitlines()[0]
                finals = [ln for ln in record.splitlines()[1:] if ln.strip() and not ln.startswith((" ", "Traceback"))]
                last = finals[-1] if finals else ""
                if "Unable to handle message" in head and last.startswith(("json.decoder.JSONDecodeError",
                                                                          "UnicodeDecodeError")):
                    found_kind = "unparseable"
                elif "Unable to deserialize message" in head or (
                        last.startswith("pygls.exceptions.JsonRpc") and "InternalError" not in last):
                    found_kind = "answered"
                else:
                    found_kind = "unhandled"
                if found_kind == kind:
                    found.append(f"{path.name}: {head.strip()[:160]} -> {last[:200]}")
        return found
