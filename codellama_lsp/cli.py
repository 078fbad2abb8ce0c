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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codellama-lsp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"codellama-lsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"codellama_lsp.commands.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
