"""One module per ``codellama-lsp`` subcommand; each defines ``add_arguments(parser)`` and ``run(args) -> int``.

Modules here import nothing heavy at import time (no torch, no transformers), so ``--help`` is instant.
"""

from __future__ import annotations

from typing import Any

from ..config import choices


def add_runtime_arguments(parser) -> None:
    """The options that choose and tune the runtime, shared by serve, complete and doctor."""
    parser.add_argument("--runtime", choices=choices("runtime"),
                        help="what runs the model (auto: llama.cpp for a GGUF file, transformers otherwise)")
    parser.add_argument("--gguf-file", metavar="NAME", help="which .gguf of a directory or cached Hub repo holding several")
    parser.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads (default: all cores but one)")
    parser.add_argument("--gpu-layers", type=int, metavar="N", help="llama.cpp layers to offload to a GPU (CUDA/Metal build)")


def runtime_values(args) -> dict[str, Any]:
    return {"runtime": args.runtime, "gguf_file": args.gguf_file, "n_threads": args.threads,
            "n_gpu_layers": args.gpu_layers}
