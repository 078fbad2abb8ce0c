"""`codellama-lsp chat "question" [--file F --lines A-B]`: ask the model, streaming the answer to stdout.

The same :class:`~codellama_lsp.features.chat.ChatService` as the editor's chat and "Explain this": the same
system prompt, code context (the lines, the function/class around them, repository snippets) and
Instruct template, so what you see here is what an editor gets.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import CONFIG_HELP, add_model_arguments


def add_arguments(parser) -> None:
    parser.add_argument("question", help="what to ask")
    parser.add_argument("--file", "-f", metavar="F", help="a file the question is about")
    parser.add_argument("--lines", "-l", metavar="A-B", help="1-based inclusive line range of --file (default: all)")
    add_model_arguments(parser, runtime=False)
    parser.add_argument("--max-tokens", type=int, metavar="N", help="most tokens to generate (default chat_max_tokens)")
    parser.add_argument("--no-repo-context", action="store_true", help="use only the file itself, no other files")
    parser.add_argument("--workspace", metavar="DIR", help="repository root for context (default: enclosing git root)")
    parser.add_argument("--config", help=CONFIG_HELP)


def parse_lines(value: str, line_count: int) -> tuple[int, int]:
    """``"A-B"`` (or ``"A"``) -> (A, B), 1-based inclusive, checked against the file's length."""
    from .complete import UsageError

    first, sep, last = value.partition("-")
    if not first.strip().isdigit() or (sep and not last.strip().isdigit()):
        raise UsageError(f"--lines expects A-B with 1-based line numbers, got {value!r}")
    a, b = int(first), int(last) if sep else int(first)
    if a < 1 or b < a:
        raise UsageError(f"--lines {value}: need 1 <= A <= B")
    if a > line_count:
        raise UsageError(f"the file has {line_count} lines; line {a} does not exist")
    return a, min(b, line_count)


def line_span(text: str, first: int, last: int) -> tuple[int, int]:
    """Character offsets of lines first..last (1-based, inclusive), line break of the last excluded."""
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    start = starts[first - 1]
    end = starts[last] - 1 if last < len(starts) else len(text)
    if end > start and text[end - 1] == "\r":
        end -= 1
    return start, max(start, end)


def run(args) -> int:
    from ..errors import report_cli_error
    from .complete import UsageError, read_document, workspace_root

    context = None
    try:
        if not args.question.strip():
            raise UsageError("the question is empty")
        if args.lines and not args.file:
            raise UsageError("--lines needs --file")
        if args.max_tokens is not None and args.max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
        if args.workspace and not Path(args.workspace).is_dir():
            raise UsageError(f"--workspace {args.workspace} is not a directory")
        if args.file:
            from ..features.chat import CodeContext
            from ..features.targets import language_name

            path = Path(args.file)
            text = read_document(path)
            line_count = text.count("\n") + (0 if text.endswith("\n") else 1)
            start, end = line_span(text, *parse_lines(args.lines, line_count)) if args.lines else (0, len(text))
            context = CodeContext(path=str(path.resolve()), text=text, start=start, end=end,
                                  language=language_name("", path))
    except UsageError as exc:
        return report_cli_error(exc)

    from ..config import load_settings

    cli = {"model": args.model, "quantization": args.quantization, "device": args.device,
           "chat_max_tokens": args.max_tokens}
    if args.no_repo_context:
        cli["repo_context"] = False
    settings, errors = load_settings(cli, Path(args.config) if args.config else None)
    for error in errors:
        print(f"codellama-lsp: warning: {error}", file=sys.stderr)

    import asyncio

    from ..features.chat import ChatError
    from ..engine.backend import EngineError

    root = None
    if context is not None:
        root = Path(args.workspace).resolve() if args.workspace else workspace_root(Path(context.path))
    try:
        answer = asyncio.run(_ask(settings, args.question, context, root))
    except (EngineError, ChatError) as exc:
        return report_cli_error(exc)
    if not answer.text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
    if answer.stop_reason == "max_tokens":
        print(f"codellama-lsp: the answer was cut at {settings.chat_max_tokens} tokens (--max-tokens)", file=sys.stderr)
    return 0


async def _ask(settings, question: str, context, root: Path | None):
    from ..features.chat import ChatEngines, ChatService
    from ..engine.worker import Engine
    from .complete import _print_model_notice, _retriever

    if settings.chat_model and settings.chat_model != settings.model:  # only the chat model is needed here
        import dataclasses

        settings = dataclasses.replace(settings, model=settings.chat_model, model_explicit=True, chat_model="")
    _print_model_notice(settings)
    engine = Engine(settings)
    engines = ChatEngines(engine, settings)
    index = None
    try:
        await engine.load(None)
        retriever = None
        if root is not None:
            retriever, index = _retriever(root, settings)
        service = ChatService(engines, settings, retriever=retriever)

        def show(_seq: int, text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        return await service.ask([{"role": "user", "content": question}], context=context, on_chunk=show)
    finally:
        if index is not None:
            index.stop()
        engines.close()
        engine.close()
