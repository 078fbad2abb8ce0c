"""Time to suggestion and server memory against the size of the file being edited (1 KB ... 20 MB).

Per size: a fresh workspace holding ``big.py`` (generated, realistic Python) and one small file; the real
server (``codellama-lsp serve``, demo model unless ``--model``) is started over stdio, the file is opened,
and the user types a few characters in the middle of it, each keystroke a ``didChange`` followed by an
invoked ``textDocument/inlineCompletion``, as an editor sends them. Reported: the time from starting the
server to the model being ready, the median and worst time from the keystroke's didChange to the
suggestion, the part of it spent outside the model (that minus the server's ``generation_ms``: document sync,
prompt building, clean-up, transport; what file size could make grow), the prompt size the server reports, and
the server's peak RSS (VmHWM) and RSS at the end.

The prompt is bounded by the token budget, so nothing per keystroke should grow with the file.

    python bench/big_file.py                     # 1k 100k 1m 5m 20m, writes bench/results/big_file.{json,md}
    python bench/big_file.py --sizes 1k 20m --keystrokes 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codellama_lsp.evaluation.lsp_driver import ServerSession, server_env  # noqa: E402
from codellama_lsp.positions import LineIndex  # noqa: E402

BLOCK = '''

class Record{n}:
    """A record read from the inventory file, line {n}."""

    def __init__(self, name, count, price):
        self.name = name
        self.count = int(count)
        self.price = float(price)

    def total(self):
        return self.count * self.price


def parse_{n}(line):
    name, count, price = line.strip().split(",")
    return Record{n}(name, count, price)
'''

SIZES = {"1k": 1_000, "100k": 100_000, "1m": 1_000_000, "5m": 5_000_000, "20m": 20_000_000}


def make_source(size: int) -> str:
    parts, n, total = ["import os\n"], 0, 10
    while total < size:
        block = BLOCK.format(n=n)
        parts.append(block)
        total += len(block)
        n += 1
    return "".join(parts)[: max(size, 200)]


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


async def run_size(label: str, size: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"big-{label}-") as tmp:
        work = Path(tmp) / "ws"
        work.mkdir()
        text = make_source(size)
        path = work / "big.py"
        path.write_text(text)
        (work / "util.py").write_text("def helper(x):\n    return x * 2\n")
        env = server_env(Path(tmp))
        env["HOME"] = tmp
        started = time.perf_counter()
        session = ServerSession(Path(tmp), model=args.model or None, env=env, root=work, cwd=work,
                                init_options={"maxTokens": args.max_tokens}, request_timeout_s=600)
        async with session:
            ready_s = time.perf_counter() - started
            uri = path.as_uri()
            session.open(uri, text)
            # The cursor: the end of a "return" line in the middle of the file.
            lines = LineIndex.of(text)
            middle = len(lines.starts) // 2
            row = next(r for r in range(middle, len(lines.starts)) if lines.line_text(r).strip().startswith("return "))
            col = len(lines.line_text(row))
            times, stats = [], []
            version = 1
            for i, ch in enumerate(" +1"[: args.keystrokes] + "+" * max(0, args.keystrokes - 3)):
                version += 1
                before = len(session.notes.statuses)
                t0 = time.perf_counter()
                session.edit(uri, version, row, col, col, ch)
                col += 1
                result = await session.inline(uri, row, col)
                times.append((time.perf_counter() - t0) * 1000)
                new = [s for s in session.notes.statuses[before:] if "prompt_tokens" in s]
                if new:
                    stats.append({k: new[-1].get(k) for k in ("prompt_tokens", "prefill_tokens", "generated_tokens",
                                                              "generation_ms", "total_ms", "source")})
                    # the time outside the model: document sync, prompt building, clean-up, transport
                    stats[-1]["outside_model_ms"] = round(times[-1] - (new[-1].get("generation_ms") or 0), 1)
                _ = result
            mem = rss_kb(session.pid)
        return {
            "size": label, "bytes": len(text), "lines": len(lines.starts), "ready_s": round(ready_s, 2),
            "suggestion_ms_median": round(statistics.median(times), 1), "suggestion_ms_max": round(max(times), 1),
            "suggestion_ms": [round(t, 1) for t in times], "server_stats": stats,
            "outside_model_ms_median": round(statistics.median(s["outside_model_ms"] for s in stats), 1) if stats else None,
            "outside_model_ms_max": round(max(s["outside_model_ms"] for s in stats), 1) if stats else None,
            "rss_mb": round(mem.get("VmRSS", 0) / 1024, 1), "peak_rss_mb": round(mem.get("VmHWM", 0) / 1024, 1),
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--keystrokes", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--model", default=str(ROOT / "codellama_lsp" / "models" / "demo"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "big_file"))
    parser.add_argument("--note", default="", help="e.g. 'machine shared with other jobs'")
    args = parser.parse_args()
    rows = []
    for label in args.sizes:
        row = await run_size(label, SIZES[label], args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}", "command": " ".join(["python"] + sys.argv),
            "model": args.model, "note": args.note}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = [f"# Time to suggestion and server memory vs file size\n",
          f"{meta['date']}; {meta['machine']}; `{meta['command']}`; model {Path(args.model).name}.",
          f"{args.note}\n" if args.note else "",
          "| file | lines | model ready (s) | keystroke → suggestion median (ms) | max (ms) | outside the model median / max (ms) | prompt tokens | RSS end / peak (MB) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        tokens = sorted({s["prompt_tokens"] for s in r["server_stats"] if s.get("prompt_tokens")})
        md.append(f"| {r['size']} | {r['lines']} | {r['ready_s']} | {r['suggestion_ms_median']} | {r['suggestion_ms_max']} | "
                  f"{r['outside_model_ms_median']} / {r['outside_model_ms_max']} | "
                  f"{'/'.join(map(str, tokens)) or '-'} | {r['rss_mb']} / {r['peak_rss_mb']} |")
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    asyncio.run(main())
