"""Runtimes side by side: the same models under transformers and llama.cpp, through the product's own backend.

Why: the llama.cpp runtime exists because transformers on a laptop CPU is too slow and too big for an
interactive assistant; this measures by how much, with our decode loop on both, and what our loop costs on
top of llama.cpp's own generation. Each (model, runtime) runs in a fresh child process, so import time and
peak RSS are its own. All in one invocation, interleaved on the same machine.

Models:
* ``demo``: the bundled demo model (2.6 M params): safetensors under transformers (fp32), converted GGUF (F16)
  under llama.cpp;
* ``smollm2``: SmolLM2-135M-Instruct Q4_1 GGUF: under llama.cpp as is, under transformers dequantized to fp32
  (``from_pretrained(gguf_file=...)``; needs ``gguf`` and ``accelerate``);
* ``llama1b``: a ~1 B-parameter Llama with random weights (speed does not depend on the weights) and Code Llama's
  vocabulary: fp32 under transformers, Q4_0 GGUF under llama.cpp (converted, then quantized in process).

Per run: import (the runtime's modules), load (weights to ready backend), prefill tok/s (a fresh cache, a
``--prefill``-token prompt of real code), decode tok/s (``--decode`` greedy tokens, speculation off, after
that prompt), peak RSS (``ru_maxrss``). For llama.cpp also llama.cpp's own generation of the same tokens from
the same prompt (``Llama.generate``, greedy, same threads): our loop's decode overhead against it.

    python bench/runtimes.py                       # writes bench/results/runtimes.{json,md}
    python bench/runtimes.py --models demo smollm2 --threads 1
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CACHE = REPO / ".cache" / "bench"
SMOLLM2 = REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SHARED_TOKENIZER = Path(os.environ.get("CODELLAMA_LSP_SHARED", REPO.parent / "shared")) / "data" / "codellama-tokenizer"


# -- model files ---------------------------------------------------------------------------------------------------


def demo_files() -> dict[str, str]:
    from codellama_lsp.engine.gguf_convert import demo_gguf
    from codellama_lsp.engine.loading import DEMO_DIR

    return {"transformers": str(DEMO_DIR), "llamacpp": str(demo_gguf(CACHE))}


def llama1b_files() -> dict[str, str]:
    """A random-weight ~1 B Llama (fp16 safetensors, loaded as fp32 by transformers) and its Q4_0 GGUF."""
    hf_dir, gguf_q4 = CACHE / "llama1b", CACHE / "llama1b.Q4_0.gguf"
    if not (hf_dir / "model.safetensors").is_file():
        import shutil

        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=32016, hidden_size=2048, intermediate_size=5504, num_hidden_layers=16,
                             num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096,
                             rope_theta=1_000_000.0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        with torch.device("cpu"):
            model = LlamaForCausalLM(config).to(torch.float16)
        hf_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(hf_dir, safe_serialization=True)
        del model
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(SHARED_TOKENIZER / name, hf_dir / name)
    if not gguf_q4.is_file():
        import llama_cpp

        from codellama_lsp.engine.gguf_convert import convert_checkpoint

        f16 = CACHE / "llama1b.F16.gguf"
        convert_checkpoint(hf_dir, f16)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
        params.nthread = os.cpu_count() or 2
        rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(gguf_q4).encode(), params)
        f16.unlink()
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize failed ({rc})")
    return {"transformers": str(hf_dir), "llamacpp": str(gguf_q4)}


def smollm2_files() -> dict[str, str]:
    return {"transformers": str(SMOLLM2), "llamacpp": str(SMOLLM2)}


FILES = {"demo": demo_files, "smollm2": smollm2_files, "llama1b": llama1b_files}


# -- one run, in a child process -----------------------------------------------------------------------------------


def prompt_text() -> str:
    import textwrap

    return inspect.getsource(textwrap) * 4


def child(model: str, runtime: str, path: str, prefill: int, decode: int, threads: int) -> dict:
    started = time.perf_counter()
    if runtime == "transformers":
        import torch  # noqa: F401
        from transformers import LlamaForCausalLM  # noqa: F401 - what loading a Llama imports
    else:  # what our llama.cpp runtime imports: numpy and llama-cpp-python's ctypes bindings only
        from codellama_lsp.engine.step_llamacpp import import_llama_cpp

        import_llama_cpp()
    import_s = time.perf_counter() - started

    from codellama_lsp.config import Settings
    from codellama_lsp.engine.backend import GenerationParams
    from codellama_lsp.engine.loading import load_backend

    started = time.perf_counter()
    if runtime == "transformers" and path.endswith(".gguf"):
        backend = _transformers_from_gguf(Path(path))
    else:
        backend = load_backend(Settings(model=path, model_explicit=True, runtime=runtime, device="cpu",
                                        n_threads=threads, context_tokens=prefill + decode + 64))
    load_s = time.perf_counter() - started
    if runtime == "transformers" and threads:
        import torch

        torch.set_num_threads(threads)

    ids = ([backend.tokenizer.bos_id] if backend.tokenizer.bos_id is not None else []) + \
        backend.encode(prompt_text())[: prefill - 1]
    plain = GenerationParams(max_new_tokens=1, speculation="none", reuse_cache=False)
    backend.generate(ids[:32], plain)  # warm-up (first-call allocations)
    prefill_s = min(_timed(lambda: backend.generate(ids, plain)) for _ in range(2))
    out = {
        "model": model, "runtime": runtime, "file": Path(path).name, "threads": threads,
        "import_s": round(import_s, 2), "load_s": round(load_s, 2),
        "prefill_tokens": len(ids), "prefill_tok_s": round(len(ids) / prefill_s, 1),
    }
    out.update(_decode_speed(backend, ids, decode, path, threads, prefill + decode + 64, runtime == "llamacpp"))
    backend.close()
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _decode_speed(backend, ids: list[int], decode: int, path: str, threads: int, n_ctx: int, own: bool) -> dict:
    """Decode speed after the prompt, ours and (on llama.cpp) llama.cpp's own, in interleaved rounds.

    Each side keeps the prompt cached (ours by its reuse, ``Llama.generate`` by its own prefix match), so a
    round costs decoding only: one generation of ``decode`` tokens and one of 1 token (the last prompt token
    fed again: the fixed cost of a call); their difference over ``decode - 1`` tokens is the cost per decoded
    token, in wall time and in CPU time of the whole process (all threads). CPU time is what our loop adds to
    llama.cpp's work and barely moves when other processes share the cores, where wall time swings by 2x;
    the overhead is the ratio of the medians over the rounds, in CPU time, with the wall-time ratio beside it."""
    from codellama_lsp.engine.backend import GenerationParams

    one = GenerationParams(max_new_tokens=1, speculation="none", reuse_cache=True)
    many = GenerationParams(max_new_tokens=decode, speculation="none", reuse_cache=True)
    baseline = _LlamaOwn(path, threads, n_ctx) if own else None
    backend.generate(ids, one)  # fills the cache with the prompt
    n = len(backend.generate(ids, many).token_ids)
    if baseline is not None:
        baseline.generate(ids, n)
    ours, theirs, same = [], [], True
    for _ in range(ROUNDS if own else 3):  # interleaved: a burst of other work slows both sides alike
        (_, w1, c1), (result, wn, cn) = _measured(lambda: backend.generate(ids, one)), \
            _measured(lambda: backend.generate(ids, many))
        n = len(result.token_ids)
        n = max(n, 2)
        ours.append(((wn - w1) / (n - 1), (cn - c1) / (n - 1)))
        if baseline is not None:
            (_, w1, c1), (tokens, wn, cn) = _measured(lambda: baseline.generate(ids, 1)), \
                _measured(lambda: baseline.generate(ids, n))
            theirs.append(((wn - w1) / (n - 1), (cn - c1) / (n - 1)))
            same = same and tokens == result.token_ids
    wall = statistics.median(w for w, _ in ours)
    out = {"decode_tokens": n, "decode_tok_s": round(1 / min(w for w, _ in ours), 1),
           "decode_ms_per_token_median": round(1000 * wall, 3),
           "decode_cpu_ms_per_token_median": round(1000 * statistics.median(c for _, c in ours), 3)}
    if baseline is not None:
        own_wall = statistics.median(w for w, _ in theirs)
        out.update(own_decode_tok_s=round(1 / min(w for w, _ in theirs), 1), own_tokens_equal_ours=same,
                   own_decode_ms_per_token_median=round(1000 * own_wall, 3),
                   own_decode_cpu_ms_per_token_median=round(1000 * statistics.median(c for _, c in theirs), 3))
        out["loop_overhead_pct"] = round(100 * (out["decode_cpu_ms_per_token_median"]
                                                / out["own_decode_cpu_ms_per_token_median"] - 1), 1)
        out["loop_overhead_wall_pct"] = round(100 * (wall / own_wall - 1), 1)
        baseline.close()
    return out


def _measured(fn):
    """``fn()``, its wall time and the CPU time of the whole process (every thread) it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _transformers_from_gguf(path: Path):
    """SmolLM2 under transformers: the GGUF dequantized to fp32 by transformers itself."""
    import torch
    from transformers import AutoModelForCausalLM

    from codellama_lsp.engine.backend import ModelInfo
    from codellama_lsp.engine.gguf_file import load_gguf_tokenizer
    from codellama_lsp.engine.local import LocalBackend
    from codellama_lsp.engine.templates import template_for

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = load_gguf_tokenizer(path)
    template = template_for(tokenizer, model_name=path.name)
    info = ModelInfo(name=path.name, path=str(path), family=template.family, fim=template.fim, device="cpu",
                     dtype="float32", quantization="none", context_length=8192)
    return LocalBackend(model, tokenizer, template, info)


ROUNDS = 9


class _LlamaOwn:
    """llama.cpp's own generation (``Llama.generate``, greedy) from the same ids, as the baseline."""

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        import llama_cpp

        from codellama_lsp.engine.step_llamacpp import default_threads

        threads = threads or default_threads()
        self.llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
                                   verbose=False)

    def generate(self, ids: list[int], n: int) -> list[int]:
        """Greedy tokens after ``ids``; the prompt prefix it already holds is kept (its own prefix match)."""
        out: list[int] = []
        for token in self.llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(token)
            if len(out) >= n:
                break
        return out

    def close(self) -> None:
        self.llm.close()


# -- time to suggestion in the typing replay ---------------------------------------------------------------------


def replay(model: str, runtime: str, path: str, args) -> dict:
    """Time to suggestion while typing: ``bench/typing_replay.py``'s sessions (the first ``--replay-keys``
    keystrokes of each of ``--replay-sessions``) through ``codellama-lsp serve`` with this model and runtime,
    default (optimised) settings, every request awaited. The client-side time from request to an answer
    carrying a suggestion, p50 and p95."""
    if runtime == "transformers" and path.endswith(".gguf"):
        return {"replay_note": "the server runs a GGUF on llama.cpp only"}
    import tempfile

    from typing_replay import CONFIGS, load_sessions, run_config, summarise

    config = {**CONFIGS["optimised"], "runtime": runtime, "nThreads": args.threads}
    sessions = load_sessions(args.replay_sessions)
    with tempfile.TemporaryDirectory(prefix="runtimes-replay-") as tmp:
        try:
            result = run_config(path, config, sessions, home=Path(tmp) / "home", paced=False, limit=args.replay_keys,
                                device="cpu", max_tokens=args.replay_max_tokens,
                                context_tokens=args.replay_context_tokens)
        except Exception as exc:  # reported in the table, the other rows still run
            return {"replay_note": f"replay failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    summary = summarise(result)
    return {"replay_requests": summary["requests"], "replay_suggestions": summary["answered_with_suggestion"],
            "time_to_suggestion_ms_p50": summary["time_to_suggestion_ms_p50"],
            "time_to_suggestion_ms_p95": summary["time_to_suggestion_ms_p95"],
            "replay_server_peak_rss_mib": summary["peak_rss_mib"]}


# -- the driver ----------------------------------------------------------------------------------------------------


def markdown(record: dict) -> str:
    lines = [
        "# Runtimes: transformers vs llama.cpp (our decode loop on both)", "",
        f"- command: `{record['command']}`", f"- date: {record['date']}", f"- machine: {record['machine']}",
        f"- load average at start / end: {record['load_average_start']} / {record['load_average_end']}"
        " (the 2 cores were shared with other work: absolute speeds are noisy, ratios come from one run)", "",
        "| model | runtime | file | import s | load s | prefill tok/s | decode tok/s | llama.cpp's own decode tok/s"
        " | our loop's overhead (CPU) | (wall) | same tokens | time to suggestion p50 / p95 ms | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['runtime']} | | error: {r['error']} | | | | | | | | | |")
            continue
        overhead = f"{r['loop_overhead_pct']:+.1f} %" if "loop_overhead_pct" in r else ""
        wall = f"{r['loop_overhead_wall_pct']:+.1f} %" if "loop_overhead_wall_pct" in r else ""
        replay = (f"{r['time_to_suggestion_ms_p50']} / {r['time_to_suggestion_ms_p95']}"
                  if r.get("time_to_suggestion_ms_p50") is not None else r.get("replay_note", ""))
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['file']} | {r['import_s']} | {r['load_s']} | {r['prefill_tok_s']} "
            f"| {r['decode_tok_s']} | {r.get('own_decode_tok_s', '')} | {overhead} | {wall} "
            f"| {r.get('own_tokens_equal_ours', '')} | {replay} | {r['peak_rss_mib']} |")
    if record.get("replay"):
        rp = record["replay"]
        lines += ["", f"Time to suggestion: `bench/typing_replay.py`'s sessions {', '.join(rp['sessions'])}, the first "
                  f"{rp['keystrokes_per_session']} keystrokes of each, through `codellama-lsp serve` with default "
                  f"settings (cache reuse, prompt lookup), every request awaited; {rp['max_tokens']} tokens at most, "
                  f"a {rp['context_tokens']}-token prompt budget; request sent -> answer with a suggestion received."]
    lines += ["", "Decode tok/s: the best round. Our loop's overhead: per decoded token, ours vs llama.cpp's own "
              "`Llama.generate` (greedy, same prompt, same threads, both with the prompt cached), the ratio of the "
              "medians of interleaved rounds, in CPU time of the process (what the loop adds; it barely moves when "
              "other work shares the cores) and in wall time."]
    lines += ["", "Peak RSS of a llama.cpp row includes the baseline (llama.cpp's own `Llama` object, a second copy of"
              " the model in the same process), so it overstates what our runtime alone needs.", "",
              "Speed-ups of llama.cpp over transformers (same model, same run):", ""]
    by = {(r["model"], r["runtime"]): r for r in record["runs"] if "error" not in r}
    for model in dict.fromkeys(r["model"] for r in record["runs"]):
        t, c = by.get((model, "transformers")), by.get((model, "llamacpp"))
        if t and c and t["decode_tok_s"] and c["decode_tok_s"]:
            lines.append(f"- {model}: decode {c['decode_tok_s'] / t['decode_tok_s']:.1f}x, prefill "
                         f"{c['prefill_tok_s'] / t['prefill_tok_s']:.2f}x, load {t['load_s'] / max(c['load_s'], 1e-3):.1f}x "
                         f"faster, import {t['import_s'] / max(c['import_s'], 1e-3):.1f}x faster, peak RSS "
                         f"{c['peak_rss_mib'] / t['peak_rss_mib']:.2f}x")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(FILES), choices=list(FILES))
    parser.add_argument("--prefill", type=int, default=512, help="prompt tokens")
    parser.add_argument("--decode", type=int, default=32, help="generated tokens")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes (0: their defaults)")
    parser.add_argument("--replay-sessions", nargs="*", default=["enum", "_threading_local"],
                        help="typing-replay sessions (bench/sessions/*.json stems) for the time to suggestion")
    parser.add_argument("--replay-keys", type=int, default=10, help="keystrokes replayed per session")
    parser.add_argument("--replay-max-tokens", type=int, default=16)
    parser.add_argument("--replay-context-tokens", type=int, default=512)
    parser.add_argument("--no-replay", action="store_true", help="skip the typing replay column")
    parser.add_argument("--out", default=str(RESULTS / "runtimes.json"))
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "RUNTIME", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.prefill, args.decode, args.threads)))
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    load_start = [round(x, 1) for x in os.getloadavg()]
    runs = []
    for model in args.models:
        files = FILES[model]()
        for runtime in ("transformers", "llamacpp"):
            cmd = [sys.executable, __file__, "--child", model, runtime, files[runtime], "--prefill", str(args.prefill),
                   "--decode", str(args.decode), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                                  env=dict(os.environ, PYTHONPATH=str(REPO)))
            if proc.returncode != 0:
                runs.append({"model": model, "runtime": runtime, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
            else:
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                if not args.no_replay:
                    runs[-1].update(replay(model, runtime, files[runtime], args))
            print(json.dumps(runs[-1]), flush=True)
    record = {
        "command": "python bench/runtimes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "load_average_start": load_start, "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "replay": None if args.no_replay else {
            "sessions": args.replay_sessions, "keystrokes_per_session": args.replay_keys,
            "max_tokens": args.replay_max_tokens, "context_tokens": args.replay_context_tokens},
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
