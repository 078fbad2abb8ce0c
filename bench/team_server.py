"""Team server: 1, 4 and 8 simulated editors typing real sessions at human pace against one llama.cpp server.

Why: a team shares one inference server; what each developer feels is the time from a keystroke to a suggestion
while the others type too, whether the server's prefix cache still serves each editor's keystrokes (one slot per
editor: ``-np`` matches the editor count, and each editor's requests ask for the slot it used last), and that no
editor ever gets another editor's answer or an answer for a document version it has already left.

Each editor is its own ``codellama-lsp serve`` process (``backend = "llamacpp-server"``), driven over stdio as an
editor drives it: one ``didChange`` + one ``textDocument/inlineCompletion`` per keystroke at the session's recorded
delays (100-300 ms), an unanswered request cancelled by the next keystroke (``$/cancelRequest``). Editor ``i``
replays session ``i mod 4`` (``bench/sessions``) with its own copy of the file, under its own name.

Checks, per run:
- time to suggestion p50/p95 (client side: request sent -> answer with a suggestion);
- prefix-cache hit share: from the server's own counters (``/metrics``: prompt tokens taken from the cache / all
  prompt tokens it started on, cancelled requests included), and for the answered requests from their
  ``timings.cache_n`` (reported by codellama-lsp as ``reused_tokens``);
- stale answers: a suggestion for a version that arrived after the answer to the editor's next request (must be
  0: the server answers a superseded request cancelled). Answers already on their way when the next keystroke
  was sent (the server wrote them before it read the change) are counted apart: an editor drops them by version;
- wrong-editor answers: a suggestion (8 characters or more) that is not what a solo run of the same session gives
  for any version but is what another session gives (must be 0). The solo reference is an unpaced replay (every request answered).

    python bench/team_server.py --model demo             # writes bench/results/team_server.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))
from common import RESULTS, save_record  # noqa: E402
from raw_lsp import RawServer  # noqa: E402
from typing_replay import _pct, load_sessions, replay  # noqa: E402


def editor_options(url: str, max_tokens: int, context_tokens: int) -> dict:
    return {"backend": "llamacpp-server", "endpoint": url, "maxTokens": max_tokens, "contextTokens": context_tokens,
            "repoContext": False}


def start_editors(n: int, gguf: str, url: str, home: Path, args) -> list[RawServer]:
    editors = []
    for i in range(n):
        editor = RawServer(gguf, home / f"editor{i}", init_options=editor_options(url, args.max_tokens, args.context_tokens))
        state = editor.initialize()
        if state.get("state") != "ready":
            raise RuntimeError(f"editor {i} not ready: {state}")
        editors.append(editor)
    return editors


def run_team(n: int, gguf: str, sessions: list[tuple[str, dict]], home: Path, args) -> dict:
    """``n`` editors at once against one server with ``n`` slots."""
    from llamacpp_server import LlamaServer

    with LlamaServer(gguf, n_parallel=n, n_ctx=args.slot_ctx * n, threads=args.server_threads,
                     log=home / f"llama-{n}.log") as server:
        editors = start_editors(n, gguf, server.url, home / f"team{n}", args)
        runs: list[dict] = [{} for _ in range(n)]

        def work(i: int) -> None:
            name, session = sessions[i % len(sessions)]
            first = len(editors[i].statuses)
            records = replay(editors[i], name, session, paced=True, limit=args.limit)
            statuses = [s for s in editors[i].statuses[first:] if "stop_reason" in s]
            runs[i] = {"editor": i, "session": name, "records": records, "statuses": statuses}

        started = time.monotonic()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        metrics = server_metrics(server.url)
        tracebacks = sum(len(e.tracebacks()) for e in editors)
        for e in editors:
            e.close()
    return {"editors": n, "runs": runs, "wall_s": round(wall, 1), "tracebacks": tracebacks, "metrics": metrics}


def server_metrics(url: str) -> dict[str, float]:
    """llama.cpp's own Prometheus counters (``/metrics``): what the server really prefilled and took from its cache,
    cancelled requests included."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:") and " " in line:
            name, value = line.split(None, 1)
            out[name[len("llamacpp:"):]] = float(value)
    return out


def reference(gguf: str, sessions: list[tuple[str, dict]], home: Path, args) -> dict[str, dict[int, str | None]]:
    """Suggestions of a solo, unpaced replay (every request answered): session -> version -> suggestion."""
    from llamacpp_server import LlamaServer

    out: dict[str, dict[int, str | None]] = {}
    with LlamaServer(gguf, n_parallel=1, n_ctx=args.slot_ctx, threads=args.server_threads,
                     log=home / "llama-ref.log") as server:
        editor = start_editors(1, gguf, server.url, home / "reference", args)[0]
        try:
            for name, session in sessions:
                records = replay(editor, name, session, paced=False, limit=args.limit)
                out[name] = {r["version"]: r["suggestion"] for r in records}
        finally:
            editor.close()
    return out


def summarise(team: dict, ref: dict[str, dict[int, str | None]]) -> dict:
    records = [(run["session"], r, run["records"]) for run in team["runs"] for r in run["records"]]
    # every request that reached the server, cancelled ones included (their prefill counts as uncached when the
    # stream was cut before the server's counters arrived: conservative)
    statuses = [s for run in team["runs"] for s in run["statuses"] if s.get("prompt_tokens")]
    latencies = [r["latency_ms"] for _, r, _ in records if r["suggestion"] and r["latency_ms"] is not None]
    stale = identical = compared = wrong = 0
    in_flight: list[float] = []
    suggestions_of = {name: {s for s in versions.values() if s} for name, versions in ref.items()}
    for session, r, own in records:
        if not r["suggestion"]:
            continue
        later = [x for x in own if x["version"] > r["version"]]
        if later and r.get("arrived_at") is not None and r["arrived_at"] > later[0]["sent_at"]:
            # answered after the next keystroke left the client: in flight when it was typed (the server wrote it
            # before reading the change, so an editor drops it by version), or stale if it came after the server
            # had answered that next request
            in_flight.append((r["arrived_at"] - later[0]["sent_at"]) * 1000)
            nxt = later[0]
            if nxt.get("arrived_at") is not None and r["arrived_at"] > nxt["arrived_at"]:
                stale += 1
        expected = ref.get(session, {}).get(r["version"])
        if r["version"] in ref.get(session, {}):
            compared += 1
            identical += r["suggestion"] == expected
        if len(r["suggestion"]) >= 8 and r["suggestion"] not in suggestions_of.get(session, set()) and any(
                r["suggestion"] in found for other, found in suggestions_of.items() if other != session):
            wrong += 1
    answered = [s for s in statuses if s.get("source") == "model" and s.get("stop_reason") != "cancelled"]
    prompt = sum(s["prompt_tokens"] for s in answered)
    reused = sum(s.get("reused_tokens", 0) for s in answered)
    metrics = team["metrics"]
    prefilled, cached = metrics.get("prompt_tokens_total", 0), metrics.get("prompt_tokens_cached_total", 0)
    return {
        "editors": team["editors"],
        "requests": len(records),
        "answered_with_suggestion": len(latencies),
        "cancelled": sum(r["cancelled"] for _, r, _ in records),
        "model_requests": len(statuses),
        "time_to_suggestion_ms_p50": _pct(latencies, 0.5),
        "time_to_suggestion_ms_p95": _pct(latencies, 0.95),
        # the server's counters: every request it started, cancelled ones included
        "prefix_cache_hit_share": round(cached / (cached + prefilled), 3) if cached + prefilled else None,
        "server_prefill_tokens_per_lsp_request": round(prefilled / len(records), 1) if records else None,
        # the answered requests' own counters (timings.cache_n of each)
        "answered_cache_hit_share": round(reused / prompt, 3) if prompt else None,
        "stale_answers": stale,
        "in_flight_at_next_keystroke": len(in_flight),
        "in_flight_max_ms_after_keystroke": round(max(in_flight), 1) if in_flight else None,
        "wrong_editor_answers": wrong,
        "identical_to_solo_run": f"{identical} of {compared}",
        "errors": sum(1 for s in statuses if s.get("stop_reason") == "engine_error"),
        "tracebacks": team["tracebacks"],
        "wall_s": team["wall_s"],
    }


def markdown(record: dict) -> str:
    rows = [("requests / with suggestion / cancelled", None),
            ("time to suggestion p50 (ms)", "time_to_suggestion_ms_p50"),
            ("time to suggestion p95 (ms)", "time_to_suggestion_ms_p95"),
            ("prefix-cache hit share, server /metrics (cached / cached + prefilled)", "prefix_cache_hit_share"),
            ("tokens the server prefilled / LSP request", "server_prefill_tokens_per_lsp_request"),
            ("cache hit share of the answered requests (their timings.cache_n)", "answered_cache_hit_share"),
            ("stale answers (arrived after the next request's answer)", "stale_answers"),
            ("answers in flight when the next keystroke was sent", "in_flight_at_next_keystroke"),
            ("  latest of those, ms after that keystroke", "in_flight_max_ms_after_keystroke"),
            ("answers for another editor's document", "wrong_editor_answers"),
            ("suggestions identical to a solo unpaced run (same version)", "identical_to_solo_run"),
            ("engine errors / tracebacks", None)]
    summaries = record["summary"]
    out = [f"# Team server: editors sharing one llama.cpp server ({record['model']})", "",
           f"- Command: `{record['command']}`", f"- Date: {record['date']}", f"- Machine: {record['machine']}",
           f"- Server: {record['server']}",
           f"- Load average at start/end: {record['load_average_start']} / {record['load_average_end']}",
           f"- Sessions: {', '.join(record['sessions'])} (editor i types session i mod {len(record['sessions'])}), "
           f"{record['keystrokes']} keystrokes each at the recorded human pace", "",
           "| | " + " | ".join(f"{s['editors']} editor{'s' if s['editors'] > 1 else ''}" for s in summaries) + " |",
           "|---" * (len(summaries) + 1) + "|"]
    for label, key in rows:
        if key is None and label.startswith("requests"):
            cells = [f"{s['requests']} / {s['answered_with_suggestion']} / {s['cancelled']}" for s in summaries]
        elif key is None:
            cells = [f"{s['errors']} / {s['tracebacks']}" for s in summaries]
        else:
            cells = ["n/a" if s[key] is None else str(s[key]) for s in summaries]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "Checks:", ""] + [f"- {k}: {'met' if v else 'NOT met'}" for k, v in record["checks"].items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="'demo' (converted to GGUF) or a .gguf file")
    parser.add_argument("--editors", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--limit", type=int, default=40, help="keystrokes per session")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--slot-ctx", type=int, default=2048, help="server context per slot")
    parser.add_argument("--server-threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "team_server.json"))
    args = parser.parse_args(argv)
    sessions = load_sessions(None)
    load_start = [round(x, 1) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="team-server-") as tmp:
        home = Path(tmp)
        gguf = args.model
        if gguf == "demo":
            from codellama_lsp.engine.gguf_convert import demo_gguf

            gguf = str(demo_gguf(home / "gguf"))
        ref = reference(gguf, sessions, home, args)
        teams = [run_team(n, gguf, sessions, home, args) for n in args.editors]
    summary = [summarise(t, ref) for t in teams]
    from importlib import metadata

    record = {
        "model": args.model,
        "command": "python bench/team_server.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other developers' jobs, "
                   f"CPython {platform.python_version()}",
        "server": f"xllamacpp {metadata.version('xllamacpp')} (llama.cpp server, in a child process), -np = editors, "
                  f"{args.slot_ctx} tokens per slot, {args.server_threads} thread(s), 256-token batches",
        "load_average_start": load_start, "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "sessions": [name for name, _ in sessions], "keystrokes": args.limit, "summary": summary,
    }
    record["checks"] = {
        "no stale answers delivered": all(s["stale_answers"] == 0 for s in summary),
        "no answer for another editor's document": all(s["wrong_editor_answers"] == 0 for s in summary),
        "no engine errors or tracebacks": all(s["errors"] == 0 and s["tracebacks"] == 0 for s in summary),
    }
    record["per_editor"] = {t["editors"]: [{"session": r["session"], "records": r["records"]} for r in t["runs"]]
                            for t in teams}
    save_record(args.out, record, markdown)
    return 0 if all(record["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
