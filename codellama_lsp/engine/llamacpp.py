"""Load a GGUF model for the llama.cpp runtime: find the file, read its tokenizer, make the step and backend.

Nothing on this path imports torch or transformers (a test checks ``sys.modules``): the tokenizer is rebuilt
from the GGUF's vocabulary with ``tokenizers`` (``gguf_file.py``), chat templates render with jinja2, and the
model runs in llama.cpp. So ``complete`` with a GGUF answers its first request in about a second.

Which file (``--model`` / ``model``):

* a ``.gguf`` file (or any file that starts like one);
* a directory holding GGUF files: the one named by ``gguf_file``, else the only one;
* ``owner/name`` whose snapshot in the local Hugging Face cache holds GGUF files (``TheBloke/CodeLlama-7B-GGUF``
  with ``gguf_file = "codellama-7b.Q4_K_M.gguf"``); the network is never used;
* ``demo`` with ``runtime = "llamacpp"``: the bundled demo model converted to GGUF (``gguf_convert.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..errors import first_line
from .backend import ModelInfo, ModelLoadError
from .gguf_file import architecture, config_from_metadata, is_gguf, load_gguf_tokenizer, read_metadata

Progress = Callable[[int, str], None]
GENERATION_ROOM = 512  # context tokens beyond the prompt budget: the longest answer (chat) must fit too


def _ggufs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.gguf") if p.is_file() and not p.name.startswith("."))


def _pick(directory: Path, gguf_file: str, what: str) -> Path:
    if gguf_file:
        chosen = directory / gguf_file
        if not chosen.is_file():
            names = ", ".join(p.name for p in _ggufs(directory)) or "none"
            raise ModelLoadError(f"{what} has no GGUF file named {gguf_file!r} (found: {names}); check --gguf-file")
        return chosen
    found = _ggufs(directory)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelLoadError(f"{what} holds no .gguf file")
    names = ", ".join(p.name for p in found[:8])
    raise ModelLoadError(f"{what} holds several GGUF files ({names}); choose one with --gguf-file NAME")


def hub_gguf_snapshot(repo_id: str) -> Path | None:
    """The newest snapshot directory of ``repo_id`` in the local Hugging Face cache that holds GGUF files."""
    from .resolve import hub_cache_dir

    if repo_id.count("/") != 1:
        return None
    root = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = root / "refs" / "main"
    if ref.is_file():
        snapshot = root / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if snapshot.is_dir() and _ggufs(snapshot):
            return snapshot
    snapshots = [s for s in (root / "snapshots").glob("*") if s.is_dir() and _ggufs(s)] if root.is_dir() else []
    return max(snapshots, key=lambda s: s.stat().st_mtime) if snapshots else None


def find_gguf(name: str, gguf_file: str = "") -> Path | None:
    """The GGUF file ``name`` (a file, a directory or a cached Hub repo) stands for, or None when it is not a
    GGUF model (a transformers checkpoint, or nothing at all: the transformers resolver then reports)."""
    path = Path(os.path.expanduser(name))
    if path.is_file():
        return path.resolve() if (path.suffix.lower() == ".gguf" or is_gguf(path)) else None
    if path.is_dir():
        if (path / "config.json").is_file() and not gguf_file:
            return None
        return _pick(path, gguf_file, str(path)).resolve() if (gguf_file or _ggufs(path)) else None
    if name.lower().endswith(".gguf"):
        raise ModelLoadError(f"GGUF file '{name}' does not exist; check the path given to --model")
    snapshot = hub_gguf_snapshot(name)
    return _pick(snapshot, gguf_file, f"the cached repo {name}") if snapshot is not None else None


def context_size(settings: Any, trained: int) -> int:
    """Tokens of llama.cpp context: the prompt budget plus room to answer, within what the model was trained on."""
    wanted = int(getattr(settings, "context_tokens", 4096) or 4096) + GENERATION_ROOM
    return max(256, min(wanted, trained)) if trained > 0 else wanted


def load_llamacpp_backend(settings: Any, path: Path, *, name: str, is_demo: bool = False, notice: str = "",
                          progress: Progress | None = None):
    """A :class:`~codellama_lsp.engine.local.LocalBackend` running ``path`` on llama.cpp."""
    from .local import LocalBackend
    from .step_llamacpp import LlamaCppModel, LlamaCppStep, default_threads, import_llama_cpp
    from .templates import template_for

    report = progress or (lambda _pct, _msg: None)
    report(5, f"reading {path.name}")
    meta = read_metadata(path)
    config = config_from_metadata(meta)
    report(10, f"loading the tokenizer stored in {path.name}")
    tokenizer = load_gguf_tokenizer(path, meta)
    try:
        template = template_for(tokenizer, model_name=name, config=config, override=settings.template, fim=settings.fim)
    except ValueError as exc:  # TemplateError: e.g. a template override the tokenizer cannot serve
        raise ModelLoadError(first_line(exc)) from None
    import_llama_cpp()  # the one-line install hint before anything else can fail
    report(20, f"loading {path.name} with llama.cpp ({architecture(meta) or '?'})")
    model = LlamaCppModel(path, n_gpu_layers=int(getattr(settings, "n_gpu_layers", 0) or 0))
    try:
        threads = int(getattr(settings, "n_threads", 0) or 0) or default_threads()
        step = LlamaCppStep(model, n_ctx=context_size(settings, model.n_ctx_train), n_threads=threads)
    except BaseException:
        model.close()
        raise
    gpu_layers = int(getattr(settings, "n_gpu_layers", 0) or 0)
    info = ModelInfo(
        name=name,
        path=str(path),
        family=template.family,
        fim=template.fim,
        device=f"cpu ({threads} thread{'s' if threads > 1 else ''})" if gpu_layers == 0 else f"gpu ({gpu_layers} layers offloaded)",
        dtype=_file_type(meta),
        quantization=_file_type(meta),
        context_length=min(step.n_ctx, _window(config)),
        is_demo=is_demo,
        runtime="llamacpp",
    )
    backend = LocalBackend(None, tokenizer, template, info, settings=settings, notice=notice, step=step)
    report(100, "model ready" + (f" ({notice})" if notice else ""))
    return backend


def _window(config: dict[str, Any]) -> int:
    from .resolve import context_window

    return context_window(config)


_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               32: "BF16"}


def _file_type(meta: dict[str, Any]) -> str:
    kind = meta.get("general.file_type")
    return _FILE_TYPES.get(kind, f"type {kind}") if isinstance(kind, int) else "gguf"
