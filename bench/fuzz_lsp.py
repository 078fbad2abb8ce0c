"""Fuzz the language server through its real stdio transport with hypothesis-generated JSON-RPC.

Why through raw stdio: editors differ and some are buggy; the promise is that *no* byte sequence a client
can send crashes the server, hangs it, or leaves a request unanswered. A typed client library would never
produce the malformed frames, wrong types and missing fields this sends, so this writes the frames itself.

Each case is a short burst of messages: requests and notifications for real methods with random, wrong-typed
or missing params, out-of-range positions and ranges, unknown URIs, edits against stale versions, huge
texts, unknown methods, bad JSON bodies and junk header lines. After every batch the server must answer a
``codellama/ping`` (alive and not blocked), every request sent with a JSON-RPC id must have received exactly
one response, and the server's stderr and log must hold no traceback.

    python bench/fuzz_lsp.py --cases 10000 --seed 1 --model <dir>   # writes bench/results/fuzz_lsp.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, tiny_model  # noqa: E402
from raw_lsp import RawServer  # noqa: E402

# --- hypothesis strategies -------------------------------------------------------------------------------


def strategies(root: Path):
    """The case strategy: a list of frames, each (bytes, request id or None)."""
    from hypothesis import strategies as st

    real = [(root / name).as_uri() for name in ("a.py", "b.js", "c.rs")]
    uris = st.one_of(
        st.sampled_from(real),
        st.sampled_from(["file:///nonexistent/x.py", "untitled:Untitled-1", "file:///etc/passwd", "", "not a uri",
                         "file:///" + "a" * 5000, (root / ".." / ".." / "etc" / "passwd").as_posix(),
                         "http://example.com/x.py", "file:///tmp/%00%ff.py"]),
        st.text(max_size=40))
    ints = st.one_of(st.integers(-5, 60), st.integers(-2**40, 2**40), st.just(2**31 - 1), st.just(-1))
    junk = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                                  st.text(max_size=30)),
                        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                        max_leaves=10)
    number_or_junk = st.one_of(ints, ints, ints, junk)
    position = st.one_of(st.fixed_dictionaries({"line": number_or_junk, "character": number_or_junk}), junk)
    rng = st.one_of(st.fixed_dictionaries({"start": position, "end": position}), junk)
    text = st.one_of(st.text(max_size=200), st.text(alphabet="def x():\n\t\r(){}[]\"' é😀", max_size=400),
                     st.integers(1, 400).map(lambda n: "x = 1\n" * n),
                     st.integers(0, 20).map(lambda n: "y" * (100_000 * n) if n > 18 else "z" * n))  # huge, rarely
    doc_id = st.one_of(st.fixed_dictionaries({"uri": uris}), junk)
    versioned = st.one_of(st.fixed_dictionaries({"uri": uris, "version": number_or_junk}), junk)
    lang = st.sampled_from(["python", "javascript", "rust", "", "made-up", "c"])

    def maybe_missing(d):  # drop some keys: missing fields
        return st.fixed_dictionaries({}, optional=d)

    inline_ctx = st.one_of(st.fixed_dictionaries({"triggerKind": st.one_of(st.sampled_from([1, 2]), junk)}), junk)
    requests = {
        "textDocument/inlineCompletion": st.one_of(
            st.fixed_dictionaries({"textDocument": doc_id, "position": position, "context": inline_ctx}),
            maybe_missing({"textDocument": doc_id, "position": position, "context": inline_ctx})),
        "textDocument/completion": st.one_of(
            st.fixed_dictionaries({"textDocument": doc_id, "position": position}),
            maybe_missing({"textDocument": doc_id, "position": position, "context": junk})),
        "codellama/prompt": maybe_missing({"textDocument": doc_id, "position": position}),
        "codellama/chat": st.one_of(
            st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "system", "x"]), "content": st.text(max_size=50)}),
                max_size=3)}, optional={"textDocument": doc_id, "range": rng, "conversationId": junk}),
            junk),
        "textDocument/codeAction": maybe_missing({"textDocument": doc_id, "range": rng, "context": st.one_of(
            st.fixed_dictionaries({"diagnostics": st.lists(junk, max_size=2)}), junk)}),
        "workspace/executeCommand": maybe_missing({
            "command": st.sampled_from(["codellama.explain", "codellama.fix", "codellama.document",
                                        "codellama.tests", "nope"]),
            "arguments": st.one_of(st.lists(junk, max_size=4), st.tuples(uris, rng, number_or_junk).map(list))}),
        "codellama/ping": junk,
        "textDocument/hover": junk,
        "no/such/method": junk,
        "$/unknownRequest": junk,
    }
    notifications = {
        "textDocument/didOpen": st.one_of(st.fixed_dictionaries({"textDocument": st.fixed_dictionaries(
            {"uri": uris, "languageId": lang, "version": number_or_junk, "text": text})}),
            maybe_missing({"textDocument": junk})),
        "textDocument/didChange": st.one_of(st.fixed_dictionaries({
            "textDocument": versioned,
            "contentChanges": st.lists(st.one_of(st.fixed_dictionaries({"range": rng, "text": text}),
                                                 st.fixed_dictionaries({"text": text}), junk), max_size=3)}),
            junk),
        "textDocument/didClose": st.fixed_dictionaries({}, optional={"textDocument": doc_id}),
        "textDocument/didSave": junk,
        "workspace/didChangeConfiguration": st.fixed_dictionaries({}, optional={"settings": junk}),
        "$/cancelRequest": st.fixed_dictionaries({}, optional={"id": st.one_of(st.integers(0, 10**6), junk)}),
        "$/setTrace": junk,
        "no/such/notification": junk,
    }

    def frame(obj) -> bytes:
        body = json.dumps(obj).encode("utf-8")
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    ids = st.one_of(st.integers(10**7, 10**9), st.text(min_size=1, max_size=12).map(lambda s: "fz-" + s))

    @st.composite
    def request(draw):
        method = draw(st.sampled_from(sorted(requests)))
        msg_id = draw(ids)
        msg = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        params = draw(requests[method])
        if draw(st.integers(0, 9)):
            msg["params"] = params
        return frame(msg), msg_id

    @st.composite
    def notification(draw):
        method = draw(st.sampled_from(sorted(notifications)))
        return frame({"jsonrpc": "2.0", "method": method, "params": draw(notifications[method])}), None

    @st.composite
    def malformed(draw):
        kind = draw(st.integers(0, 5))
        if kind == 0:  # not JSON at all
            body = draw(st.binary(min_size=1, max_size=100)).replace(b"\r\n\r\n", b"")
            return b"Content-Length: %d\r\n\r\n" % len(body) + body, None
        if kind == 1:  # JSON, but not a JSON-RPC object
            return frame(draw(junk)), None
        if kind == 2:  # junk header lines (never a Content-Length), then a good frame
            lines = draw(st.lists(st.text(alphabet="abcXYZ:-; 0123456789", max_size=30), max_size=3))
            junk_head = b"".join(line.encode() + b"\r\n" for line in lines if not line.lower().startswith("content"))
            msg_id = draw(ids)
            return junk_head + b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n" + frame(
                {"jsonrpc": "2.0", "id": msg_id, "method": "codellama/ping"}), msg_id
        if kind == 3:  # a request object with a wrong jsonrpc version or extra members
            msg_id = draw(ids)
            return frame({"jsonrpc": "2.0", "id": msg_id,
                          "method": draw(st.sampled_from(sorted(requests))), "params": draw(junk),
                          "extra": draw(junk)}), msg_id
        if kind == 4:  # a response nobody asked for
            return frame({"jsonrpc": "2.0", "id": draw(ids), "result": draw(junk)}), None
        return frame({"jsonrpc": "2.0", "method": draw(junk), "params": draw(junk)}), None

    case = st.lists(st.one_of(request(), request(), notification(), notification(), malformed()),
                    min_size=1, max_size=6)
    return case


def _expects_answer(frame_id: Any) -> bool:
    return isinstance(frame_id, (int, str)) and not isinstance(frame_id, bool)


# --- the run -----------------------------------------------------------------------------------------------


class _OutOfTime(Exception):
    """Raised inside the hypothesis test when ``max_seconds`` is spent (the run records what it did)."""


def run(model: str, *, cases: int, seed: int, home: Path, batch: int = 100, answer_timeout: float = 180.0,
        max_seconds: float | None = None, log=print) -> dict:
    """Fuzz one server process with ``cases`` hypothesis cases; returns the result record."""
    from hypothesis import HealthCheck, Phase, given, seed as hseed, settings

    server = RawServer(model, home, init_options={"maxTokens": 4, "chatMaxTokens": 4, "completionTimeoutS": 5.0})
    root = server.root
    (root / "a.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "b.js").write_text("function f(x) { return x * 2; }\n")
    started = time.monotonic()
    state = server.initialize()
    record: dict[str, Any] = {"model": str(model), "seed": seed, "cases_target": cases, "model_state": state.get("state")}
    sent: list[Any] = []
    sent_methods: dict[Any, str] = {}
    stats = {"cases": 0, "frames": 0, "requests": 0, "batches": 0}
    failures: list[str] = []

    def check_batch() -> None:
        stats["batches"] += 1
        if not server.alive():
            raise AssertionError(f"server dead or unresponsive after case {stats['cases']}")
        missing = server.wait_all(sent, answer_timeout)
        if missing:
            raise AssertionError(f"{len(missing)} requests unanswered: " + "; ".join(
                f"{i!r} {sent_methods.get(i, '?')}" for i in missing[:5]))
        doubled = [i for i in sent if len(server.responses.get(i, [])) > 1]
        if doubled:
            raise AssertionError(f"requests answered more than once: {doubled[:5]}")

    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @hseed(seed)
    @given(strategies(root))
    def one_case(frames):
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            raise _OutOfTime()
        for data, msg_id in frames:
            if _expects_answer(msg_id):
                if msg_id in server.responses or msg_id in sent:
                    continue  # ids must be unique for the count to mean anything
                sent.append(msg_id)
                found = re.search(rb'"method": ("[^"]{0,60}")', data)
                sent_methods[msg_id] = found.group(1).decode("utf-8", "replace") if found else "?"
                stats["requests"] += 1
            server.write_raw(data)
            stats["frames"] += 1
        stats["cases"] += 1
        if stats["cases"] % batch == 0:
            try:
                check_batch()
            except AssertionError as exc:  # recorded as it is: a replay by hypothesis would only blur it
                failures.append(f"after case {stats['cases']}: {exc}")
                raise _OutOfTime() from None
            log(f"{stats['cases']} cases, {stats['requests']} requests answered, "
                f"{time.monotonic() - started:.0f} s, rss {server.rss() / 2**20:.0f} MiB")

    try:
        try:
            one_case()
        except _OutOfTime:
            if not failures:
                record["stopped_early"] = f"time limit of {max_seconds} s reached"
        if not failures:
            check_batch()
    except Exception as exc:  # noqa: BLE001 - recorded, the run still reports
        failures.append(f"{type(exc).__name__}: {exc}")
    alive = server.proc.poll() is None and server.alive()
    answered = sum(1 for i in sent if server.responses.get(i))
    tracebacks, unparseable = server.tracebacks(), server.tracebacks(kind="unparseable")
    answered_logged = server.tracebacks(kind="answered")
    exit_code = server.close()
    record.update(stats, requests_answered=answered, requests_unanswered=len(sent) - answered,
                  answered_more_than_once=sum(1 for i in sent if len(server.responses.get(i, [])) > 1),
                  alive_at_end=alive, crashes=0 if alive else 1, tracebacks=len(tracebacks),
                  traceback_samples=tracebacks[:5], unparseable_frames_logged=len(unparseable),
                  error_answers_logged_by_pygls=len(answered_logged), failures=failures, exit_code_after_shutdown=exit_code,
                  seconds=round(time.monotonic() - started, 1))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default="tiny",
                        help="model directory, 'demo', or 'tiny' (default: a seeded 2-layer random Code Llama)")
    parser.add_argument("--max-seconds", type=float, help="stop generating cases after this long (records the count)")
    parser.add_argument("--home", help="keep the server's directory (log, stderr) here instead of a temp dir")
    parser.add_argument("--out", default=str(RESULTS / "fuzz_lsp.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fuzz-lsp-") as tmp:
        model = tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else args.model
        home = Path(args.home) if args.home else Path(tmp) / "home"
        record = run(model, cases=args.cases, seed=args.seed, home=home, max_seconds=args.max_seconds)
        record["model"] = args.model
    try:
        record["load_average"] = os.getloadavg()
    except OSError:
        pass
    record["command"] = "python bench/fuzz_lsp.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    ok = not record["failures"] and record["crashes"] == 0 and record["tracebacks"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
