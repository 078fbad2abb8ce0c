"""Typing storm soak: 30 edits per second with an inline completion request after each, for minutes.

Why: a user typing fast produces a stream of edits and requests that supersede each other. The server must
never show a suggestion for text that is no longer there, must answer (or cancel) every request it
abandons — an unanswered request leaks a pending promise in the editor — and must not grow while doing it.

Checks, per response:
- ``stale_at_arrival``: it carries a suggestion but the client had already sent a newer edit when it arrived
  (the strict view; includes edits still in the pipe, which no server can know about);
- ``stale_after_edit_seen``: the same, and the server had provably processed the newer edit before answering
  (its answer came after the answer to a ``codellama/ping`` sent right behind that edit) — must be 0;
- every request answered (a result, or the -32800 "cancelled" error), none twice;
- RSS growth of the server process from the end of the warm-up to the end < 10%.

    python bench/typing_storm.py --seconds 300        # writes bench/results/typing_storm.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, tiny_model  # noqa: E402
from raw_lsp import RawServer  # noqa: E402

PROGRAM = "import os\n\n\ndef walk(root):\n    for name in os.listdir(root):\n        "
TYPED = "path = os.path.join(root, name)\n        if os.path.isdir(path):\n            yield from walk(path)\n        "


def storm(server: RawServer, *, seconds: float, rate: float = 30.0, warmup: float = 0.1) -> dict:
    uri = (server.root / "storm.py").as_uri()
    text, version = PROGRAM, 1
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": version,
                                                            "text": text}})
    requests: dict[int, dict] = {}  # id -> {version, ping_after}
    edits: list[tuple[float, int, int]] = []  # (sent at, version, ping id sent right after)
    period = 1.0 / rate
    started = time.monotonic()
    rss_start = None
    previous = None
    tick = 0
    while True:
        now = time.monotonic()
        if now - started >= seconds:
            break
        if rss_start is None and now - started >= seconds * warmup:
            rss_start = server.rss()
        char = TYPED[tick % len(TYPED)]
        tick += 1
        lines = text.split("\n")
        line, col = len(lines) - 1, len(lines[-1])
        text += char
        version += 1
        server.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": {"start": {"line": line, "character": col},
                                          "end": {"line": line, "character": col}}, "text": char}]})
        ping = server.new_id()
        server.send({"jsonrpc": "2.0", "id": ping, "method": "codellama/ping", "params": {}})
        edits.append((time.monotonic(), version, ping))
        if previous is not None and not server.responses.get(previous):
            server.notify("$/cancelRequest", {"id": previous})  # what VS Code does on the next keystroke
        lines = text.split("\n")
        msg_id = server.new_id()
        requests[msg_id] = {"version": version}
        server.send({"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/inlineCompletion", "params": {
            "textDocument": {"uri": uri}, "position": {"line": len(lines) - 1, "character": len(lines[-1])},
            "context": {"triggerKind": 2}}})
        previous = msg_id
        time.sleep(max(0.0, started + tick * period - time.monotonic()))  # pacing, not synchronisation
    elapsed = time.monotonic() - started
    missing = server.wait_all(list(requests), 180)
    rss_end = server.rss()

    answered = cancelled = with_items = stale_arrival = stale_seen = errors = twice = 0
    examples = []
    for msg_id, info in requests.items():
        answers = server.responses.get(msg_id, [])
        if not answers:
            continue
        answered += 1
        twice += len(answers) > 1
        response = answers[0]
        if "error" in response:
            if response["error"].get("code") == -32800:
                cancelled += 1
            else:
                errors += 1
            continue
        items = (response.get("result") or {}).get("items") or []
        if not items:
            continue
        with_items += 1
        arrived = response["_arrived"]
        newer = [e for e in edits if e[1] > info["version"] and e[0] < arrived]
        if newer:
            stale_arrival += 1
            ping_answer = server.responses.get(newer[0][2], [{}])[0]
            if ping_answer.get("_arrived", float("inf")) < arrived:
                stale_seen += 1
                examples.append({"request_version": info["version"], "newer_version": newer[0][1]})
    return {
        "seconds": round(elapsed, 1), "edits": len(edits), "edits_per_second": round(len(edits) / elapsed, 1),
        "requests": len(requests), "answered": answered, "unanswered": len(missing), "answered_twice": twice,
        "cancelled": cancelled, "errors": errors, "with_suggestion": with_items,
        "stale_at_arrival": stale_arrival, "stale_after_edit_seen": stale_seen, "stale_examples": examples[:5],
        "rss_start_mib": round((rss_start or rss_end) / 2**20, 1), "rss_end_mib": round(rss_end / 2**20, 1),
        "rss_growth_percent": round(100.0 * (rss_end - (rss_start or rss_end)) / (rss_start or rss_end), 2),
    }


def run(model: str, *, seconds: float, home: Path, rate: float = 30.0) -> dict:
    server = RawServer(model, home, init_options={"maxTokens": 8, "repoContext": True})
    try:
        state = server.initialize()
        record = {"model_state": state.get("state"), "rate_target": rate}
        record.update(storm(server, seconds=seconds, rate=rate))
        record["alive_at_end"] = server.alive()
        record["tracebacks"] = len(server.tracebacks())
        record["traceback_samples"] = server.tracebacks()[:3]
    finally:
        server.close()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=30.0, help="edits per second")
    parser.add_argument("--model", default="tiny", help="model directory, 'demo', or 'tiny' (default)")
    parser.add_argument("--out", default=str(RESULTS / "typing_storm.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="typing-storm-") as tmp:
        model = tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else args.model
        record = run(model, seconds=args.seconds, home=Path(tmp) / "home", rate=args.rate)
    record["model"] = args.model
    record["load_average"] = os.getloadavg()
    record["command"] = "python bench/typing_storm.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    ok = (record["unanswered"] == 0 and record["stale_after_edit_seen"] == 0 and record["answered_twice"] == 0
          and record["rss_growth_percent"] < 10 and record["alive_at_end"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
