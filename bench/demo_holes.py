#!/usr/bin/env python
"""The bundled demo model answering ``if |``, ``for |`` and ``return |`` holes in files it never saw.

A newcomer's first minutes: they type a keyword and a space in real code and ask for a completion. Measured
through the product's own path (``CompletionService``: cursor decision, prompt builder with token healing,
the decode loop, clean-up), exactly as ``codellama-lsp complete`` answers, on the held-out standard-library
files of ``codellama_lsp/models/demo/training_record.json`` (never seen by the tokenizer or the model):

* the hole: a statement line starting with ``if ``/``for ``/``return `` is cut right after the keyword and its
  space; the rest of the file stays (the suffix);
* non-empty: the suggestion is not empty;
* parses: the file with the suggestion accepted parses (``ast.parse``), as the file did before it was cut;
* repeats the line start: the suggestion starts by writing the keyword again (``if `` + ``if not x:``);
* exact: the suggestion is the line's original rest.

    python bench/demo_holes.py                       # writes bench/results/demo_holes.{json,md}
    python bench/demo_holes.py --fim-mode psm --per-keyword 10 --out /tmp/x
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import platform
import random
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from common import parses  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")

KEYWORDS = ("if", "for", "return")
DEMO = REPO / "codellama_lsp" / "models" / "demo"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-keyword", type=int, default=30, help="holes per keyword (seeded sample)")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--fim-mode", default="auto", help="auto (the checkpoint's preferred layout), spm or psm")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo_holes")
    return p.parse_args(argv)


def heldout_files() -> list[tuple[str, str]]:
    record = json.loads((DEMO / "training_record.json").read_text())
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for rel in record["heldout_files"]:
        try:
            text = (root / rel).read_text(encoding="utf-8")
            ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        out.append((rel, text))
    return out


def holes(files, per_keyword: int, seed: int) -> list[dict]:
    """Seeded sample of statement lines starting with each keyword: (file, text, offset, line start, rest)."""
    rng = random.Random(seed)
    found = {k: [] for k in KEYWORDS}
    for rel, text in files:
        start = 0
        for line in text.split("\n"):
            m = re.match(r"([ \t]*)(if|for|return) (\S.*)$", line)
            if m and not line.rstrip().endswith("\\"):
                head = m.group(1) + m.group(2) + " "
                found[m.group(2)].append({"file": rel, "offset": start + len(head), "line_start": head,
                                          "rest": m.group(3), "text": text})
            start += len(line) + 1
    chosen = []
    for k in KEYWORDS:
        chosen += rng.sample(found[k], min(per_keyword, len(found[k])))
    return chosen


def document(hole: dict) -> str:
    """The file with the hole's line cut after the keyword and its space."""
    text, offset = hole["text"], hole["offset"]
    end = text.find("\n", offset)
    return text[:offset] + (text[end:] if end >= 0 else "")


async def run(args) -> dict:
    from codellama_lsp.features.completion import INVOKED, CompletionService
    from codellama_lsp.config import Settings
    from codellama_lsp.engine.worker import Engine

    settings, errors = Settings().updated({"model": "demo", "max_tokens": args.max_tokens, "repo_context": False,
                                           "fim_mode": args.fim_mode, "alternatives": 1,
                                           "completion_timeout_s": 60.0})
    assert not errors, errors
    engine = Engine(settings)
    await engine.load()
    service = CompletionService(engine, settings)
    chosen = holes(heldout_files(), args.per_keyword, args.seed)
    rows = []
    began = time.perf_counter()
    for hole in chosen:
        doc = document(hole)
        offset = hole["offset"]
        outcome = await service.complete(doc, offset, uri="", path=None, language_id="python", trigger=INVOKED,
                                         use_cache=False)
        accepted = doc[: outcome.replace_start] + outcome.text + doc[outcome.replace_end :]
        keyword = hole["line_start"].strip()
        rows.append({
            "file": hole["file"], "line": doc.count("\n", 0, offset) + 1, "keyword": keyword,
            "line_start": hole["line_start"], "expected": hole["rest"], "completion": outcome.text,
            "reason": outcome.reason, "stop_reason": outcome.stop_reason,
            "non_empty": bool(outcome.text.strip()),
            "parses": bool(outcome.text.strip()) and parses(accepted),
            "repeats_line_start": bool(outcome.text.strip()) and re.match(
                rf"\s*{re.escape(keyword)}\b", outcome.text) is not None,
            "exact": outcome.text.strip() == hole["rest"].strip(),
            "fim_mode": getattr(outcome.plan, "fim_mode", None), "heal": getattr(outcome.plan, "heal_prefix", None),
        })
    service.close()
    seconds = time.perf_counter() - began

    def share(key, subset=None):
        subset = rows if subset is None else subset
        return round(100.0 * sum(r[key] for r in subset) / max(1, len(subset)), 1)

    summary = {"holes": len(rows), "non_empty": share("non_empty"), "parses": share("parses"),
               "repeats_line_start": sum(r["repeats_line_start"] for r in rows), "exact": share("exact"),
               "by_keyword": {k: {"holes": len([r for r in rows if r["keyword"] == k]),
                                  "non_empty": share("non_empty", [r for r in rows if r["keyword"] == k]),
                                  "parses": share("parses", [r for r in rows if r["keyword"] == k])}
                              for k in KEYWORDS},
               "fim_mode": rows[0]["fim_mode"] if rows else None, "seconds": round(seconds, 1)}
    return {"summary": summary, "rows": rows}


def main(argv=None) -> int:
    args = parse_args(argv)
    data = asyncio.run(run(args))
    s = data["summary"]
    command = "python bench/demo_holes.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    meta = {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared with other work)"}
    data["meta"] = meta
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [
        "# Demo model at `if |`, `for |`, `return |` holes in held-out files", "",
        f"- command: `{meta['command']}`", f"- date: {meta['date']}; machine: {meta['machine']}",
        f"- {s['holes']} holes in the demo model's held-out standard-library files (never trained on), "
        f"through `CompletionService` (what `codellama-lsp complete` runs), layout {s['fim_mode']}, invoked", "",
        "| keyword | holes | non-empty % | parses after accepting % |", "|---|---:|---:|---:|",
    ]
    for k, v in s["by_keyword"].items():
        lines.append(f"| `{k} ` | {v['holes']} | {v['non_empty']} | {v['parses']} |")
    lines += [f"| all | {s['holes']} | {s['non_empty']} | {s['parses']} |", "",
              f"Suggestions that repeat the line start (`if ` + `if ...`): {s['repeats_line_start']}. "
              f"Exact (the line's original rest): {s['exact']} %. Wall time {s['seconds']} s.", "",
              "Samples (first 12):", "", "| hole | expected | suggestion | parses |", "|---|---|---|---|"]
    for r in data["rows"][:12]:
        cell = lambda t: "`" + t.replace("\n", "⏎").replace("|", "\\|")[:60] + "`" if t else "(empty)"  # noqa: E731
        lines.append(f"| `{r['line_start'].strip()} ` {r['file']}:{r['line']} | {cell(r['expected'])} | "
                     f"{cell(r['completion'])} | {'✓' if r['parses'] else '✗'} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
