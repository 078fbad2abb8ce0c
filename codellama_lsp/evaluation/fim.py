"""``codellama-lsp bench fim``: HumanEval-infilling through the real language server.

For every task: open ``prompt + suffix`` in a running ``codellama-lsp serve``, ask for an inline completion at
the hole (as an editor would), apply it, and run the filled-in program against the task's unit test in the
sandbox. Scores pass@1, exact match and latency per split and FIM mode, and writes JSON plus a markdown table.

``--oracle canonical|empty`` skips the server and fills every hole with the canonical solution / nothing; it
checks the scorer itself (expect 100% / about 0%).

Model requests are sequential (one server, one request at a time, like one editor); sandboxed checks of
earlier answers run in parallel threads meanwhile. This module imports only the standard library at import
time, because the CLI imports it just to build its argument parser.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import choices

FIM_MODES = ("psm", "spm")
ORACLES = ("canonical", "empty", "postprocessed", "overrun")
# what the ``overrun`` oracle appends to the canonical answer before the clean-up: the model's typical overruns
OVERRUNS = ("suffix-lines", "statement", "closer")
SOLUTION_FILE = "solution.py"
TEST_FILE = "test_solution.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .dataset import default_data_dir

    parser.add_argument("--data", type=Path, default=None,
                        help=f"directory with HumanEval-*Infilling*.jsonl.gz (default: {default_data_dir()})")
    parser.add_argument("--split", default="all",
                        help="all (single-line,multi-line,random-span) or a comma-separated list; "
                             "random-span-light is also available")
    parser.add_argument("--fim-mode", default="psm,spm", help="psm, spm or psm,spm (server setting fim_mode)")
    parser.add_argument("--limit", type=int, default=None, help="at most N tasks per split (seeded random sample)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    parser.add_argument("--tasks", default=None, metavar="REGEX",
                        help="only tasks whose task_id matches, e.g. 'HumanEval/0/' (applied before --limit)")
    parser.add_argument("--model", default="demo",
                        help="model the server loads: 'demo', a local directory or a cached Hugging Face id")
    parser.add_argument("--quantization", choices=choices("quantization"), default=None)
    parser.add_argument("--device", choices=choices("device"), default=None)
    parser.add_argument("--dtype", choices=choices("dtype"), default=None)
    parser.add_argument("--max-tokens", type=int, default=None, help="server setting max_tokens")
    parser.add_argument("--completion-timeout", type=float, default=None,
                        help="server setting completion_timeout_s (seconds per completion)")
    parser.add_argument("--repo-context", action=argparse.BooleanOptionalAction, default=False,
                        help="open the task's unit test as a second workspace file and let the server use "
                             "repository context (default: off, the paper's setting)")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="any other server setting, sent in initializationOptions (value parsed as JSON "
                             "when it parses, else a string); repeatable")
    parser.add_argument("--oracle", choices=ORACLES, default=None,
                        help="no model: fill each hole with the canonical solution / nothing (scorer check: "
                             "expect 100%% / about 0%%) / the canonical solution after the server's cursor "
                             "decision and post-processing (postprocessed: what the pipeline leaves a perfect model) "
                             "/ the canonical solution followed by a typical overrun (the suffix's first lines, "
                             "a next definition, a closer the suffix has), through the same clean-up (overrun: "
                             "the clean-up must give back the right answer), one row per kind of overrun")
    parser.add_argument("--timeout", type=float, default=5.0, help="sandbox wall-clock seconds per program")
    parser.add_argument("--memory-mb", type=int, default=1024, help="sandbox address-space limit per program")
    parser.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="sandboxed programs run in parallel")
    parser.add_argument("--out", type=Path, default=None,
                        help="output path prefix; writes PREFIX.json and PREFIX.md "
                             "(default: bench/results/fim_<model>[_repo])")
    parser.add_argument("--no-task-details", action="store_true", help="leave per-task results out of the JSON")
    parser.add_argument("--server-command", default=None,
                        help="command that starts the server on stdio (default: this Python -m codellama_lsp.cli serve)")
    parser.add_argument("--server-log", type=Path, default=None, help="append the server's stderr here")
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for the model to load")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fim_eval.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from .dataset import DatasetError, default_data_dir, load_tasks, parse_splits

    try:
        splits = parse_splits(args.split)
        modes = parse_modes(args.fim_mode)
        server_settings(args, modes[0])  # reject a malformed --setting before anything starts
        data_dir = Path(args.data) if args.data else default_data_dir()
        tasks = load_tasks(data_dir, splits, limit=args.limit, seed=args.seed, pattern=args.tasks)
    except (DatasetError, ValueError) as exc:
        print(f"bench fim: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, data_dir, splits, modes, tasks))
    except _Abort as exc:
        print(f"bench fim: {exc}", file=sys.stderr)
        return 1


class _Abort(Exception):
    pass


def parse_modes(value: str) -> list[str]:
    modes = [m.strip().lower() for m in value.split(",") if m.strip()]
    if not modes or any(m not in FIM_MODES for m in modes):
        raise ValueError(f"--fim-mode must be psm, spm or psm,spm (got {value!r})")
    return list(dict.fromkeys(modes))


def _setting_value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def server_settings(args: argparse.Namespace, fim_mode: str) -> dict:
    """The ``initializationOptions`` of one run (Settings field names; the server validates them)."""
    settings: dict = {"model": args.model, "fim_mode": fim_mode, "repo_context": bool(args.repo_context)}
    for key, attr in (("quantization", "quantization"), ("device", "device"), ("dtype", "dtype"),
                      ("max_tokens", "max_tokens"), ("completion_timeout_s", "completion_timeout")):
        value = getattr(args, attr, None)
        if value is not None:
            settings[key] = value
    for item in args.setting or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--setting expects KEY=VALUE, got {item!r}")
        settings[key.strip()] = _setting_value(value.strip())
    return settings


def unit_test_document(task) -> str:
    """The second workspace file for ``--repo-context``: the task's unit test, importing the function under test
    from the document being completed — the kind of neighbour a real repository gives its source files."""
    return (f"from solution import {task.entry_point}\n\n{task.test.strip()}\n\n\n"
            f"def test_{task.entry_point}():\n    check({task.entry_point})\n")


async def _run(args, data_dir: Path, splits: list[str], modes: list[str], tasks: dict) -> int:
    from tqdm import tqdm

    from . import report
    from .sandbox import Limits, isolation_description
    from .scoring import summarize

    limits = Limits(timeout_s=args.timeout, memory_mb=args.memory_mb)
    runs = [("oracle-" + args.oracle, None)] if args.oracle else [(mode, mode) for mode in modes]
    if args.oracle == "overrun":
        runs = [(f"oracle-overrun-{kind}", kind) for kind in OVERRUNS]
    per_run = sum(len(t) for t in tasks.values())
    # (label, split, [(task, document, hole, latency_ms, error, server stats)])
    answers: list[tuple[str, str, list]] = []
    model_info: dict = {}
    if not args.oracle:
        progress = tqdm(total=per_run * len(runs), unit="task", disable=not args.progress, dynamic_ncols=True,
                        file=sys.stderr)
        for label, mode in runs:
            by_split, model_info = await _server_answers(args, mode, splits, tasks, progress)
            answers += [(label, split, by_split[split]) for split in splits]
        progress.close()
    else:
        for label, kind in runs:
            for split in splits:
                fills = [(task, task.prompt + hole + task.suffix, hole, None, "", None)
                         for task in tasks[split] for hole in [oracle_fill(task, args.oracle, kind)]]
                answers.append((label, split, fills))

    # The programs run after the model is done, so that they never compete with it for the CPU and the
    # latencies measured above stay those of the server alone.
    check = tqdm(total=sum(len(a[2]) for a in answers), unit="program", desc="sandbox", disable=not args.progress,
                 dynamic_ncols=True, file=sys.stderr)
    results, summaries = [], []
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for label, split, fills in answers:
            futures = [pool.submit(_score, *fill[:3], label, limits, *fill[3:]) for fill in fills]
            for future in futures:
                future.add_done_callback(lambda _f: check.update(1))
            split_results = [future.result() for future in futures]
            results += split_results
            summaries.append(summarize(split_results, split, label))
    check.close()

    meta = _meta(args, data_dir, splits, modes, model_info, isolation_description(), limits)
    out = Path(args.out) if args.out else Path("bench/results") / f"fim_{_slug(meta)}"
    json_path, md_path = report.write_reports(out, meta, summaries, results, details=not args.no_task_details)
    print(report.markdown_table(summaries))
    print(f"wrote {json_path} and {md_path}")
    return 0


def oracle_fill(task, oracle: str, overrun: str | None = None) -> str:
    """The hole's text for an ``--oracle`` run.

    ``postprocessed`` runs the canonical solution through the same cursor decision (``syntax.analyze``) and
    clean-up (``postprocess.clean``) the server applies to a model's output, in process and without a model.
    It approximates the server (decoding's stop strings are not applied) and bounds what any model can score
    through it: a hole the pipeline declines, or an answer it cuts wrongly, fails here too. ``overrun`` does
    the same to the canonical solution followed by an overrun (:func:`overrun_completion`): a clean-up that
    cuts an overrunning model at the right place gives the canonical answer back."""
    if oracle == "canonical":
        return task.canonical_solution
    if oracle == "empty":
        return ""
    from ..context import syntax
    from ..features.postprocess import clean

    decision = syntax.analyze(task.document, len(task.prompt), "python", force=True)  # the harness invokes
    if not decision.complete:
        return ""
    raw = task.canonical_solution
    if oracle == "overrun":
        raw += overrun_completion(task, overrun or OVERRUNS[0])
    return clean(raw, prefix=task.prompt, suffix=task.suffix, language="python", multiline=decision.multiline)


def overrun_completion(task, kind: str) -> str:
    """What a model that does not stop in time writes after the right answer, by kind:

    * ``suffix-lines``: it goes on writing the code that follows, i.e. the suffix's first two lines again;
    * ``statement``: it finishes the function and starts the next definition (``\n\n\ndef main():``...);
    * ``closer``: it writes the closing bracket the suffix already has (with what leads to it on that line;
      the rest of the suffix's line when that line closes nothing).
    When the suffix is empty (the end of the file) there is nothing to repeat: the next definition then."""
    suffix, answer = task.suffix, task.canonical_solution
    line = suffix.split("\n", 1)[0]
    statement = "\n\ndef main():\n    print(" + task.entry_point + ")\n"
    if not answer.endswith("\n"):
        # a hole that ends inside a line: the model finishes the line first (the suffix has the rest of it)
        statement = (line if line.strip() and answer.strip() else "") + "\n" + statement
    if not suffix.strip() or kind == "statement":
        return statement
    if kind == "suffix-lines":
        lines = suffix.split("\n")
        taken = "\n".join(lines[:2])
        if not taken.strip():
            taken = "\n".join(lines[:3])
        return taken + ("\n" if len(lines) > 2 else "")
    closer = min((i for i in (line.find(c) for c in ")]}") if i >= 0), default=-1)
    if closer >= 0:
        return line[: closer + 1]
    return line if line.strip() else statement


def _score(task, document: str, hole: str, label: str, limits, latency_ms=None, error: str = "", stats=None):
    from .sandbox import run_program
    from .scoring import TaskResult, compare

    if error:
        return TaskResult(task.task_id, task.split, label, hole, "error", error[:300], latency_ms=latency_ms,
                          server=stats or {}, **compare(hole, task.canonical_solution))
    outcome = run_program(task.program_from_document(document), limits)
    return TaskResult(task.task_id, task.split, label, hole, outcome.status, outcome.detail, latency_ms=latency_ms,
                      server=stats or {}, **compare(hole, task.canonical_solution))


async def _server_answers(args, mode: str, splits, tasks, progress) -> tuple[dict, dict]:
    """One server session in one FIM mode: ``{split: [(task, document, hole, latency_ms, error, stats)]}`` and the
    model's status notification."""
    from .lsp_driver import ServerError, ServerSession, default_server_command, hole_text, server_env

    command = shlex.split(args.server_command) if args.server_command else default_server_command()
    with tempfile.TemporaryDirectory(prefix="fim-eval-ws-") as workspace, \
            tempfile.TemporaryDirectory(prefix="fim-eval-config-") as config_home:
        env = server_env()
        # a user's config file must not change what a benchmark measures
        env.update({"XDG_CONFIG_HOME": config_home, "CODELLAMA_LSP_MODEL": args.model, "HF_HUB_OFFLINE": "1"})
        log = Path(args.server_log) if args.server_log else Path(config_home) / "server.log"
        session = ServerSession(init_options=server_settings(args, mode), root=Path(workspace), command=command,
                                env=env, cwd=Path(workspace), stderr_log=log, client_info="codellama-lsp-bench",
                                ready_timeout_s=args.ready_timeout,
                                request_timeout_s=max(120.0, 4 * (args.completion_timeout or 30.0)))
        progress.set_description(f"{mode}: loading model")
        by_split: dict[str, list] = {}
        try:
            async with session:
                model_info = session.model_info
                root = Path(workspace)
                solution_uri = (root / SOLUTION_FILE).as_uri()
                test_uri = (root / TEST_FILE).as_uri()
                for split in splits:
                    progress.set_description(f"{mode} {split}")
                    answers = []
                    for task in tasks[split]:
                        if args.repo_context:
                            session.open(test_uri, unit_test_document(task))
                        session.open(solution_uri, task.document)
                        try:
                            answer = await session.complete(solution_uri, task.document, len(task.prompt))
                        finally:
                            session.close_document(solution_uri)
                            if args.repo_context:
                                session.close_document(test_uri)
                        hole = hole_text(answer.document, task.prompt, task.suffix)
                        answers.append((task, answer.document, hole, answer.latency_ms, answer.error, answer.stats))
                        progress.update(1)
                    by_split[split] = answers
        except ServerError as exc:
            tail = ""
            if not args.server_log:
                tail = "\n" + session.stderr_tail()
            raise _Abort(f"{exc}{tail}") from exc
    return by_split, model_info


def _slug(meta: dict) -> str:
    if meta.get("oracle"):
        return f"oracle_{meta['oracle']}"
    name = str(meta.get("model", "model")).rstrip("/").split("/")[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower() or "model"
    return name + ("_repo" if meta.get("repo_context") else "")


def _command_line() -> str:
    argv = sys.argv[1:]
    if sys.argv and sys.argv[0].endswith("fim_eval.py"):
        return shlex.join(["python", "bench/fim_eval.py", *argv])
    return shlex.join(["codellama-lsp", *argv])


def _git_commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _meta(args, data_dir: Path, splits, modes, model_info: dict, isolation: str, limits) -> dict:
    from .dataset import SPLIT_FILES

    source = f"oracle ({args.oracle})" if args.oracle else "codellama-lsp serve over LSP stdio (textDocument/inlineCompletion)"
    title = f"oracle: {args.oracle}" if args.oracle else f"{args.model} through the server"
    if not args.oracle and args.repo_context:
        title += ", with repository context"
    return {
        "title": title,
        "command": _command_line(),
        "source": source,
        "oracle": args.oracle,
        "model": None if args.oracle else args.model,
        "model_info": model_info,
        "server_settings": None if args.oracle else {m: server_settings(args, m) for m in modes},
        "splits": splits,
        "fim_modes": None if args.oracle else modes,
        "limit": args.limit,
        "seed": args.seed,
        "tasks": args.tasks,
        "repo_context": bool(args.repo_context) and not args.oracle,
        "data": {s: {"file": SPLIT_FILES[s], "sha256": _sha256(Path(data_dir) / SPLIT_FILES[s])} for s in splits},
        "sandbox": {"isolation": isolation, "timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb,
                    "cpu_s": limits.cpu_seconds, "workers": args.workers},
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git_commit(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
                   + (f", model on {model_info.get('device')}" if model_info.get("device") else ""),
    }
