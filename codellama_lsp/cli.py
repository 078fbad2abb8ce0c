"""``codellama-lsp`` entry point: parses the command line and hands off to ``commands/<name>.py``."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

COMMANDS = {
    "serve": "run the language server (stdio by default)",
    "complete": "print the completion at FILE:LINE:COL",
    "chat": "ask the model a question, optionally about a file's lines",
    "doctor": "report device, memory, model, tokenizer and grammars",
    "pull": "download a model into the Hugging Face cache (on a connected machine)",
    "bench": "run an evaluation or benchmark (e.g. `bench fim`)",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, the options of that command alone (the others are listed by
    name), which spares importing every command's option setup (~0.1 s) before a `complete` can start."""
    parser = argparse.ArgumentParser(prog="codellama-lsp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"codellama-lsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(f"codellama_lsp.commands.{name}")
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def _command_named(argv: list[str]) -> str | None:
    """The command ``argv`` names (its first word), when it is one."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_named(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
