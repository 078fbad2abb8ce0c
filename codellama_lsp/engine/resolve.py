"""Which model the user meant, found offline: a directory, a Hub id in the local cache, or the demo model.

Shared by every way of running a model (``loading.py``: transformers and GGUF; ``remote.py``: a server with a
local tokenizer), so none of them imports another to find a model. Resolution never touches the network:
``HF_HUB_OFFLINE=1`` is set when the package is imported (the hub libraries read it once, at import time;
without it a missing file costs ~100 s of DNS retries), and Hub ids are looked up in the local cache only. The
default model falls back to the bundled demo model with a notice when it has not been pulled; a model the user
named is never silently replaced. Failures are one-line :class:`ModelLoadError` messages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DEFAULT_MODEL, DEMO_MODEL
from ..errors import first_line
from .backend import ModelLoadError

DEMO_DIR = Path(__file__).resolve().parent.parent / "models" / "demo"


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # a local directory holding config.json, weights and tokenizer
    name: str  # what the user asked for
    is_demo: bool = False
    notice: str = ""  # shown to the user when something stood in for what they asked (the demo model)


def _pull_hint(name: str) -> str:
    if name == DEMO_MODEL or _looks_like_path(name) or Path(os.path.expanduser(name)).exists():
        return "replace the checkpoint in that directory (re-download or re-save the model)"
    return f"run `codellama-lsp pull {name}` on a connected machine (then copy the Hugging Face cache here)"


def demo_available() -> bool:
    return (DEMO_DIR / "config.json").is_file()


def _demo(name: str, notice: str = "") -> ResolvedModel:
    if not demo_available():
        raise ModelLoadError(
            f"model '{name}' is not in the local Hugging Face cache and the bundled demo model is missing "
            f"from {DEMO_DIR}; {_pull_hint(DEFAULT_MODEL)}, or pass a local model directory with --model"
        )
    return ResolvedModel(path=DEMO_DIR, name=DEMO_MODEL, is_demo=True, notice=notice)


def _looks_like_path(name: str) -> bool:
    """A Hub id is ``owner/name``; anything else with separators, or starting like a path, is a path."""
    if name.startswith((".", "~", "/")) or os.sep != "/" and os.sep in name:
        return True
    return name.count("/") > 1


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring ``HF_HUB_CACHE`` / ``HF_HOME`` as set now (huggingface_hub
    reads them once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_in_hub_cache(repo_id: str) -> Path | None:
    """The snapshot directory of ``repo_id`` in the local Hugging Face cache, or None. No network."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(hub_cache_dir()))
    except (HFValidationError, ValueError):
        return None
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found).parent
    return None


def resolve_model(name: str | None, *, explicit: bool) -> ResolvedModel:
    """Map what the user asked for to a local directory.

    "demo" is the bundled demo model; an existing directory is itself; anything else is a Hugging Face id
    looked up in the local cache only. The default model, when absent and not named by the user, is
    replaced by the demo model with a notice; a named model that cannot be found raises ModelLoadError."""
    name = (name or DEFAULT_MODEL).strip()
    if name == DEMO_MODEL:
        return _demo(name)
    expanded = Path(os.path.expanduser(name))
    if expanded.is_dir():
        return ResolvedModel(path=expanded.resolve(), name=name)
    if expanded.exists():
        raise ModelLoadError(f"model path '{name}' is a file; pass the directory that holds config.json and the weights")
    if _looks_like_path(name):
        raise ModelLoadError(f"model directory '{name}' does not exist; check the path given to --model (or the `model` setting)")
    snapshot = find_in_hub_cache(name)
    if snapshot is not None:
        return ResolvedModel(path=snapshot, name=name)
    if not explicit and name == DEFAULT_MODEL:
        return _demo(
            name,
            notice=(
                f"{DEFAULT_MODEL} is not in the local Hugging Face cache ({hub_cache_dir()}); using the bundled "
                f"demo model; to use Code Llama {_pull_hint(DEFAULT_MODEL)}"
            ),
        )
    raise ModelLoadError(
        f"model '{name}' is not in the local Hugging Face cache ({hub_cache_dir()}); {_pull_hint(name)}, "
        "or pass a local model directory with --model"
    )


def read_config(path: Path, name: str) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"'{path}' has no config.json, so it is not a model directory; pass a directory with config.json, "
            f"the weights and the tokenizer (or {_pull_hint(name)})"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON ({first_line(exc, limit=300)}); re-download the model: {_pull_hint(name)}") from None
    return config


def context_window(config: dict[str, Any]) -> int:
    """Tokens the model handles well: its position limit, or less where the checkpoint says it was trained
    on shorter windows (``preferred_context_tokens``; the bundled demo model saw at most 1,024)."""
    window = int(config.get("max_position_embeddings") or 4096)
    preferred = config.get("preferred_context_tokens")
    return min(window, int(preferred)) if isinstance(preferred, int) and preferred > 0 else window


def load_tokenizer_for(resolved: ResolvedModel):
    from .tokenizer import load_tokenizer

    try:
        return load_tokenizer(resolved.path)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the tokenizer from {resolved.path} ({first_line(exc, limit=300)}); the model directory needs "
            f"tokenizer.json: {_pull_hint(resolved.name)}"
        ) from None
