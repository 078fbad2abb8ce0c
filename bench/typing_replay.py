"""Typing replay: editing sessions replayed keystroke by keystroke through the real server, naive vs optimised.

Why: inline completion is judged by latency while the user types. The server keeps the model in-process, so
the KV cache survives between keystrokes (only the changed tail is prefilled), the SPM layout makes a
keystroke cost ~1 prompt token, and prompt-lookup speculation emits several tokens per forward pass when
the answer copies nearby text. This benchmark measures those claims end to end, through
``codellama-lsp serve`` over stdio, as an editor drives it: one ``didChange`` plus one
``textDocument/inlineCompletion`` per keystroke at human pace (100-300 ms), an unanswered request cancelled
by the next keystroke (``$/cancelRequest``; the server also drops work for superseded versions itself).

All configurations run in the same invocation, on the same sessions, one server process each:
- naive: ``reuseCache: false``, ``speculation: none``, ``fimMode: psm`` (every request prefills the whole prompt);
- optimised: ``reuseCache: true``, ``speculation: prompt_lookup``, ``fimMode: spm`` (the defaults);
- naive SPM: the optimised prompts without reuse or speculation (greedy suggestions must be identical);
- reuse only: the optimised path without speculation, for the decode time per token speculation saves.

Sessions (``bench/sessions/*.json``, synthesised and committed; ``--synthesise`` rebuilds them, seeded) are
edits of real files: a span of a real line is deleted and re-typed character by character with typos that
are deleted again (backspace), then the cursor jumps to another function and the same happens there.
"Edit-style" sessions re-type lines that have a near-duplicate close by (a second similar dict entry, a
repeated call with a changed argument): there the answer copies nearby text and prompt lookup must pay off.

Prefill is reported two ways. Per LSP request (the prefill tokens of the whole replay / the requests the
editor sent, the same 180 in every configuration; a typing-along cache hit prefills nothing): the prefill
work each configuration spends on the same editing session, which is what the issue's target compares. Per
model request (/ the requests that reached the model): the stricter-looking figure, but its denominator
differs between configurations, and the better the suggestions the fewer cheap typing requests reach the
model, so it rises as completions improve; a cursor jump costs a full prefill in any layout.

Reported per configuration: prefill tokens per request, reused tokens per request, tokens per forward pass
(all; edit-style sessions, where re-typed lines have a near-duplicate close by; and model answers that copy
nearby text, i.e. a run of >= 8 characters covering half the answer occurs within 12 lines of the cursor),
time to first suggestion p50/p95 (client-side: request sent -> answer with a
suggestion received; and the server's own time to first token), peak RSS of the server (VmHWM), and, per
request answered by the model in both runs, whether the suggestions are identical.

    python bench/typing_replay.py --model demo            # writes bench/results/typing_replay.{json,md}
    python bench/typing_replay.py --model demo --device cuda --out bench/results/typing_replay_gpu.json
    python bench/typing_replay.py --synthesise            # rebuilds bench/sessions/ from the stdlib
    python bench/typing_replay.py --model demo --runtime llamacpp --threads 1 --unpaced \
        --out bench/results/typing_replay_llamacpp.json   # the demo converted to GGUF, on llama.cpp
    python bench/typing_replay.py --model demo --remote --unpaced --out bench/results/typing_replay_remote.json
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save_record, tiny_model  # noqa: E402
from raw_lsp import RawServer  # noqa: E402

SESSIONS = Path(__file__).resolve().parent / "sessions"
CONFIGS = {
    "naive": {"reuseCache": False, "speculation": "none", "fimMode": "psm"},
    # the same prompts as "optimised" without reuse or speculation: greedy suggestions must be identical
    "naive_spm": {"reuseCache": False, "speculation": "none", "fimMode": "spm"},
    "optimised": {"reuseCache": True, "speculation": "prompt_lookup", "fimMode": "spm"},
    # the optimised path without speculation: what speculation itself does to decode time
    "reuse_only": {"reuseCache": True, "speculation": "none", "fimMode": "spm"},
}
# --remote: the same sessions against a real llama.cpp server (xllamacpp, one per configuration, on 127.0.0.1);
# reuse is the server's own prefix cache (``cache_prompt``), counted by its own ``timings.cache_n``/``prompt_n``
REMOTE_CONFIGS = {
    "naive": {"reuseCache": False, "fimMode": "psm"},
    "naive_spm": {"reuseCache": False, "fimMode": "spm"},  # cache_prompt off: the suggestions to compare against
    "optimised": {"reuseCache": True, "fimMode": "spm"},
}
COLUMNS = {"naive": "naive (no reuse, no speculation, PSM)", "optimised": "optimised (reuse, prompt lookup, SPM)",
           "naive_spm": "naive, SPM (no reuse, no speculation)", "reuse_only": "reuse, no speculation, SPM"}
REMOTE_COLUMNS = {"naive": "naive (cache_prompt off, PSM)", "naive_spm": "naive, SPM (cache_prompt off)",
                  "optimised": "server prefix cache (cache_prompt on, SPM)"}
# Real files (held out from the demo model's training: see codellama_lsp/models/demo/TRAINING.md), with
# whether the session is edit-style (re-typed lines have a near-duplicate close by).
SOURCES = [("encodings/cp850.py", True), ("_collections_abc.py", True), ("enum.py", False),
           ("_threading_local.py", False)]


# --- sessions --------------------------------------------------------------------------------------------


def _offset(lines: list[str], line: int, col: int = 0) -> int:
    return sum(len(x) + 1 for x in lines[:line]) + col


def _has_twin(lines: list[str], i: int) -> bool:
    """True when a line within 6 above line ``i`` is a near-duplicate of it (what prompt lookup can copy)."""
    here = lines[i].strip()
    return any(difflib.SequenceMatcher(None, here, lines[j].strip()).ratio() > 0.6
               for j in range(max(0, i - 6), i) if lines[j].strip())


def synthesise(source: Path, *, seed: int, edit_style: bool, window: int = 160, targets: int = 3,
               max_chars: int = 36) -> dict:
    """A seeded session on a real file: ``targets`` cursor positions in different parts of a ``window``-line
    excerpt; at each, the rest of a line is deleted and re-typed (with typos fixed by backspace)."""
    rng = random.Random(seed)
    all_lines = source.read_text(encoding="utf-8").split("\n")
    start = rng.randrange(0, max(1, len(all_lines) - window))
    lines = all_lines[start:start + window]
    candidates = [i for i in range(8, len(lines) - 2)
                  if 12 <= len(lines[i].strip()) <= 90 and not lines[i].strip().startswith("#")
                  and _has_twin(lines, i) == edit_style]
    if len(candidates) < targets:
        raise ValueError(f"{source}: too few target lines")
    # spread the targets over the excerpt (cursor jumps to other functions), visited in a random order
    picks = [candidates[k * len(candidates) // targets + rng.randrange(len(candidates) // targets)]
             for k in range(targets)]
    rng.shuffle(picks)
    text = "\n".join(lines)
    events: list[dict] = []
    for line in picks:
        cur = text.split("\n")
        body = cur[line]
        indent = len(body) - len(body.lstrip())
        cut = indent + rng.randrange(0, max(1, min(8, len(body) - indent - 8)))  # sometimes mid-line
        span = body[cut:]
        retype = span[:max_chars]
        at = _offset(cur, line, cut)
        # the jump: the cursor lands there and the span is deleted (one edit), then a pause to think
        events.append({"offset": at, "delete": len(span), "insert": "", "delay_ms": 900, "kind": "jump"})
        text = text[:at] + text[at + len(span):]
        pos = at
        for ch in retype:
            if ch.isalpha() and rng.random() < 0.06:  # a typo, deleted again
                typo = rng.choice("qxzjv")
                events.append({"offset": pos, "delete": 0, "insert": typo, "delay_ms": rng.randint(100, 300),
                               "kind": "type"})
                events.append({"offset": pos, "delete": 1, "insert": "", "delay_ms": rng.randint(150, 300),
                               "kind": "delete"})
            events.append({"offset": pos, "delete": 0, "insert": ch, "delay_ms": rng.randint(100, 300),
                           "kind": "type"})
            text = text[:pos] + ch + text[pos:]
            pos += 1
    return {"source": f"stdlib:{source.as_posix().split('python3.11/')[-1]}", "first_line": start + 1,
            "seed": seed, "edit_style": edit_style, "text": "\n".join(lines), "events": events}


def synthesise_all(out: Path, seed: int) -> list[Path]:
    stdlib = Path(os.__file__).parent
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (rel, edit_style) in enumerate(SOURCES):
        session = synthesise(stdlib / rel, seed=seed + k, edit_style=edit_style)
        path = out / (rel.replace("/", "_").removesuffix(".py") + ".json")
        path.write_text(json.dumps(session, indent=1) + "\n")
        written.append(path)
    return written


def load_sessions(names: list[str] | None = None) -> list[tuple[str, dict]]:
    paths = sorted(SESSIONS.glob("*.json"))
    if names:
        paths = [p for p in paths if p.stem in names]
    return [(p.stem, json.loads(p.read_text())) for p in paths]


# --- the replay --------------------------------------------------------------------------------------------


def _position(text: str, offset: int) -> dict:
    before = text[:offset]
    line = before.count("\n")
    return {"line": line, "character": len(before) - (before.rfind("\n") + 1)}  # ASCII sessions: utf-16 = chars


def replay(server: RawServer, name: str, session: dict, *, paced: bool, limit: int | None = None,
           answer_timeout: float = 120.0) -> list[dict]:
    """Replay one session on an initialised server. ``paced``: keystrokes at the recorded delays, an
    unanswered request cancelled by the next keystroke (as an editor); otherwise every request is awaited
    before the next keystroke (deterministic: the run used to compare outputs). Returns one record per request."""
    uri = (server.root / f"{name}.py").as_uri()
    text, version = session["text"], 1
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                            "text": text}})
    events = session["events"][:limit] if limit else session["events"]
    records: list[dict] = []
    previous = None
    for event in events:
        if paced:
            time.sleep(event["delay_ms"] / 1000.0)  # human pace, not synchronisation
        if previous is not None and not server.responses.get(previous["id"]):
            server.notify("$/cancelRequest", {"id": previous["id"]})
        start, end = event["offset"], event["offset"] + event["delete"]
        rng = {"start": _position(text, start), "end": _position(text, end)}
        text = text[:start] + event["insert"] + text[end:]
        version += 1
        server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                 "contentChanges": [{"range": rng, "text": event["insert"]}]})
        cursor = start + len(event["insert"])
        msg_id = server.new_id()
        record = {"id": msg_id, "version": version, "kind": event["kind"], "sent": time.monotonic(),
                  "_nearby": _nearby_text(text, cursor)}
        server.send({"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/inlineCompletion", "params": {
            "textDocument": {"uri": uri}, "position": _position(text, cursor), "context": {"triggerKind": 2}}})
        records.append(record)
        previous = record
        if not paced:
            server.wait_response(msg_id, answer_timeout)
    server.wait_all([r["id"] for r in records], answer_timeout)
    for r in records:
        answer = (server.responses.get(r["id"]) or [{}])[0]
        r["cancelled"] = "error" in answer
        result = answer.get("result") or []
        items = result.get("items") or [] if isinstance(result, dict) else result
        r["suggestion"] = items[0].get("insertText") if items else None
        if isinstance(r["suggestion"], dict):
            r["suggestion"] = r["suggestion"].get("value")
        r["latency_ms"] = round((answer["_arrived"] - r["sent"]) * 1000, 1) if answer else None
        r["sent_at"], r["arrived_at"] = r["sent"], answer.get("_arrived")  # monotonic seconds (bench/team_server.py)
        r["copies_nearby"] = copies_nearby(r["suggestion"], r.pop("_nearby"))
        del r["sent"]
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    return records


NEARBY_LINES = 12


def _nearby_text(text: str, cursor: int) -> str:
    """The lines around the cursor (its own line left out: that is where the answer goes)."""
    lines = text.split("\n")
    row = text.count("\n", 0, cursor)
    return "\n".join(lines[max(0, row - NEARBY_LINES):row] + lines[row + 1:row + 1 + NEARBY_LINES])


def copies_nearby(suggestion: str | None, nearby: str) -> bool:
    """The issue's "edit-style" completion: the answer copies nearby text — a run of at least 8 characters
    covering at least half of the answer occurs in the lines around the cursor."""
    answer = (suggestion or "").strip()
    if len(answer) < 8:
        return False
    match = difflib.SequenceMatcher(None, answer, nearby, autojunk=False).find_longest_match(
        0, len(answer), 0, len(nearby))
    return match.size >= 8 and match.size * 2 >= len(answer)


def _vm_hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_config(model: str, config: dict, sessions: list[tuple[str, dict]], *, home: Path, paced: bool,
               limit: int | None = None, device: str = "auto", max_tokens: int = 24,
               context_tokens: int = 1024) -> dict:
    options = {"maxTokens": max_tokens, "contextTokens": context_tokens, "repoContext": False, "device": device,
               **config}
    server = RawServer(model, home, init_options=options)
    try:
        state = server.initialize()
        if state.get("state") != "ready":
            raise RuntimeError(f"model not ready: {state}")
        runs = {}
        for name, session in sessions:
            first_status = len(server.statuses)
            records = replay(server, name, session, paced=paced, limit=limit)
            uri = (server.root / f"{name}.py").as_uri()
            statuses = [s for s in server.statuses[first_status:] if s.get("uri") == uri]
            runs[name] = {"records": records, "statuses": statuses, "edit_style": session.get("edit_style", False)}
        peak = _vm_hwm(server.proc.pid) or server.rss()
        tracebacks = server.tracebacks()
    finally:
        server.close()
    return {"model_state": state, "runs": runs, "peak_rss_mib": round(peak / 2**20, 1), "tracebacks": tracebacks}


# --- numbers -------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return round(values[k], 1)


def summarise(result: dict) -> dict:
    model_statuses = [(s, run["edit_style"]) for run in result["runs"].values() for s in run["statuses"]
                      if s.get("source") == "model" and s.get("prompt_tokens")]
    records = [r for run in result["runs"].values() for r in run["records"]]

    def per_forward(items):
        gen = sum(s.get("generated_tokens", 0) for s in items)
        fwd = sum(s.get("forward_passes", 0) for s in items)
        return round(gen / fwd, 2) if fwd else None

    statuses = [s for s, _ in model_statuses]
    n = len(statuses) or 1
    copying = []  # model answers that copy nearby text (needs one status per request, in order: unpaced runs)
    for run in result["runs"].values():
        if len(run["statuses"]) == len(run["records"]):
            copying += [s for s, r in zip(run["statuses"], run["records"])
                        if s.get("source") == "model" and s.get("prompt_tokens") and r.get("copies_nearby")]
    latencies = [r["latency_ms"] for r in records if r["suggestion"] and r["latency_ms"] is not None]
    # requests that prefilled a few tokens at most: their generation time is decode time
    decoding = [s for s in statuses if s.get("prefill_tokens", 0) <= 4 and s.get("generated_tokens")]
    decode_tokens = sum(s["generated_tokens"] for s in decoding)
    ttft = [s["time_to_first_token_ms"] for s in statuses if s.get("generated_tokens")]
    return {
        "requests": len(records),
        "answered_with_suggestion": len(latencies),
        "cancelled": sum(r["cancelled"] for r in records),
        "model_generations": len(statuses),
        "prompt_tokens_per_request": round(sum(s["prompt_tokens"] for s in statuses) / n, 1),
        "prefill_tokens_per_request": round(sum(s.get("prefill_tokens", 0) for s in statuses) / n, 1),
        # the same work spread over every request the editor sent (typing-along cache hits prefill nothing)
        "prefill_tokens_per_lsp_request": round(sum(s.get("prefill_tokens", 0) for s in statuses) / max(1, len(records)), 1),
        "reused_tokens_per_request": round(sum(s.get("reused_tokens", 0) for s in statuses) / n, 1),
        "tokens_per_forward": per_forward(statuses),
        "tokens_per_forward_edit_style": per_forward([s for s, edit in model_statuses if edit]),
        "tokens_per_forward_other": per_forward([s for s, edit in model_statuses if not edit]),
        "tokens_per_forward_copying": per_forward(copying),
        "copying_generations": len(copying),
        "decode_ms_per_token": round(sum(s.get("generation_ms", 0) for s in decoding) / decode_tokens, 2)
        if decode_tokens else None,
        "time_to_suggestion_ms_p50": _pct(latencies, 0.5),
        "time_to_suggestion_ms_p95": _pct(latencies, 0.95),
        "server_time_to_first_token_ms_p50": _pct(ttft, 0.5),
        "server_time_to_first_token_ms_p95": _pct(ttft, 0.95),
        "peak_rss_mib": result["peak_rss_mib"],
        "tracebacks": len(result["tracebacks"]),
    }


def compare_outputs(naive: dict, optimised: dict) -> dict:
    """Suggestions for the same document version that both runs answered (not cancelled)."""
    same = differ = 0
    examples = []
    for name, run in naive["runs"].items():
        other = {r["version"]: r for r in optimised["runs"][name]["records"]}
        for r in run["records"]:
            o = other.get(r["version"])
            if o is None or r["cancelled"] or o["cancelled"]:
                continue
            if r["suggestion"] == o["suggestion"]:
                same += 1
            else:
                differ += 1
                examples.append({"session": name, "version": r["version"], "naive": r["suggestion"],
                                 "optimised": o["suggestion"]})
    return {"compared": same + differ, "identical": same, "different": differ, "examples": examples[:5]}


def markdown(record: dict) -> str:
    n, o = record["summary"]["naive"], record["summary"]["optimised"]
    remote = "server" in str(record["device"])
    names = REMOTE_COLUMNS if remote else COLUMNS
    columns = [label for label in names if label in record["summary"]]
    rows = [("prompt tokens / request", "prompt_tokens_per_request"),
            ("prefill tokens / model request", "prefill_tokens_per_request"),
            ("prefill tokens / LSP request (cache hits count 0)", "prefill_tokens_per_lsp_request"),
            ("reused tokens / request", "reused_tokens_per_request"),
            ("tokens / forward pass (all)", "tokens_per_forward"),
            ("tokens / forward pass (edit-style)", "tokens_per_forward_edit_style"),
            ("tokens / forward pass (other)", "tokens_per_forward_other"),
            ("tokens / forward pass (answers copying nearby text)", "tokens_per_forward_copying"),
            ("model answers copying nearby text", "copying_generations"),
            ("decode ms / generated token (requests prefilling <= 4 tokens)", "decode_ms_per_token"),
            ("time to suggestion p50 (ms, client)", "time_to_suggestion_ms_p50"),
            ("time to suggestion p95 (ms, client)", "time_to_suggestion_ms_p95"),
            ("server time to first token p50 (ms)", "server_time_to_first_token_ms_p50"),
            ("server time to first token p95 (ms)", "server_time_to_first_token_ms_p95"),
            ("peak RSS (MiB)", "peak_rss_mib"),
            ("requests / with suggestion / cancelled", None)]
    out = [f"# Typing replay ({record['model']}, {record['device']})", "",
           f"- Command: `{record['command']}`", f"- Date: {record['date']}", f"- Machine: {record['machine']}",
           f"- Load average at start/end: {record['load_average_start']} / {record['load_average_end']}",
           f"- Sessions: {', '.join(record['sessions'])}; paced: {record['paced']}", "",
           "| | " + " | ".join(names[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    summaries = [record["summary"][c] for c in columns]
    for label, key in rows:
        if key is None:
            out.append(f"| {label} | " + " | ".join(
                f"{x['requests']} / {x['answered_with_suggestion']} / {x['cancelled']}" for x in summaries) + " |")
        else:
            out.append(f"| {label} | " + " | ".join("n/a" if x[key] is None else str(x[key]) for x in summaries) + " |")
    c, t = record["outputs"], record["targets"]
    def share(key):
        return f"{100 * o[key] / n[key]:.1f} %" if n[key] else "n/a"

    out += ["", f"Optimised prefill as a share of naive: {share('prefill_tokens_per_lsp_request')} per LSP request "
                f"(the same requests in both runs), {share('prefill_tokens_per_request')} per model request "
                f"(different denominators: see the script's docstring).",
            "", f"Identical suggestions (optimised vs naive SPM: same prompts) where both answered the same version: "
                f"{c['identical']} of {c['compared']}.", "",
            "Targets (issue 17, remote server):" if remote else "Targets (issue 7):", ""]
    out += [f"- {k}: {'met' if v else 'NOT met'}" for k, v in t.items()]
    return "\n".join(out) + "\n"


def targets(summary: dict) -> dict:
    n, o = summary["naive"], summary["optimised"]

    def lower(key):
        return n[key] is not None and o[key] is not None and o[key] < n[key]

    return {
        "prefill tokens per LSP request <= 10% of naive":
            n["prefill_tokens_per_lsp_request"] > 0
            and o["prefill_tokens_per_lsp_request"] <= 0.1 * n["prefill_tokens_per_lsp_request"],
        "tokens per forward pass >= 2x on edit-style completions":
            bool(n["tokens_per_forward_edit_style"] and o["tokens_per_forward_edit_style"]
                 and o["tokens_per_forward_edit_style"] >= 2 * n["tokens_per_forward_edit_style"]),
        "tokens per forward pass >= 2x on answers that copy nearby text":
            bool(n["tokens_per_forward_copying"] and o["tokens_per_forward_copying"]
                 and o["tokens_per_forward_copying"] >= 2 * n["tokens_per_forward_copying"]),
        "time to suggestion lower than naive at p50": lower("time_to_suggestion_ms_p50"),
        "time to suggestion lower than naive at p95": lower("time_to_suggestion_ms_p95"),
    }


def run_remote(model: str, sessions: list[tuple[str, dict]], tmp: Path, args) -> dict:
    """Each configuration against a fresh llama.cpp server (one slot; its cache starts empty) serving the model
    as GGUF; ``codellama-lsp serve`` builds the prompts with the model's tokenizer and reports the server's counters."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from llamacpp_server import LlamaServer

    gguf = model
    if not str(model).endswith(".gguf"):
        from codellama_lsp.engine.gguf_convert import convert_checkpoint, demo_gguf

        gguf = str(demo_gguf(tmp / "gguf") if model == "demo" else convert_checkpoint(model, tmp / "model.gguf"))
    results = {}
    for label, config in REMOTE_CONFIGS.items():
        with LlamaServer(gguf, threads=args.server_threads, log=tmp / f"{label}-llama.log") as server:
            remote = {"backend": "llamacpp-server", "endpoint": server.url, **config}
            results[label] = run_config(gguf, remote, sessions, home=tmp / label, paced=not args.unpaced,
                                        limit=args.limit, device="cpu", max_tokens=args.max_tokens,
                                        context_tokens=args.context_tokens)
    return results


def _xllamacpp_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("xllamacpp")
    except metadata.PackageNotFoundError:
        return "?"


def remote_targets(summary: dict, outputs: dict, *, paced: bool = False) -> dict:
    """The issue's targets against a server. Identity is judged on the unpaced run only: at human pace the runs
    answer different keystrokes (the naive one falls behind and is superseded), so the typing-along cache of the
    language server serves different continuations and the same version can legitimately differ."""
    n, o = summary["naive"], summary["optimised"]
    out = {
        "prefill tokens per LSP request <= 15% of naive (server counters)":
            n["prefill_tokens_per_lsp_request"] > 0
            and o["prefill_tokens_per_lsp_request"] <= 0.15 * n["prefill_tokens_per_lsp_request"],
    }
    if not paced:
        out["same suggestions as with cache_prompt off"] = outputs["compared"] > 0 and outputs["different"] == 0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="model directory, 'demo' (default), or 'tiny'")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--runtime", default="auto", help="auto, transformers or llamacpp (demo: converted to GGUF)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all cores but one)")
    parser.add_argument("--sessions", nargs="*", help="session names (bench/sessions/*.json stems); default all")
    parser.add_argument("--limit", type=int, default=None, help="keystrokes per session (default: all)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--context-tokens", type=int, default=1024, help="prompt budget (the server's contextTokens)")
    parser.add_argument("--unpaced", action="store_true", help="await every answer (no supersession)")
    parser.add_argument("--synthesise", action="store_true", help="rebuild bench/sessions/ from the stdlib")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--remote", action="store_true",
                        help="replay against a real llama.cpp server (xllamacpp) running the model as GGUF")
    parser.add_argument("--server-threads", type=int, default=1, help="--remote: the llama.cpp server's threads")
    parser.add_argument("--kv-cache", default=None, choices=("dynamic", "quantized", "static"),
                        help="the kv_cache setting of the configs that reuse the cache (default: the server's)")
    parser.add_argument("--out", default=str(RESULTS / "typing_replay.json"))
    args = parser.parse_args(argv)
    if args.synthesise:
        for path in synthesise_all(SESSIONS, args.seed):
            print(path)
        return 0
    sessions = load_sessions(args.sessions)
    load_start = [round(x, 1) for x in os.getloadavg()]
    results = {}
    with tempfile.TemporaryDirectory(prefix="typing-replay-") as tmp:
        model = tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else args.model
        if args.remote:
            results = run_remote(model, sessions, Path(tmp), args)
        else:
            for label, config in CONFIGS.items():
                config = {**config, "runtime": args.runtime, "nThreads": args.threads}
                if args.kv_cache and config.get("reuseCache"):
                    config = dict(config, kvCache=args.kv_cache)
                results[label] = run_config(model, config, sessions, home=Path(tmp) / label, paced=not args.unpaced,
                                            limit=args.limit, device=args.device, max_tokens=args.max_tokens,
                                            context_tokens=args.context_tokens)
    summary = {label: summarise(r) for label, r in results.items()}
    record = {
        "model": args.model, "device": args.device, "runtime": args.runtime, "paced": not args.unpaced,
        "sessions": [name for name, _ in sessions],
        "command": "python bench/typing_replay.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} "
                   f"{platform.python_version()} (other load on the CPU: see the load average)",
        "load_average_start": load_start, "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "configs": CONFIGS, "kv_cache": args.kv_cache or "default", "summary": summary, "outputs": compare_outputs(results["naive_spm"], results["optimised"]),
    }
    if args.remote:
        record["device"] = f"llama.cpp server (xllamacpp {_xllamacpp_version()}, {args.server_threads} thread(s))"
        record["configs"] = REMOTE_CONFIGS
    record["targets"] = (remote_targets(summary, record["outputs"], paced=not args.unpaced) if args.remote
                         else targets(summary))
    record["per_request"] = {label: {name: run["records"] for name, run in r["runs"].items()}
                             for label, r in results.items()}
    save_record(args.out, record, markdown)
    return 0 if all(record["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
