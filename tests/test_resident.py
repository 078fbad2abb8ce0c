"""`codellama-lsp complete` through the resident model process (``codellama_lsp/resident.py``).

Real processes over a real Unix socket: the first call starts the resident process, the second is served by
the same process with the same answer as an in-process run; failures are one line and exit 2; a stale
socket and an idle timeout are handled."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codellama_lsp import resident
from codellama_lsp.config import Settings

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix-domain sockets")

SOURCE = "def mean(values):\n    total = sum(values)\n    return \n"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    values = dict(os.environ, HF_HUB_OFFLINE="1", CODELLAMA_LSP_RESIDENT="1", CODELLAMA_LSP_RUNTIME_DIR=str(runtime))
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        values[var] = str(tmp_path / "xdg" / var.lower())
    values.pop("CODELLAMA_LSP_MODEL", None)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    yield values
    for sock in runtime.glob("*.sock") if runtime.is_dir() else []:  # never leave a process behind
        with socket.socket(socket.AF_UNIX) as conn:
            try:
                conn.connect(str(sock))
                conn.sendall(b'{"op": "shutdown"}\n')
                conn.recv(100)
            except OSError:
                pass


@pytest.fixture()
def source(tmp_path) -> Path:
    (tmp_path / "proj" / ".git").mkdir(parents=True)
    path = tmp_path / "proj" / "mean.py"
    path.write_text(SOURCE)
    return path


def complete(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codellama_lsp", "complete", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def settings_for(model: Path, **extra) -> Settings:
    settings, errors = Settings().updated({"model": str(model), "max_tokens": 6, **extra})
    assert not errors
    return settings


def wait_for_exit(pid: int, timeout: float) -> bool:
    """True once ``pid`` is gone (polls the kernel's process table; the process is not our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_the_second_call_is_served_by_the_same_resident_process_with_the_same_answer(env, source, tiny_model_dir):
    target = f"{source}:3:12"
    args = [target, "--model", str(tiny_model_dir), "--max-tokens", "6", "--json"]
    first = complete(env, *args)
    assert first.returncode == 0, first.stderr
    assert "keeping the model loaded" in first.stderr
    status = resident.request(settings_for(tiny_model_dir), {"op": "status"})
    assert status and status["served"] == 1 and status["loaded"]

    second = complete(env, *args)
    assert second.returncode == 0, second.stderr
    assert "keeping the model loaded" not in second.stderr
    again = resident.request(settings_for(tiny_model_dir), {"op": "status"})
    assert again["pid"] == status["pid"] and again["served"] == 2

    in_process = complete(env, *args, "--no-resident")
    assert in_process.returncode == 0, in_process.stderr
    a, b, c = (json.loads(p.stdout) for p in (first, second, in_process))
    assert a["completion"] == b["completion"] == c["completion"]
    assert a["prompt_ids"] == c["prompt_ids"]


def test_per_request_settings_travel_with_the_request(env, source, tiny_model_dir):
    """max tokens and FIM order are per request: one resident process serves both."""
    base = [f"{source}:3:12", "--model", str(tiny_model_dir), "--json"]
    spm = json.loads(complete(env, *base, "--max-tokens", "2", "--fim-mode", "spm").stdout)
    psm = json.loads(complete(env, *base, "--max-tokens", "3", "--fim-mode", "psm").stdout)
    assert spm["fim_mode"] == "spm" and psm["fim_mode"] == "psm"
    assert spm["timings"]["generated_tokens"] <= 2 and psm["timings"]["generated_tokens"] <= 3
    status = resident.request(settings_for(tiny_model_dir), {"op": "status"})
    assert status["served"] == 2


def test_a_model_that_cannot_load_is_one_line_exit_2_and_the_process_goes_away(env, source, tmp_path):
    missing = tmp_path / "no-such-model"
    proc = complete(env, f"{source}:3:12", "--model", str(missing))
    assert proc.returncode == 2 and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("codellama-lsp: error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    sock = Path(env["CODELLAMA_LSP_RUNTIME_DIR"]) / f"{resident.key_of(settings_for(missing))}.sock"
    deadline = time.monotonic() + 30
    while sock.exists() and time.monotonic() < deadline:  # the process removes its socket on the way out
        time.sleep(0.05)
    assert not sock.exists()


def test_a_stale_socket_is_replaced(env, source, tiny_model_dir):
    runtime = resident.runtime_dir()
    stale = runtime / f"{resident.key_of(settings_for(tiny_model_dir))}.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(stale))
    listener.close()  # the file stays, nobody listens: what a killed process leaves
    proc = complete(env, f"{source}:3:12", "--model", str(tiny_model_dir), "--max-tokens", "2")
    assert proc.returncode == 0, proc.stderr
    assert resident.request(settings_for(tiny_model_dir), {"op": "status"})["served"] == 1


def test_the_resident_process_exits_when_idle(env, source, tiny_model_dir, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("resident_minutes = 0.02\n")  # floor of one second
    proc = complete(env, f"{source}:3:12", "--model", str(tiny_model_dir), "--max-tokens", "2",
                    "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    settings = settings_for(tiny_model_dir, resident_minutes=0.02)
    status = resident.request(settings, {"op": "status"})
    assert status is not None
    assert wait_for_exit(status["pid"], timeout=60)
    assert resident.request(settings, {"op": "status"}) is None


def test_the_runtime_directory_is_private(env):
    runtime = resident.runtime_dir()
    assert runtime.stat().st_mode & 0o777 == 0o700
    os.chmod(runtime, 0o755)
    with pytest.raises(resident.ResidentUnavailable):
        resident.runtime_dir()


def test_kill_stops_it_cleanly_and_the_next_call_starts_a_new_one(env, source, tiny_model_dir):
    import signal

    args = [f"{source}:3:12", "--model", str(tiny_model_dir), "--max-tokens", "2"]
    assert complete(env, *args).returncode == 0
    settings = settings_for(tiny_model_dir)
    pid = resident.request(settings, {"op": "status"})["pid"]
    os.kill(pid, signal.SIGTERM)
    assert wait_for_exit(pid, timeout=60)
    assert not (resident.runtime_dir() / f"{resident.key_of(settings)}.sock").exists()
    again = complete(env, *args)
    assert again.returncode == 0 and "keeping the model loaded" in again.stderr
    assert resident.request(settings, {"op": "status"})["pid"] != pid
