#!/usr/bin/env python
"""What a wider verify pass costs: time of one forward pass feeding W tokens on top of a cached context.

Speculation pays when a verify pass of W tokens costs little more than a one-token decode step. On a GPU,
decoding is memory-bound and W up to a few dozen is nearly free; on a CPU the matrix products become
compute-bound sooner, so the draft-tree budget (``decode.TREE_NODES``, 16) and the straight draft length
(``LOOKUP_NUM_TOKENS``, 10) are a trade-off there. This script measures it for a Llama-shaped model of a chosen
size with random weights (built in memory: nothing is downloaded; timing does not depend on the weights'
values) or for a real local checkpoint, through the same ``decode.forward`` / ``forward_tree`` the server uses.

    python bench/verify_width.py                          # ~0.5 B parameters, fp32, writes bench/results/verify_width.{json,md}
    python bench/verify_width.py --model demo             # the bundled demo model
    python bench/verify_width.py --model /path/to/CodeLlama-7b-hf --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WIDTHS = [1, 2, 4, 8, 10, 16, 24, 32]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="", help="a checkpoint path, 'demo', or empty for a random Llama-shaped model")
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--context", type=int, default=1024, help="tokens already in the cache")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "verify_width.json")
    return p.parse_args(argv)


def build_model(args):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    dtype = getattr(torch, args.dtype)
    if args.model:
        path = REPO / "codellama_lsp" / "models" / "demo" if args.model == "demo" else Path(args.model)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
        name = args.model
    else:
        config = LlamaConfig(vocab_size=32016, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                             num_hidden_layers=args.layers, num_attention_heads=args.hidden // 128,
                             num_key_value_heads=args.hidden // 128, rope_theta=1e6, max_position_embeddings=16384,
                             attn_implementation="sdpa")
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dtype)
        name = f"random Llama, hidden {args.hidden}, {args.layers} layers"
    model.to(args.device).eval()
    params = sum(p.numel() for p in model.parameters())
    return model, name, params


def main(argv=None) -> int:
    import torch

    from codellama_lsp.engine.decode import KVState, forward, forward_tree, prefill
    from codellama_lsp.engine.draft_tree import DraftTree

    args = parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    model, name, params = build_model(args)
    state = KVState(model)
    state.reset()
    vocab = model.config.vocab_size - 3
    context = [1] + [(i * 7919) % vocab + 3 for i in range(args.context - 1)]
    prefill(state, context)
    rows = []
    for width in WIDTHS:
        for kind in ("line", "tree"):
            if kind == "tree" and width < 3:
                continue
            times = []
            for _ in range(args.repeats + 1):
                tokens = [(width * 31 + k * 17) % vocab + 3 for k in range(width - 1)]
                start = time.perf_counter()
                if kind == "line":
                    forward(state, [5, *tokens], width)
                else:  # two branches of (width - 1) / 2 nodes each
                    tree = DraftTree(budget=width - 1)
                    half = (width - 1) // 2
                    tree.add_path(tokens[:half])
                    tree.add_path([(tokens[half] + 1) % vocab + 3, *tokens[half + 1:]])
                    forward_tree(state, 5, tree)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                state.crop_to(len(context))
            median = statistics.median(times[1:])  # the first call warms kernels up
            rows.append({"width": width, "kind": kind, "ms": round(median * 1000, 2)})
    base = next(r["ms"] for r in rows if r["width"] == 1)
    for r in rows:
        r["vs_one_token"] = round(r["ms"] / base, 2)
    record = {
        "command": "python bench/verify_width.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, device {args.device}",
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "model": name, "parameters": params, "dtype": args.dtype, "cached_tokens": args.context, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Verify pass width ({name}, {params / 1e9:.2f} B parameters, {args.dtype})", "",
             f"- Command: `{record['command']}`", f"- Date: {record['date']}", f"- Machine: {record['machine']}",
             f"- Load average: {record['load_average']}", f"- Tokens already cached: {args.context}", "",
             "| tokens fed | shape | ms per forward pass (median) | x one-token step |", "|---|---|---|---|"]
    lines += [f"| {r['width']} | {r['kind']} | {r['ms']} | {r['vs_one_token']} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
