"""Helpers for the real-editor tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

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
    )
    env.update(extra)
    return env


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"({path} missing)"
