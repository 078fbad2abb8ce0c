"""One module per ``codellama-lsp`` subcommand; each defines ``add_arguments(parser)`` and ``run(args) -> int``.

Modules here import nothing heavy at import time (no torch, no transformers), so ``--help`` is instant.
"""
