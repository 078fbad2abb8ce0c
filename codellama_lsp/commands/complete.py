"""`codellama-lsp complete FILE:LINE:COL`: print the completion the server would show at that position.

The same orchestrator as the language server (``completion.CompletionService``), so this is also the
way to see — with ``--show-prompt`` / ``--json`` — exactly which prompt the model saw for a position.
LINE and COL are 1-based; COL counts characters (code points), as editors show them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


from ..config import choices
from . import CONFIG_HELP, add_model_arguments, runtime_values


def add_arguments(parser) -> None:
    parser.add_argument("target", metavar="FILE:LINE:COL", help="position to complete at (1-based line and column)")
    add_model_arguments(parser)
    parser.add_argument("--fim-mode", choices=choices("fim_mode"), help="infilling prompt order (default spm)")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="most tokens to generate")
    parser.add_argument("--context-tokens", type=int, metavar="N", help="token budget of the whole prompt")
    parser.add_argument("--no-repo-context", action="store_true", help="use only the file itself, no other files")
    parser.add_argument("--workspace", metavar="DIR", help="repository root for context (default: enclosing git root, else the file's folder)")
    parser.add_argument("--show-prompt", action="store_true", help="also print the exact prompt")
    parser.add_argument("--json", action="store_true", help="print one JSON object (completion, prompt, prompt_ids, fim_mode, model, timings, ...)")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--no-resident", action="store_true",
                        help="load the model in this process and exit with it (default: keep it loaded in a resident"
                        " process for resident_minutes, so the next call answers at once; a GGUF model always"
                        " loads in this process, which is quicker)")


class UsageError(Exception):
    """Bad FILE:LINE:COL or unreadable file: one line on stderr, exit status 2."""


def parse_target(target: str) -> tuple[Path, int, int]:
    """``FILE:LINE:COL`` -> (path, line, col), both 1-based. The file part may itself contain ':'."""
    parts = target.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise UsageError(f"expected FILE:LINE:COL, got {target!r}")
    path, line, col = parts
    if not (line.isdigit() and col.isdigit()) or int(line) < 1 or int(col) < 1:
        raise UsageError(f"LINE and COL must be positive integers (1-based), got {line!r} and {col!r}")
    return Path(path), int(line), int(col)


def read_document(path: Path) -> str:
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8", newline="") as fh:  # keep CRLF: offsets must match the file
            return fh.read()
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def offset_of(text: str, line: int, col: int, path: Path) -> int:
    """Offset of a 1-based (line, column-in-characters) position; the column may be one past the end."""
    from ..positions import UTF32, LineIndex

    lines = LineIndex.of(text)
    if line > len(lines.starts):
        raise UsageError(f"{path} has {len(lines.starts)} lines; line {line} does not exist")
    content = lines.line_text(line - 1)
    if col > len(content) + 1:
        raise UsageError(f"line {line} of {path} has {len(content)} characters; column {col} is past its end")
    return lines.offset_at(line - 1, col - 1, UTF32)


def workspace_root(path: Path) -> Path:
    """The enclosing git repository's root, else the file's folder."""
    folder = path.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def run(args) -> int:
    from ..errors import report_cli_error

    try:
        path, line, col = parse_target(args.target)
        text = read_document(path)
        offset = offset_of(text, line, col, path)
        if args.workspace and not Path(args.workspace).is_dir():
            raise UsageError(f"--workspace {args.workspace} is not a directory")
        if args.max_tokens is not None and args.max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
    except UsageError as exc:
        return report_cli_error(exc)

    from ..config import load_settings

    cli = {"model": args.model, "quantization": args.quantization, "device": args.device,
           "fim_mode": args.fim_mode, "max_tokens": args.max_tokens, "context_tokens": args.context_tokens,
           **runtime_values(args)}
    if args.no_repo_context:
        cli["repo_context"] = False
    cli["alternatives"] = 1  # one suggestion is printed: sampling the others ("next" in an editor) is wasted
    settings, errors = load_settings(cli, Path(args.config) if args.config else None)
    for error in errors:
        print(f"codellama-lsp: warning: {error}", file=sys.stderr)

    from ..engine.backend import EngineError

    root = Path(args.workspace) if args.workspace else workspace_root(path)
    settings = _absolute_model_path(settings)
    try:
        data = _answer(settings, text, offset, path.resolve(), root.resolve(), resident=not args.no_resident)
    except EngineError as exc:
        return report_cli_error(exc)

    if not data["completion"]:
        from ..features.completion import why_empty

        why = why_empty(data.get("timings") or {}, data.get("reason") or "", data.get("device"),
                        settings.completion_timeout_s)
        print(f"codellama-lsp: no suggestion: {why}", file=sys.stderr)
    if args.json:  # always carries the prompt too: one object a script can rely on
        print(json.dumps(data, ensure_ascii=False))
    elif args.show_prompt:
        print("--- prompt " + "-" * 60)
        print(data.get("prompt") or "")
        print("--- completion " + "-" * 56)
        print(data["completion"])
    else:
        print(data["completion"])
    return 0


def _answer(settings, text: str, offset: int, path: Path, root: Path, *, resident: bool) -> dict:
    """Through the resident process when allowed (see ``codellama_lsp.resident``), else in this process."""
    import asyncio

    from .. import resident as resident_process

    _print_model_notice(settings)
    if resident and resident_process.enabled(settings) and not _runs_on_llamacpp(settings):
        try:
            return resident_process.complete(settings, text, offset, path, root)
        except resident_process.ResidentUnavailable as exc:
            print(f"codellama-lsp: warning: {exc}; loading the model in this process", file=sys.stderr)
    return asyncio.run(_complete(settings, text, offset, path, root))


def _runs_on_llamacpp(settings) -> bool:
    """Whether the model is a GGUF run in-process by llama.cpp. Then no resident process is used: loading a
    GGUF in the command (import ~0.1 s, load ~0.1-0.5 s) costs less than starting one and handing the request
    over a socket (measured on the demo GGUF: 1.1-1.5 s in-process, 2.7-3.9 s for the call that starts it,
    1.0-1.8 s for later calls; bench/results/cli_latency_gguf.md)."""
    if getattr(settings, "backend", "local") != "local" or getattr(settings, "runtime", "auto") == "transformers":
        return False
    from ..engine.llamacpp import find_gguf

    try:
        return find_gguf(settings.model, getattr(settings, "gguf_file", "") or "") is not None \
            or getattr(settings, "runtime", "auto") == "llamacpp"
    except Exception:  # the load itself reports what is wrong with the model setting
        return False


def _absolute_model_path(settings):
    """A relative model directory means the caller's folder (the resident process may run elsewhere)."""
    import dataclasses

    model = Path(settings.model).expanduser()
    if settings.model and not model.is_absolute() and model.exists():
        return dataclasses.replace(settings, model=str(model.resolve()))
    return settings


async def _complete(settings, text: str, offset: int, path: Path, root: Path) -> dict:
    import asyncio

    from ..engine.worker import Engine

    engine = Engine(settings)
    loading = asyncio.ensure_future(engine.load(None))
    index = None
    try:
        # the repository is indexed while the model loads (llama.cpp's load runs outside the GIL)
        retriever, index = await asyncio.to_thread(_retriever, root, settings)
        await loading
        return await complete_file(engine, settings, retriever, text, offset, path)
    finally:
        if not loading.done():
            loading.cancel()
        elif not loading.cancelled():
            loading.exception()  # retrieved, so a failed load that lost to another error is not logged at exit
        if index is not None:
            index.stop()
        engine.close()


async def complete_file(engine: Any, settings: Any, retriever: Any, text: str, offset: int, path: Path) -> dict:
    """One invoked completion of a file on disk, described as ``complete --json`` prints it (both the
    resident process and the in-process path of `complete` answer through here)."""
    from ..context.syntax import language_for
    from ..features.completion import INVOKED, CompletionService

    service = CompletionService(engine, settings, retriever=retriever)
    try:
        outcome = await service.complete(text, offset, uri=path.as_uri(), path=str(path),
                                         language_id=language_for(None, str(path)) or "", trigger=INVOKED,
                                         use_cache=False)
        return service.describe(outcome)
    finally:
        service.close()


def _print_model_notice(settings) -> None:
    """The fallback to the bundled demo model is announced on stderr (stdout stays the completion)."""
    from ..engine.loading import resolve_model

    try:
        resolved = resolve_model(settings.model, explicit=settings.model_explicit)
    except Exception:
        return  # the load itself reports the error
    if resolved.notice:
        print(f"codellama-lsp: {resolved.notice}", file=sys.stderr)


def _retriever(root: Path, settings):
    """Repository context for one request: an index of ``root`` (no file watching needed)."""
    if not settings.repo_context:
        return None, None
    from ..context.retrieval import Retriever
    from ..context.workspace import WorkspaceIndex

    index = WorkspaceIndex([str(root)], watch=False)
    index.start()
    return Retriever(index).warm(), index
