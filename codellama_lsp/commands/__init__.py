"""One module per ``codellama-lsp`` subcommand; each defines ``add_arguments(parser)`` and ``run(args) -> int``.

Modules here import nothing heavy at import time (no torch, no transformers), so ``--help`` is instant.
"""

from __future__ import annotations

from typing import Any

from ..config import choices


CONFIG_HELP = "TOML settings file (default: config.toml in the platform config directory)"


def add_model_arguments(parser, *, runtime: bool = True) -> None:
    """The options that choose and load the model, shared by serve, complete, chat and doctor."""
    parser.add_argument("--model", help="model directory, .gguf file, Hugging Face id in the local cache, or 'demo'")
    if runtime:
        add_runtime_arguments(parser)
    parser.add_argument("--quantization", choices=choices("quantization"))
    parser.add_argument("--device", choices=choices("device"))


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
