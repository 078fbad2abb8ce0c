"""llama.cpp's real HTTP server (the ``xllamacpp`` wheel) in a child process on 127.0.0.1, started and stopped
deterministically.

Why a child process: ``xllamacpp.Server`` serves until the Python object is garbage-collected and has no stop
method, so in-process there is no deterministic "stop now" (and its threads would share our GIL). A child
process that exits when its stdin closes (or is killed) gives tests and benchmarks a real stop, also mid-request,
and a restart on the same port. One thread per server by default so tests do not starve a shared machine.

    with LlamaServer(SMOLLM2_GGUF, n_parallel=2) as server:
        httpx.get(server.url + "/health")

Run directly (``python tests/llamacpp_server.py MODEL.gguf --port 8080``) it serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 120.0


def xllamacpp_available() -> bool:
    try:
        import xllamacpp  # noqa: F401
    except Exception:  # noqa: BLE001 - an absent or broken wheel both mean "skip"
        return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One llama.cpp server process. ``start()`` returns once ``/health`` answers; ``stop()`` ends it."""

    def __init__(self, model: str | os.PathLike, *, n_ctx: int = 4096, n_parallel: int = 1, threads: int = 1,
                 api_key: str = "", port: int = 0, cache_reuse: int = 0, cache_prompt: bool = True, n_batch: int = 256,
                 log: str | os.PathLike | None = None) -> None:
        self.config: dict[str, Any] = {
            "model": str(model), "n_ctx": n_ctx, "n_parallel": n_parallel, "threads": threads,
            "api_key": api_key, "port": port or free_port(), "cache_reuse": cache_reuse, "cache_prompt": cache_prompt,
            "n_batch": n_batch,
        }
        self.log = Path(log) if log else None
        self.proc: subprocess.Popen | None = None
        self.url = ""

    @property
    def port(self) -> int:
        return int(self.config["port"])

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "LlamaServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        stderr = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(self.config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True,
        )
        if stderr is not subprocess.DEVNULL:
            stderr.close()
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not line or not line[0].startswith(b"http"):
            self.stop()
            raise RuntimeError(f"llama.cpp server did not start within {timeout_s:.0f} s (model {self.config['model']})")
        self.url = line[0].decode().strip()
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()  # the child's signal to exit
            proc.wait(timeout_s)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait(timeout_s)
        finally:
            if proc.stdout:
                proc.stdout.close()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crashed or powered-off server would."""
        if self.proc is not None:
            self.proc.kill()
        self.stop()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class TLSProxy:
    """A TLS-terminating proxy on 127.0.0.1 in front of a plain-HTTP server (the xllamacpp wheel has no TLS), so
    https, certificate checks and ``ca_bundle`` are tested end to end with a real handshake."""

    def __init__(self, target_port: int, cert: str | os.PathLike, key: str | os.PathLike) -> None:
        import asyncio
        import ssl

        self.target_port = target_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _pipe(self, reader: Any, writer: Any) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)  # the open connections' pipes: end them while the loop still runs
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    def __enter__(self) -> "TLSProxy":
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def self_signed_cert(dest: str | os.PathLike) -> tuple[Path, Path]:
    """(cert, key) for 127.0.0.1, made with the openssl command line; raises FileNotFoundError without it."""
    dest = Path(dest)
    cert, key = dest / "cert.pem", dest / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _serve(config: dict[str, Any]) -> Any:
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = config["model"]
    params.n_ctx = int(config["n_ctx"])
    params.n_parallel = int(config["n_parallel"])
    params.port = int(config["port"])
    params.cpuparams.n_threads = int(config["threads"])
    params.cpuparams_batch.n_threads = int(config["threads"])
    params.n_threads_http = max(2, int(config["n_parallel"]) + 1)
    params.n_cache_reuse = int(config["cache_reuse"])
    params.cache_prompt = bool(config["cache_prompt"])
    # a closed stream is noticed between batches only: small batches bound what a superseded prefill costs
    params.n_batch = int(config["n_batch"])
    params.n_ubatch = min(params.n_ubatch, params.n_batch)
    params.endpoint_props = True
    params.endpoint_metrics = True
    params.warmup = False
    if config.get("api_key"):
        params.api_keys = [config["api_key"]]
    return xlc.Server(params)


def _child(config: dict[str, Any]) -> None:
    server = _serve(config)
    url = server.listening_address.rstrip("/")
    if not url.startswith("http"):
        url = "http://" + url
    _wait_healthy(url)
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    try:
        sys.stdin.buffer.read()  # returns when the parent closes our stdin (or dies)
    except KeyboardInterrupt:
        pass
    os._exit(0)  # skip destructors: the native server threads need no orderly shutdown


def _wait_healthy(url: str, timeout_s: float = START_TIMEOUT_S) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    server = LlamaServer(args.model, n_ctx=args.ctx, n_parallel=args.parallel, threads=args.threads, port=args.port)
    with server:
        print(f"serving {args.model} at {server.url}; Ctrl-C stops", flush=True)
        try:
            server.proc.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
