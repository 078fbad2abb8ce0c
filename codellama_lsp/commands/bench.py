"""`codellama-lsp bench <harness>`: evaluation harnesses with committed results (see bench/results/).

Only ``fim`` so far: HumanEval-infilling through the real server (codellama_lsp/evaluation/fim.py). Each
harness module imports nothing heavy at import time, so building the CLI's parser stays cheap.
"""

from __future__ import annotations

HARNESSES = {
    "fim": ("codellama_lsp.evaluation.fim", "HumanEval-infilling through the server: pass@1, exact match, latency"),
}


def add_arguments(parser) -> None:
    import importlib

    sub = parser.add_subparsers(dest="harness", metavar="HARNESS")
    for name, (module_name, help_text) in HARNESSES.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_harness=module)


def run(args) -> int:
    harness = getattr(args, "_harness", None)
    if harness is None:
        print("codellama-lsp bench: name a harness: " + ", ".join(HARNESSES))
        return 2
    return int(harness.run(args) or 0)
