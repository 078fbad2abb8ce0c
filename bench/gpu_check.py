"""The prepared device check: one run on a lent GPU answers what the CPU cannot (issue #21).

    python bench/gpu_check.py                          # on the GPU machine: 7B-shaped model, ~5-8 minutes
    python bench/gpu_check.py --device cpu --size tiny # the same code end to end on a CPU in a minute (tested)

Through the device tool (results come back from $OUT; leave a margin under its 10-minute limit):

    python bench/gpu_check.py --out $OUT/gpu_check-cuda.json 2>&1 | tail -60

Needs only torch and transformers (written against torch 2.11-2.13 and transformers 5.17-5.23; no
bitsandbytes, no network, no checkpoint): it builds a random-weight Llama of Code Llama 7B's shape and
vocabulary (32,016 tokens) directly on the device. Speed does not depend on the weights; the output head is
tied to a permutation of the embeddings ("chain" weights, as in tests/test_decode.py) so that greedy choices
have real margins and prompt-lookup drafts get accepted, as with real code.

It reports, into one JSON file (written after every section, so a run cut short keeps what it measured):

* ``step_ms``: ms per token at 512 / 4k / 16k tokens of context for the plain loop (transformers forward with
  a dynamic cache), the static cache step run eagerly, and the static step replayed as a CUDA graph;
* ``verify_ms``: a verify pass feeding 1 / 4 / 16 tokens at those contexts, dynamic and static;
* ``tree_vs_sequential``: a 16-node draft tree's logits from one masked pass against the same nodes decoded
  one by one, under each SDPA backend (efficient, cuDNN, math) in bf16 and fp16: max |difference|, rows
  whose greedy token differs, and the smallest top-2 gap;
* ``divergence``: the engine (dynamic cache + lookup trees, and the static cache) against the plain loop on
  chain prompts: first divergence, its top-2 gap, and whether it is within engine/divergence.py's epsilon;
* ``memory``: peak allocated memory after a 16k prefill against ``memory.estimate``.

Results go to ``--out`` (default ``bench/results/gpu_check-<device>.json``); copy them into bench/results/
with the machine and date when a GPU was lent.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

SIZES = {
    # Code Llama 7B: hidden 4096, MLP 11008, 32 layers x 32 heads, vocab 32016, 16k positions, rope theta 1e6
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
}
CONTEXTS = {"7b": (512, 4096, 16384), "tiny": (64, 256, 512)}
WIDTHS = (1, 4, 16)
VOCAB = 32016


class _NoText:
    """A detokenizer for decode.generate when no tokenizer is at hand: the check compares token ids only."""

    def push(self, token: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


def build_model(size: str, device: str, dtype: torch.dtype, seed: int = 0, chain_scale: float = 30.0):
    """A random-weight LlamaForCausalLM of the given shape on ``device``, head tied to a successor permutation.

    Head row for token x is the unit embedding of its successor times ``chain_scale / sqrt(hidden)``: after
    the final RMSNorm the hidden state has norm ~sqrt(hidden), so logits stay within about +-``chain_scale``,
    Code Llama's range, and near-ties happen where the context pulls away from the chain."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=16384, rope_theta=1_000_000.0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False, **SIZES[size])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.config._attn_implementation = "sdpa"
    perm = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        successor = embed[torch.argsort(perm).to(embed.device)].float()
        successor = successor / successor.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        model.lm_head.weight.copy_((successor * (chain_scale / config.hidden_size**0.5)).to(embed.dtype))
    return model.eval(), perm.tolist()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, repeat: int, warmup: int = 2) -> float:
    """Median ms of ``fn`` over ``repeat`` calls (after ``warmup``), waiting for the device each time."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return round(times[len(times) // 2], 3)


def chain_prompt(perm: list[int], length: int, seed: int) -> list[int]:
    """Noise with a chain run in it, ending in the start of that run again: lookup drafts have something to find."""
    import random

    rng = random.Random(seed)
    run = [rng.randrange(3, VOCAB)]
    for _ in range(40):
        run.append(perm[run[-1]])
    noise = [rng.randrange(3, VOCAB) for _ in range(max(0, length - len(run) - 8))]
    half = len(noise) // 2
    return ([1] + noise[:half] + run + noise[half:] + run[:6])[:length]


# ---------------------------------------------------------------------------------------------------------------


def section_steps(model, perm, device: str, contexts, repeat: int) -> dict[str, Any]:
    from codellama_lsp.engine import decode as D
    from codellama_lsp.engine.static_cache import StaticStep

    out: dict[str, Any] = {"step_ms": {}, "verify_ms": {}}
    for ctx in contexts:
        prompt = chain_prompt(perm, ctx, seed=ctx)
        dyn = D.KVState(model)
        dyn.reset()
        D.prefill(dyn, prompt)
        length = len(dyn.ids)

        def plain_step() -> None:
            D.decode_one(dyn, 13)
            dyn.crop_to(length)

        row: dict[str, Any] = {"plain_dynamic": timed(plain_step, device, repeat)}
        verify: dict[str, Any] = {}
        for width in WIDTHS:
            def dyn_verify(width=width) -> None:
                D.forward(dyn, [13] * width, width)
                dyn.crop_to(length)

            verify[f"dynamic_w{width}"] = timed(dyn_verify, device, repeat)
        del dyn
        for graphs in ((False, True) if device.startswith("cuda") else (False,)):
            st = StaticStep(model, capacity=ctx + 64, graphs=graphs)
            st.reset()
            D.prefill(st, prompt)

            def static_step(st=st) -> None:
                D.decode_one(st, 13)
                st.crop_to(length)

            row["static_graph" if graphs else "static_eager"] = timed(static_step, device, repeat)
            if not graphs:
                for width in WIDTHS:
                    def st_verify(width=width, st=st) -> None:
                        D.forward(st, [13] * width, width)
                        st.crop_to(length)

                    verify[f"static_w{width}"] = timed(st_verify, device, repeat)
            del st
        out["step_ms"][str(ctx)] = row
        out["verify_ms"][str(ctx)] = verify
        free_memory(device)
    return out


def sequential_logits(model, prefix_state_factory, tree) -> torch.Tensor:
    """Each tree row's logits by decoding its path one token at a time on a fresh copy of the prefix cache."""
    from codellama_lsp.engine import decode as D

    rows = []
    parents = tree.parents
    for node in range(len(tree) + 1):
        path = []
        i = node - 1
        while i >= 0:
            path.append(tree.tokens[i])
            i = parents[i]
        state, last = prefix_state_factory()
        logits = D.forward(state, [last], 1)[-1]
        for token in reversed(path):
            logits = D.forward(state, [token], 1)[-1]
        rows.append(logits)
    return torch.stack(rows)


def section_tree(model, perm, device: str, dtypes, context: int) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from codellama_lsp.engine import decode as D
    from codellama_lsp.engine.divergence import top2_gap
    from codellama_lsp.engine.draft_tree import DraftTree

    prompt = chain_prompt(perm, context, seed=3)
    tree = DraftTree(budget=16)
    tree.add_path([perm[prompt[-1]], perm[perm[prompt[-1]]], perm[perm[perm[prompt[-1]]]], 7, 8, 9])
    tree.add_path([perm[prompt[-1]], 11, 12, 13, 14])
    tree.add_path([21, 22, 23, 24, 25])
    backends = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        backends["cudnn"] = SDPBackend.CUDNN_ATTENTION
    results: dict[str, Any] = {"tree_nodes": len(tree), "context": context}
    for dtype_name in dtypes:
        model.to(getattr(torch, dtype_name))
        for name, backend in backends.items():
            key = f"{dtype_name}/{name}"
            try:
                with sdpa_kernel([backend]):
                    base = D.KVState(model)
                    base.reset()
                    D.prefill(base, prompt[:-1])

                    def fresh():
                        s = D.KVState(model)
                        s.reset()
                        D.prefill(s, prompt[:-1])
                        return s, prompt[-1]

                    tree_rows = D.forward_tree(base, prompt[-1], tree)
                    seq_rows = sequential_logits(model, fresh, tree)
                diff = (tree_rows - seq_rows).abs()
                flips = int((tree_rows.argmax(-1) != seq_rows.argmax(-1)).sum())
                results[key] = {
                    "max_abs_diff": round(float(diff.max()), 5),
                    "mean_abs_diff": round(float(diff.mean()), 6),
                    "argmax_differs_rows": flips,
                    "rows": len(tree) + 1,
                    "min_top2_gap": round(min(top2_gap(r) for r in seq_rows), 5),
                }
            except Exception as exc:  # a backend this device or dtype does not offer
                results[key] = {"unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
            free_memory(device)
    return results


def section_divergence(model, perm, device: str, dtypes, prompts: int, length: int, new_tokens: int) -> dict[str, Any]:
    from codellama_lsp.engine import decode as D
    from codellama_lsp.engine import divergence as V
    from codellama_lsp.engine.backend import GenerationParams
    from codellama_lsp.engine.draft_tree import TreeBudget
    from codellama_lsp.engine.static_cache import StaticStep

    out: dict[str, Any] = {}
    for dtype_name in dtypes:
        model.to(getattr(torch, dtype_name))
        eps = V.epsilon(dtype_name)
        for kind in ("dynamic", "static"):
            cases = []
            for seed in range(prompts):
                prompt = chain_prompt(perm, length, seed=100 + seed)
                expected, gaps = V.plain_greedy(model, prompt, new_tokens)
                if kind == "static":
                    state = StaticStep(model, capacity=length + new_tokens + 64)
                else:
                    state = D.KVState(model)
                state.budget = TreeBudget(most=D.TREE_NODES, window=10**9)
                result = D.generate(state, prompt, GenerationParams(max_new_tokens=new_tokens), detokenizer=_NoText(),
                                    eos_id=None)
                found = V.first_divergence(expected, gaps, result.token_ids)
                cases.append({
                    "identical": found.identical,
                    "first_divergence": found.index,
                    "top2_gap": None if found.gap is None else round(found.gap, 5),
                    "within_epsilon": found.within(eps),
                    "tokens_per_forward": round(result.stats.generated_tokens / max(result.stats.forward_passes, 1), 2),
                    "min_gap_reference": round(min(gaps), 5),
                })
                free_memory(device)
            out[f"{dtype_name}/{kind}"] = {
                "epsilon": eps,
                "identical": sum(c["identical"] for c in cases),
                "within_epsilon": sum(c["within_epsilon"] for c in cases),
                "cases": cases,
            }
    return out


def section_memory(model, perm, device: str, dtype_name: str, context: int) -> dict[str, Any]:
    from codellama_lsp.engine import decode as D
    from codellama_lsp.engine import memory

    model.to(getattr(torch, dtype_name))
    config = model.config.to_dict()
    est = memory.estimate(config, quantization="none", dtype=dtype_name, context_tokens=context, device=device)
    out: dict[str, Any] = {"estimate": est.as_dict(), "context": context, "dtype": dtype_name}
    if not device.startswith("cuda"):
        out["peak"] = "not measured on cpu"
        return out
    free_memory(device)
    torch.cuda.reset_peak_memory_stats()
    state = D.KVState(model)
    state.reset()
    D.prefill(state, chain_prompt(perm, context, seed=9))
    D.decode_one(state, 13)
    sync(device)
    peak = torch.cuda.max_memory_allocated()
    free, total = torch.cuda.mem_get_info()
    out.update(peak_allocated_gib=round(peak / memory.GIB, 3), reserved_gib=round(torch.cuda.memory_reserved() / memory.GIB, 3),
               device_used_gib=round((total - free) / memory.GIB, 3),
               estimate_minus_context_gib=round((est.total_bytes - memory.CUDA_CONTEXT_BYTES) / memory.GIB, 3),
               covered=peak <= est.total_bytes - memory.CUDA_CONTEXT_BYTES)
    del state
    free_memory(device)
    return out


def free_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="7b on CUDA, tiny on CPU by default")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    parser.add_argument("--repeat", type=int, default=None, help="timed repetitions per figure")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per divergence check")
    parser.add_argument("--sections", default="steps,tree,divergence,memory")
    parser.add_argument("--chain-scale", type=float, default=30.0, help="logit scale of the chain head")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = args.device
    size = args.size or ("7b" if device.startswith("cuda") else "tiny")
    dtypes = [d for d in args.dtypes.split(",") if d]
    repeat = args.repeat or (20 if device.startswith("cuda") else 5)
    contexts = CONTEXTS[size]
    out_path = Path(args.out or REPO / "bench" / "results" / f"gpu_check-{device.split(':')[0]}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    import transformers

    report: dict[str, Any] = {
        "command": "python bench/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "device": device,
                    "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
                    "torch": torch.__version__, "transformers": transformers.__version__},
        "size": size,
        "dtypes": dtypes,
        "seconds": {},
    }

    def save() -> None:
        out_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    began = time.perf_counter()
    model, perm = build_model(size, device, getattr(torch, dtypes[0]), chain_scale=args.chain_scale)
    report["seconds"]["build"] = round(time.perf_counter() - began, 1)
    save()
    sections = args.sections.split(",")
    for name in sections:
        began = time.perf_counter()
        try:
            if name == "steps":
                model.to(getattr(torch, dtypes[0]))
                report["steps_dtype"] = dtypes[0]
                report.update(section_steps(model, perm, device, contexts, repeat))
            elif name == "tree":
                report["tree_vs_sequential"] = section_tree(model, perm, device, dtypes, contexts[1])
            elif name == "divergence":
                report["divergence"] = section_divergence(model, perm, device, dtypes, args.prompts, contexts[0], 24)
            elif name == "memory":
                report["memory"] = section_memory(model, perm, device, dtypes[0], contexts[-1])
        except Exception as exc:  # one failing section must not lose the others
            report[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
        report["seconds"][name] = round(time.perf_counter() - began, 1)
        save()
        print(f"[gpu_check] {name} done in {report['seconds'][name]} s", flush=True)
    print(json.dumps({k: report[k] for k in report if k not in ("tree_vs_sequential", "divergence")}, indent=1))
    print(f"[gpu_check] wrote {out_path}")
    return 1 if any(k.endswith("_error") for k in report) else 0


if __name__ == "__main__":
    sys.exit(main())
