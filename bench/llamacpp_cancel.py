"""How fast a cancel stops a long prefill on the llama.cpp runtime, and what the next request keeps.

Why: a superseded keystroke must not hold the model while its multi-second prompt is prefilled. On llama.cpp
the prefill runs with an abort callback installed (only then: it costs decode speed), so a cancel stops
``llama_decode`` between graph nodes; the batches already finished stay cached and the next request reuses them.

Each round: a fresh cache, a ``--tokens``-token prompt of real code, the generation started on a worker thread,
the cancel set ``--after`` seconds into the prefill from another thread; measured: cancel -> ``generate``
returned. Then the same prompt again: reused tokens, and whether its answer equals an uncancelled run's.

    python bench/llamacpp_cancel.py        # SmolLM2-135M-Instruct Q4_1; writes bench/results/llamacpp_cancel.{json,md}
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from codellama_lsp.config import Settings  # noqa: E402
from codellama_lsp.engine.backend import CancelToken, GenerationParams  # noqa: E402
from codellama_lsp.engine.loading import load_backend  # noqa: E402

SMOLLM2 = REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SMOLLM2))
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--after", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "llamacpp_cancel.json"))
    args = parser.parse_args(argv)

    import textwrap

    backend = load_backend(Settings(model=args.model, model_explicit=True, n_threads=args.threads,
                                    context_tokens=args.tokens + 64))
    ids = backend.template.prefix_ids((inspect.getsource(textwrap) * 6))[: args.tokens]
    params = GenerationParams(max_new_tokens=8, speculation="none")
    backend.reset_cache()
    started = time.perf_counter()
    reference = backend.generate(ids, params)
    full_prefill_s = time.perf_counter() - started
    load_start = [round(x, 1) for x in os.getloadavg()]
    rounds = []
    for _ in range(args.rounds):
        backend.reset_cache()
        cancel = CancelToken()
        done: dict = {}

        def work() -> None:
            done["result"] = backend.generate(ids, params, cancel=cancel)
            done["t"] = time.perf_counter()

        thread = threading.Thread(target=work)
        thread.start()
        time.sleep(args.after)
        t0 = time.perf_counter()
        cancel.cancel()
        thread.join()
        kept = len(backend.kv.ids)
        again = backend.generate(ids, params)
        rounds.append({"stop_ms": round((done["t"] - t0) * 1000, 1), "reason": done["result"].stats.stop_reason,
                       "kept_tokens": kept, "next_reused_tokens": again.stats.reused_tokens,
                       "next_equal_to_uncancelled": again.token_ids == reference.token_ids})
        print(json.dumps(rounds[-1]), flush=True)
    stops = [r["stop_ms"] for r in rounds]
    record = {
        "command": "python bench/llamacpp_cancel.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other work: see the load average)",
        "load_average_start": load_start, "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "model": Path(args.model).name, "prompt_tokens": len(ids), "threads": backend.kv.n_threads,
        "uncancelled_prefill_s": round(full_prefill_s, 2), "rounds": rounds,
        "stop_ms_median": round(statistics.median(stops), 2), "stop_ms_max": max(stops),
    }
    backend.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    md = [f"# Cancel during a long prefill (llama.cpp runtime)", "", f"- command: `{record['command']}`",
          f"- date: {record['date']}; machine: {record['machine']}",
          f"- load average start / end: {record['load_average_start']} / {record['load_average_end']}",
          f"- model {record['model']}, prompt {record['prompt_tokens']} tokens, {record['threads']} thread(s); "
          f"an uncancelled prefill + 8 tokens took {record['uncancelled_prefill_s']} s", "",
          "| round | cancel -> generate returned (ms) | stop reason | tokens kept in the cache | next request reused "
          "| next answer = uncancelled |", "|---|---|---|---|---|---|"]
    md += [f"| {i + 1} | {r['stop_ms']} | {r['reason']} | {r['kept_tokens']} | {r['next_reused_tokens']} "
           f"| {r['next_equal_to_uncancelled']} |" for i, r in enumerate(rounds)]
    md += ["", f"Median {record['stop_ms_median']} ms, max {record['stop_ms_max']} ms (target: within 50 ms)."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
