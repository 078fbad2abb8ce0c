"""Run one untrusted Python program (a model's completion plus its unit test) and say whether it passed.

Model output is arbitrary code, so each program runs in its own short-lived process with layered limits:

* a fresh, empty temporary directory as its working directory (removed afterwards) and a minimal
  environment; Python's isolated mode (``-I``: no user site, no ``PYTHON*`` variables, no script dir
  on ``sys.path``) without site-packages (``-S``);
* no network: a new network namespace via ``unshare -n`` (``unshare -rn`` as an unprivileged user) when
  the kernel allows it, and in every case a guard that disables ``_socket`` (under ``socket``) before the
  program runs;
* resource limits set inside the child before the program starts: address space (``RLIMIT_AS``), CPU
  seconds (``RLIMIT_CPU``), size of any file written (``RLIMIT_FSIZE``), open files and core dumps;
* a wall-clock timeout after which the whole process group is killed;
* the guard also disables the calls that could damage the machine by accident (process spawning,
  deleting and renaming files, signalling other processes).

This is a guard against accidents in generated code, not a security boundary against a determined
attacker; run untrusted models inside a container or VM as well.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Runs inside the child, before the program: limits, then the network and filesystem guard, then the
# program itself as ``__main__``. argv: guard.py PROGRAM MEMORY_BYTES CPU_SECONDS FSIZE_BYTES
_GUARD = r'''
import resource, sys
program, memory, cpu, fsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, fsize),
                     (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 64)):
    if value > 0:
        resource.setrlimit(limit, (value, value))

# Only C modules are patched, before anything imports the Python wrappers around them, so the guard
# costs almost nothing at start-up: socket.socket subclasses _socket.socket, subprocess spawns through
# _posixsubprocess, shutil deletes and moves through os.
import _posixsubprocess, _socket, builtins, os

def _blocked(name):
    def blocked(*args, **kwargs):
        raise PermissionError(f"{name} is disabled in the evaluation sandbox")
    return blocked

class _NoSocket(_socket.socket):
    __slots__ = ()  # socket.socket, subclassing this, adds __weakref__ itself

    def __init__(self, *args, **kwargs):
        raise PermissionError("network access is disabled in the evaluation sandbox")

_socket.socket = _socket.SocketType = _NoSocket
for name in ("socketpair", "fromfd", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
    if hasattr(_socket, name):
        setattr(_socket, name, _blocked("socket." + name))
_posixsubprocess.fork_exec = _blocked("subprocess")
for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "remove", "unlink", "rmdir", "removedirs",
             "rename", "renames", "replace", "truncate", "chmod", "chown", "lchown", "setuid", "putenv",
             "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
             "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
             "posix_spawn", "posix_spawnp", "abort"):
    if hasattr(os, name):
        setattr(os, name, _blocked("os." + name))
# a program that exits early with status 0 must not count as having passed its test
builtins.exit = builtins.quit = _blocked("exit")
sys.exit, os._exit = _blocked("sys.exit"), _blocked("os._exit")

with open(program, encoding="utf-8") as handle:
    code = compile(handle.read(), program, "exec")
sys.argv = [program]
namespace = {"__name__": "__main__", "__file__": program, "__builtins__": builtins}
del resource, _posixsubprocess, _socket, os, _blocked, _NoSocket, handle, limit, value, name
exec(code, namespace)
'''

PASSED, FAILED, TIMEOUT = "passed", "failed", "timeout"


@dataclass(frozen=True)
class Limits:
    """Per-program limits. The upstream recipe uses a 3 s timeout; the default here is a little longer
    because the evaluation shares its CPU with the model, and a slow start must not read as a wrong answer."""

    timeout_s: float = 5.0  # wall clock
    memory_mb: int = 1024  # address space
    cpu_s: int = 0  # 0 = ceil(timeout_s) + 1
    file_mb: int = 16  # largest file the program may write (its stderr included)

    @property
    def cpu_seconds(self) -> int:
        return self.cpu_s or int(self.timeout_s) + 2


@dataclass(frozen=True)
class ExecResult:
    status: str  # passed | failed | timeout
    returncode: int | None
    detail: str  # last line of stderr, or why it was stopped
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@functools.lru_cache(maxsize=None)
def network_isolation() -> tuple[str, ...]:
    """The command prefix that gives a child its own empty network namespace, or () when the kernel or the
    container forbids it (then only the in-process socket guard applies)."""
    for prefix in (("unshare", "-n"), ("unshare", "-rn")):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def isolation_description() -> str:
    prefix = network_isolation()
    return f"{' '.join(prefix)} + socket guard" if prefix else "socket guard only (unshare unavailable)"


def run_program(source: str, limits: Limits = Limits(), *, use_namespace: bool = True) -> ExecResult:
    """Run ``source`` as ``__main__`` under the sandbox and classify the outcome."""
    with tempfile.TemporaryDirectory(prefix="fim-eval-") as workdir:
        work = Path(workdir)
        (work / "guard.py").write_text(_GUARD, encoding="utf-8")
        (work / "program.py").write_text(source, encoding="utf-8")
        prefix = network_isolation() if use_namespace else ()
        command = [
            *prefix,
            sys.executable,
            "-I",  # isolated: no user site, no PYTHON* variables, no script directory on sys.path
            "-S",  # no site-packages at all: the programs need only the standard library, and start 3x faster
            "-B",
            str(work / "guard.py"),
            str(work / "program.py"),
            str(limits.memory_mb * 1024 * 1024),
            str(limits.cpu_seconds),
            str(limits.file_mb * 1024 * 1024),
        ]
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        stderr_path = work / "stderr.txt"
        started = time.monotonic()
        with open(stderr_path, "wb") as stderr:
            try:
                process = subprocess.Popen(
                    command,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
            except OSError as exc:
                return ExecResult(FAILED, None, f"could not start the sandbox: {exc}", 0.0)
            try:
                returncode = process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                return ExecResult(TIMEOUT, None, f"timed out after {limits.timeout_s:g} s", time.monotonic() - started)
            finally:
                _kill_group(process)  # reap anything the program left behind in its group
        duration = time.monotonic() - started
        detail = _last_line(stderr_path)
    if returncode == 0:
        return ExecResult(PASSED, 0, "", duration)
    if returncode == -signal.SIGXCPU or returncode == -signal.SIGKILL:
        return ExecResult(TIMEOUT, returncode, detail or f"CPU limit of {limits.cpu_seconds} s", duration)
    if returncode < 0:
        detail = detail or f"killed by {signal.Signals(-returncode).name}"
    return ExecResult(FAILED, returncode, detail, duration)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _last_line(path: Path, tail_bytes: int = 4096) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - tail_bytes))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""
