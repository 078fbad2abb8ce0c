#!/usr/bin/env python
"""Wall time of `codellama-lsp complete` with the demo model: cold, warm (resident process) and in-process.

What a user waits for at the shell, measured end to end (process start to exit) on the README's Quickstart
position. Each completion is also checked for being valid Python in place (the file with the completion
inserted must parse). The runtime directory is a fresh temporary one, so the first call really starts the
resident process; it is stopped at the end.

    python bench/cli_latency.py                    # writes bench/results/cli_latency.{json,md}
    python bench/cli_latency.py --model "$(python -m codellama_lsp.engine.gguf_convert)" --stem cli_latency_gguf
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="examples/stats.py:20:5")
    p.add_argument("--model", default="demo")
    p.add_argument("--first", type=int, default=1,
                   help="first calls, each with a fresh runtime directory (no resident process to reuse)")
    p.add_argument("--warm", type=int, default=10, help="later calls with default options (the resident process"
                   " answers them, except for a GGUF model, which always loads in the command)")
    p.add_argument("--in-process", type=int, default=3, help="calls with --no-resident")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--stem", default="cli_latency", help="result file name (e.g. cli_latency_gguf for a GGUF model)")
    return p.parse_args(argv)


def valid_in_place(path: Path, line: int, col: int, completion: str) -> bool:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + col - 1
    try:
        ast.parse(text[:offset] + completion + text[offset:])
        return True
    except SyntaxError:
        return False


def call(env: dict, target: str, model: str, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "codellama_lsp", "complete", target, "--model", model, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"complete failed ({proc.returncode}): {proc.stderr.strip()}")
    return {"wall_s": round(wall, 3), "completion": proc.stdout[:-1] if proc.stdout.endswith("\n") else proc.stdout}


def _shutdown(runtime: Path) -> None:
    """Stop the resident process listening in ``runtime``, if one was started."""
    for sock in runtime.glob("*.sock"):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(sock))
            conn.sendall(b'{"op": "shutdown"}\n')
            conn.recv(100)


def main(argv=None) -> int:
    args = parse_args(argv)
    file_part, line, col = args.target.rsplit(":", 2)
    path = (REPO / file_part).resolve()
    load_start = os.getloadavg()
    rows = {"cold": []}
    for _ in range(args.first):
        runtime = Path(tempfile.mkdtemp(prefix="cli-latency-"))
        env = dict(os.environ, HF_HUB_OFFLINE="1", CODELLAMA_LSP_RESIDENT="1", CODELLAMA_LSP_RUNTIME_DIR=str(runtime))
        rows["cold"].append(call(env, args.target, args.model))
        if len(rows["cold"]) < args.first:
            _shutdown(runtime)
    rows["warm"] = [call(env, args.target, args.model) for _ in range(args.warm)]
    resident_started = bool(list(runtime.glob("*.sock")))
    _shutdown(runtime)  # stop the resident process before timing the in-process path
    rows["in_process"] = [call(env, args.target, args.model, "--no-resident") for _ in range(args.in_process)]
    for items in rows.values():
        for r in items:
            r["valid_python"] = valid_in_place(path, int(line), int(col), r["completion"])

    def summary(items):
        walls = [r["wall_s"] for r in items]
        return {"n": len(walls), "median_s": round(statistics.median(walls), 3), "max_s": round(max(walls), 3),
                "valid_python": sum(r["valid_python"] for r in items)}

    record = {
        "command": "python bench/cli_latency.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}",
        "load_average_start": [round(x, 1) for x in load_start],
        "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "target": args.target, "model": args.model, "resident_process_started": resident_started,
        "summary": {k: summary(v) for k, v in rows.items()},
        "calls": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    (args.out / f"{args.stem}.md").write_text(markdown(record))
    print(markdown(record))
    return 0


def markdown(r: dict) -> str:
    s = r["summary"]
    out = [
        "# `codellama-lsp complete` wall time (demo model)", "",
        f"- Command: `{r['command']}`", f"- Date: {r['date']}", f"- Machine: {r['machine']}",
        f"- Load average at start/end: {r['load_average_start']} / {r['load_average_end']} (the 2 cores are shared"
        " with other work: a load above ~2 slows every call)",
        f"- Position: `{r['target']}`, model `{r['model']}`; wall time = process start to exit", "",
        "| | calls | median (s) | max (s) | valid Python in place |", "|---|---|---|---|---|",
    ]
    resident = r.get("resident_process_started", True)
    labels = {"cold": "first call, default options" + (" (starts the resident process)" if resident else
                                                         " (loads in the command: no resident process)"),
              "warm": "later calls, default options" + (" (resident process)" if resident else ""),
              "in_process": "`--no-resident` (loads in the command)"}
    for key, label in labels.items():
        v = s[key]
        out.append(f"| {label} | {v['n']} | {v['median_s']} | {v['max_s']} | {v['valid_python']}/{v['n']} |")
    out += ["", "Completions (first of each kind):", ""]
    for key in labels:
        out.append(f"- {key}: `{r['calls'][key][0]['completion']!r}`")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
