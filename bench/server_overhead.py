#!/usr/bin/env python3
"""What the language server itself costs, apart from the model.

    python bench/server_overhead.py --model DIR [--requests 60] [--pings 100] [--write bench/results/server_overhead.md]

Runs the real server (``python -m codellama_lsp serve``) over stdio, like an editor does, and measures:

1. **Event-loop responsiveness while a long generation runs.** An inline request decodes for a long
   time (``maxTokens`` very high); meanwhile ``codellama/ping`` requests (answered straight from the
   event loop) are sent one after another. Their round-trip times show whether the model work really
   stays off the loop. Target: every ping under 50 ms.
2. **Server overhead per inline request, excluding model time.** Inline requests at many positions of
   a real source file (this repository's ``codellama_lsp/lsp/server.py``), one generated token each. For
   each request: the client's round-trip time minus the model's own time on the worker
   (``generation_ms`` from ``codellama/status``, plus the alternatives' ``generation_ms``: an invoked request
   also samples the other suggestions). What remains is JSON-RPC, position conversion, prompt
   building (tree-sitter, retrieval, tokenizing), post-processing and the answer.
3. **Typing-along cache hits**: the round trip when the user types the first character of the
   suggestion just shown (answered without the model).

Any model directory works (the numbers of 2 and 3 exclude the model); a tiny one keeps 1 quick.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lsprotocol import types as lsp  # noqa: E402

from codellama_lsp.evaluation.lsp_driver import (  # noqa: E402
    ServerSession, edit_line, inline, inline_params, open_document, plain_capabilities)

DOCUMENT = ROOT / "codellama_lsp" / "lsp" / "server.py"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def status_for(session: ServerSession, uri: str, after: int) -> dict:
    return await session.notes.wait_status(lambda s: s.get("uri") == uri, after=after, timeout=600.0)


def line_end_positions(text: str, count: int) -> list[tuple[int, int]]:
    """Ends of non-blank lines spread over the file (where a user would ask for a completion)."""
    lines = text.split("\n")
    candidates = [(i, len(line)) for i, line in enumerate(lines) if line.strip()]
    step = max(1, len(candidates) // count)
    return candidates[::step][:count]


async def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="codellama-bench-"))
    session = ServerSession(workdir, model=args.model, root=ROOT, caps=plain_capabilities(configuration=True, progress=True),
                            settings={"logLevel": "debug", "maxTokens": 1, "contextTokens": args.context_tokens,
                                      "completionTimeoutS": 300.0},
                            ready_timeout_s=None, request_timeout_s=600.0)
    async with session:
        return await measure(session, args)


async def measure(session: ServerSession, args) -> dict:
    client, notes = session.client, session.notes
    started = time.perf_counter()
    await session.wait_loaded(600.0)
    load_s = time.perf_counter() - started

    document = Path(args.document).resolve() if args.document else DOCUMENT
    text = document.read_text(encoding="utf-8")
    uri = document.as_uri()
    open_document(client, uri, text)
    shown = document.relative_to(ROOT) if document.is_relative_to(ROOT) else document
    results: dict = {"load_s": load_s, "document": str(shown),
                     "document_lines": text.count("\n") + 1}

    # 2. overhead per inline request (1 token each) -------------------------------------------------
    overhead, server_side, rtts, empty = [], [], [], 0
    positions = line_end_positions(text, args.requests + 5)
    for i, (line, col) in enumerate(positions):
        mark = len(notes.statuses)
        t0 = time.perf_counter()
        result = await inline(client, uri, line, col)
        rtt = (time.perf_counter() - t0) * 1000
        status = await status_for(session, uri, mark)
        if i < 5:
            continue  # warm-up: first parse, first retrieval build, first tokenizer calls
        items = result.items if result else []
        empty += not items
        rtts.append(rtt)
        model_ms = status.get("generation_ms", 0.0) + (status.get("alternatives") or {}).get("generation_ms", 0.0)
        overhead.append(rtt - model_ms)
        server_side.append(status["total_ms"] - model_ms)
    results["inline"] = {
        "requests": len(rtts), "empty_answers": empty,
        "round_trip_ms": {"p50": percentile(rtts, 50), "p99": percentile(rtts, 99)},
        "overhead_ms": {"p50": percentile(overhead, 50), "p99": percentile(overhead, 99), "max": max(overhead)},
        "in_server_overhead_ms": {"p50": percentile(server_side, 50), "p99": percentile(server_side, 99)},
    }

    # 3. typing-along cache hit (a plain-text copy: garbage from a tiny model survives no syntax check) --
    hits = []
    version = 1
    uri = (ROOT / "codellama_lsp" / "server-copy.txt").as_uri()
    open_document(client, uri, text, "plaintext")
    await session.configure(maxTokens=4)  # a few tokens, so there is a suggestion to type along
    for line, col in positions[: args.cache_trials]:
        result = await inline(client, uri, line, col)
        items = result.items if result else []
        if not items or len(items[0].insert_text) < 2:
            continue
        first = items[0].insert_text[0]
        typed = len(first.encode("utf-16-le")) // 2
        version += 1
        edit_line(client, uri, version, line, col, col, first)
        mark = len(notes.statuses)
        t0 = time.perf_counter()
        await inline(client, uri, line, col + typed)
        elapsed = (time.perf_counter() - t0) * 1000
        status = await status_for(session, uri, mark)
        if status.get("source") == "cache":
            hits.append(elapsed)
        version += 1
        edit_line(client, uri, version, line, col, col + typed, "")  # undo the typed character
    results["cache_hit_round_trip_ms"] = {"hits": len(hits), "p50": percentile(hits, 50), "p99": percentile(hits, 99)}

    # 1. responsiveness while a long generation runs -------------------------------------------------
    await session.configure(maxTokens=100000, completionTimeoutS=600.0)
    line, col = positions[len(positions) // 2]
    mark = len(notes.logs)
    pending = asyncio.ensure_future(client.protocol.send_request_async(
        lsp.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, line, col), msg_id="long-generation"))
    await notes.wait_log("decoding started", after=mark, timeout=600.0)
    pings = []
    for _ in range(args.pings):
        t0 = time.perf_counter()
        await client.protocol.send_request_async("codellama/ping", None)
        pings.append((time.perf_counter() - t0) * 1000)
    status_mark = len(notes.statuses)
    client.cancel_request(lsp.CancelParams(id="long-generation"))
    try:
        await pending
    except Exception:
        pass
    cancelled = await status_for(session, uri, status_mark)
    results["ping_during_generation_ms"] = {
        "pings": len(pings), "p50": percentile(pings, 50), "p99": percentile(pings, 99), "max": max(pings),
        "under_50ms": sum(p < 50 for p in pings), "tokens_generated_meanwhile": cancelled.get("generated_tokens"),
        "stop_reason": cancelled.get("stop_reason"),
    }
    return results


def environment(args) -> str:
    import torch

    try:
        load = "load average %.1f / %.1f / %.1f" % os.getloadavg()
    except OSError:
        load = "load average n/a"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({load} at start), Python {platform.python_version()}, "
            f"torch {torch.__version__} (CPU threads {torch.get_num_threads()}); model `{args.model}`; "
            f"contextTokens {args.context_tokens}, maxTokens 1")


def markdown(results: dict, env: str, command: str) -> str:
    inline = results["inline"]
    ping = results["ping_during_generation_ms"]
    cache = results["cache_hit_round_trip_ms"]
    rows = [
        ("ping while a long generation runs (p50 / p99 / max)",
         f"{ping['p50']:.1f} / {ping['p99']:.1f} / {ping['max']:.1f} ms — {ping['under_50ms']}/{ping['pings']} under 50 ms "
         f"({ping['tokens_generated_meanwhile']} tokens generated meanwhile, then {ping['stop_reason']})"),
        ("inline request overhead excl. model time, client-measured (p50 / p99 / max)",
         f"{inline['overhead_ms']['p50']:.1f} / {inline['overhead_ms']['p99']:.1f} / {inline['overhead_ms']['max']:.1f} ms "
         f"over {inline['requests']} requests"),
        ("same, measured inside the server (p50 / p99)",
         f"{inline['in_server_overhead_ms']['p50']:.1f} / {inline['in_server_overhead_ms']['p99']:.1f} ms"),
        ("inline round trip incl. 1 generated token (p50 / p99)",
         f"{inline['round_trip_ms']['p50']:.1f} / {inline['round_trip_ms']['p99']:.1f} ms"),
        ("typing-along cache hit round trip (p50 / p99)",
         f"{cache['p50']:.1f} / {cache['p99']:.1f} ms ({cache['hits']} hits)"),
        ("model load (tiny model, incl. imports)", f"{results['load_s']:.1f} s"),
    ]
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    return (f"# Server overhead\n\nCommand: `{command}`\n\nDate: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            f"Environment: {env}. Document: `{results['document']}` ({results['document_lines']} lines), "
            f"repository context from this checkout.\n\n| measurement | result |\n|---|---|\n{table}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory (any size: model time is excluded)")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--pings", type=int, default=100)
    parser.add_argument("--cache-trials", type=int, default=10, help="positions tried for typing-along hits")
    parser.add_argument("--context-tokens", type=int, default=1024,
                        help="prompt budget (smaller keeps the excluded model time short on a slow machine)")
    parser.add_argument("--document", help="the source file to complete in (default: the server module); the same "
                        "file keeps runs of different commits comparable")
    parser.add_argument("--write", help="write the markdown result here")
    args = parser.parse_args()
    env = environment(args)
    results = asyncio.run(run(args))
    command = "python bench/server_overhead.py " + " ".join(sys.argv[1:])
    text = markdown(results, env, command)
    print(text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
