#!/usr/bin/env python3
"""The workspace index on big trees: 1k / 10k / 100k-file repositories and a 200,000-file home-like tree.

    python bench/big_workspace.py [--sizes 1000 10000 100000] [--home-files 200000] [--base /tmp/codellama-big]
                                  [--holes 40] [--tokenizer DIR] [--out bench/results/big_workspace] [--keep]

Trees are generated (seeded; nothing downloaded) under ``--base``, outside any repository, and reused between
runs; ``--keep`` leaves them there (default: deleted at the end). A repository has many languages (Python, most
of it, plus TypeScript, JavaScript, Go, Java, Rust, C, text, JSON, Markdown), nested packages, a ``.gitignore``
(``build/``, ``*.log``, ``generated/`` exist and are ignored), a few huge (2-3 MB) and binary files, and is a git
work tree with everything committed. Python modules import functions from modules of the same package mostly,
from anywhere in the repository sometimes, and call them: those call lines are the holes.

Per repository size, with the server's default caps (``index_max_files`` 20,000, ``index_memory_mb`` 200):

1. **cold index** (a fresh process, empty cache): ``WorkspaceIndex`` + ``Retriever`` as the server builds them,
   in the background, one document open: seconds to ready, RSS, files indexed/skipped;
2. **restart** (a fresh process, the persisted index and BM25 windows from 1): seconds to ready, files
   re-parsed and files re-read for the BM25 windows (the rest come from the store);
3. **saved edit** (in process 2, watching): ms from a file written to the index listener seeing it (median of 5);
4. **keystrokes**: the real server (``serve --model demo``) over stdio; the folder is added once the model is
   ready, so the index is cold; keystrokes are typed at 150 ms intervals (didChange + inline request) and the
   time to suggestion is measured while the index fills and again once it is idle: p50/p95 and their ratio;
   the server's RSS at the end;
5. **definition recall @4k**: ``--holes`` call lines whose callee is imported from another file, the hole files
   open (focus), the prompt packed at 4,096 tokens with the Code Llama tokenizer (as ``bench/retrieval.py``):
   share of needed definitions whose header is in a snippet.

Home-like tree (no project markers at the top; a few projects inside): the server started with the tree as
``rootUri`` (and ``$HOME``), with ``rootUri`` = ``file:///``, and with the tree and ``index_broad_roots`` on (the
caps alone hold it): RSS sampled every second, CPU time over the last 10 s of a 40 s window after ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_TOKENIZER = ROOT.parent / "shared" / "data" / "codellama-tokenizer"
if not DEFAULT_TOKENIZER.is_dir():
    DEFAULT_TOKENIZER = Path("/work/shared/data/codellama-tokenizer")

VERBS = "load save parse build render fetch merge split apply check format compute resolve update create".split()
NOUNS = "user order item config token record index cache event report batch schema graph route buffer".split()


# ---------------------------------------------------------------- generating trees


def _py_module(rng: random.Random, mod_id: str, imports: list[tuple[str, str]]) -> tuple[str, list[tuple[int, str]]]:
    """A Python module defining a few functions and a class, calling what it imports.
    Returns the text and its hole lines (1-based line, callee name)."""
    lines = []
    for module, name in imports:
        lines.append(f"from {module} import {name}")
    lines += ["", ""]
    holes = []
    for k in range(rng.randint(3, 6)):
        fname = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}_{mod_id}_{k}"
        lines.append(f"def {fname}(value, limit=10):")
        lines.append(f'    """{fname.replace("_", " ")}: part of module {mod_id}."""')
        lines.append("    total = 0")
        lines.append("    for step in range(limit):")
        lines.append("        total += step * value")
        if imports and rng.random() < 0.7:
            _, callee = rng.choice(imports)
            holes.append((len(lines) + 1, callee))
            lines.append(f"    result = {callee}(total, limit)")
            lines.append("    return result")
        else:
            lines.append("    return total")
        lines += ["", ""]
    cname = f"{rng.choice(NOUNS).title()}{rng.choice(NOUNS).title()}{mod_id.replace('_', '')}"
    lines += [f"class {cname}:", "    def __init__(self, size):", "        self.size = size", "",
              "    def grow(self, extra):", "        self.size += extra", "        return self.size", ""]
    return "\n".join(lines) + "\n", holes


_OTHER = {
    "ts": lambda i: f"export function handle{i}(input: string): number {{\n  return input.length + {i};\n}}\n"
                    f"export class Widget{i} {{\n  size = {i};\n  render(): string {{ return 'w{i}'; }}\n}}\n",
    "js": lambda i: f"function helper{i}(a, b) {{\n  return a + b + {i};\n}}\nmodule.exports = {{ helper{i} }};\n",
    "go": lambda i: f"package svc\n\ntype Server{i} struct{{ port int }}\n\nfunc NewServer{i}() *Server{i} {{\n"
                    f"\treturn &Server{i}{{port: {i}}}\n}}\n",
    "java": lambda i: f"class Account{i} {{\n  int balance() {{ return {i}; }}\n}}\n",
    "rs": lambda i: f"pub struct Point{i} {{ x: i32 }}\n\npub fn norm{i}(p: &Point{i}) -> i32 {{ p.x * {i} }}\n",
    "c": lambda i: f"#include <stdio.h>\nint area{i}(int w, int h) {{\n  return w * h + {i};\n}}\n",
    "md": lambda i: f"# Notes {i}\n\nSome prose about component {i}.\n",
    "json": lambda i: json.dumps({"id": i, "name": f"item{i}", "tags": ["a", "b"]}) + "\n",
    "txt": lambda i: f"plain text file {i}\n" * 3,
}
_OTHER_WEIGHTS = {"ts": 8, "js": 6, "go": 5, "java": 4, "rs": 3, "c": 3, "md": 3, "json": 3, "txt": 2}


def generate_repo(root: Path, n_files: int, seed: int = 0) -> dict:
    """A git repository of about ``n_files`` files (see the module docstring); returns the holes."""
    stamp = root / ".bench-generated.json"
    if stamp.is_file():
        return json.loads(stamp.read_text())
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / ".gitignore").write_text("build/\n*.log\ngenerated/\n.bench-generated.json\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'mono'\n")
    n_py = int(n_files * 0.6)
    per_pkg = 25
    modules = []  # dotted names, in creation order
    for i in range(n_py):
        pkg, rest = divmod(i, per_pkg)
        depth = 1 + (pkg % 4)  # nested 1..4 levels under src/
        parts = [f"p{pkg // 400}", f"g{pkg // 40}", f"s{pkg % 3}"][:depth - 1] + [f"pk{pkg}", f"m{rest}"]
        modules.append(".".join(parts))
    holes = []
    for i, dotted in enumerate(modules):
        pkg = i // per_pkg
        same = modules[pkg * per_pkg:i]  # earlier modules of the same package
        imports = []
        for _ in range(rng.randint(1, 3)):
            source = rng.choice(same) if same and rng.random() < 0.75 else (modules[rng.randrange(i)] if i else None)
            if source is None:
                continue
            imports.append(source)
        rel = Path("src", *dotted.split(".")).with_suffix(".py")
        mod_id = f"{i}"
        pairs = []
        for source in dict.fromkeys(imports):
            defined = _defs_of(root, source)
            if defined:
                pairs.append((source, rng.choice(defined)))
        text, mod_holes = _py_module(rng, mod_id, pairs)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for line, callee in mod_holes:
            source = next(s for s, n in pairs if n == callee)
            holes.append({"file": str(rel), "line": line, "callee": callee,
                          "defined_in": str(Path("src", *source.split(".")).with_suffix(".py"))})
    kinds = list(_OTHER_WEIGHTS)
    weights = [_OTHER_WEIGHTS[k] for k in kinds]
    for j in range(n_files - n_py - 20):
        kind = rng.choices(kinds, weights)[0]
        rel = Path("apps", f"a{j // 300}", f"d{(j // 30) % 10}", f"f{j}.{kind}")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(_OTHER[kind](j))
    for j in range(8):  # ignored: build output, logs, generated code
        for sub, name in (("build", f"out{j}.py"), ("generated", f"gen{j}.py"), ("", f"run{j}.log")):
            (root / sub / name).parent.mkdir(parents=True, exist_ok=True)
            (root / sub / name).write_text(f"def ignored_{j}():\n    pass\n")
    for j in range(2):  # huge and binary files
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / f"table{j}.py").write_text("ROWS = [\n" + "    (1, 2, 3),\n" * 200_000 + "]\n")
        (root / "data" / f"blob{j}.bin").write_bytes(bytes(rng.randrange(256) for _ in range(50_000)))
        (root / "data" / f"image{j}.py").write_bytes(b"\x89PNG\x00\x00" + bytes(range(256)) * 40)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "b@b"}
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", "generated"], check=True, env=env)
    info = {"files": n_files, "seed": seed, "holes": holes}
    stamp.write_text(json.dumps(info))
    return info


_DEFS_CACHE: dict[str, list[str]] = {}


def _defs_of(root: Path, dotted: str) -> list[str]:
    if dotted not in _DEFS_CACHE:
        path = root / Path("src", *dotted.split(".")).with_suffix(".py")
        names = [ln[4:ln.index("(")] for ln in path.read_text().splitlines() if ln.startswith("def ")]
        _DEFS_CACHE[dotted] = names
    return _DEFS_CACHE[dotted]


def generate_home(root: Path, n_files: int, seed: int = 1) -> None:
    """A $HOME-like tree: dot-folders, documents, downloads, a few projects with sources; no marker on top."""
    stamp = root / ".bench-generated"
    if stamp.is_file():
        return
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    root.mkdir(parents=True)
    areas = [".local/share/app", ".config/tool", "Documents/notes", "Downloads/misc", "Pictures/raw",
             "src/projects", "work/archive", ".cache/thing"]
    for i in range(n_files):
        area = areas[i % len(areas)]
        ext = rng.choice(["py", "js", "txt", "md", "json", "c", "go", "dat"])
        rel = Path(area, f"d{i // 2000}", f"e{(i // 100) % 20}", f"file{i}.{ext}")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"def fn_{i}(x):\n    return x + {i}\n" if ext == "py" else f"content {i}\n")
    project = root / "src" / "projects" / "app"
    (project / "app").mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'app'\n")
    (project / "app" / "main.py").write_text("from app.util import helper\n\n\ndef main():\n    return helper()\n")
    (project / "app" / "util.py").write_text("def helper():\n    return 42\n")
    stamp.write_text("ok")


# ---------------------------------------------------------------- child process: index, restart, saved edit


def child_index(root: str, cache: str, focus: str, restart: bool) -> dict:
    import psutil

    from codellama_lsp.config import Settings
    from codellama_lsp.context.retrieval import Retriever
    from codellama_lsp.context.workspace import WorkspaceIndex

    s = Settings()
    t0 = time.perf_counter()
    index = WorkspaceIndex([root], cache, max_files=s.index_max_files, memory_mb=s.index_memory_mb,
                           broad_roots=s.index_broad_roots, focus=[focus], watch=restart)
    retriever = Retriever(index)
    index.start_background()
    index.wait_ready()
    seconds = time.perf_counter() - t0
    out = {"seconds": round(seconds, 2), "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
           "bm25_windows": len(retriever._bm25), **{k: v for k, v in index.summary().items() if k != "notices"},
           "parsed": index.stats["parsed"], "from_cache": index.stats["from_cache"],
           "bm25_read": retriever.stats["read"], "bm25_from_store": retriever.stats["from_store"]}
    if restart:
        import threading

        waits = []
        target = Path(focus)
        original = target.read_text()
        for k in range(5):
            seen = threading.Event()
            name = f"fresh_name_{k}_{os.getpid()}"

            def listener(paths, name=name, seen=seen):
                if index.definitions(name):
                    seen.set()

            index.add_listener(listener)
            start = time.perf_counter()
            target.write_text(original + f"\n\ndef {name}():\n    return {k}\n")
            ok = seen.wait(30)
            waits.append((time.perf_counter() - start) * 1000 if ok else float("inf"))
            index.remove_listener(listener)
        target.write_text(original)
        out["saved_edit_ms"] = round(statistics.median(waits), 1)
        out["saved_edit_ms_all"] = [round(w, 1) for w in waits]
    index.stop()
    return out


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the real server


def _session(workdir: Path, root: Path | None, settings: dict, home: Path | None = None):
    """The demo model's server with its own config/state/cache under ``workdir`` (and ``HOME``, when given);
    ``settings`` are its initializationOptions and its answer to configuration pulls."""
    from codellama_lsp.evaluation.lsp_driver import ServerSession, plain_capabilities, server_env

    env = server_env(workdir)
    if home is not None:
        env["HOME"] = str(home)
    return ServerSession(workdir, model="demo", env=env, root=root, folders=[root] if root else [],
                         caps=plain_capabilities(configuration=True, did_save=True), init_options=settings,
                         settings=settings, ready_timeout_s=1800.0, request_timeout_s=1800.0)


async def keystrokes(session, uri: str, line: int, text: str, count: int, gap_s: float,
                     until=None) -> list[tuple[float, str]]:
    """Type ``count`` characters at the end of ``line`` (0-based), each followed by an inline request;
    returns (ms to answer, index state at the answer)."""
    from lsprotocol import types as lsp

    out = []
    typed = "    value = compute_total(items, limit)  # accumulate"
    version = 100
    col0 = len(text.split("\n")[line])
    col = col0
    for k in range(count):
        if until is not None and until():
            break
        ch = typed[k % len(typed)]
        if k % len(typed) == 0 and k:
            # start the line again: remove what was typed
            version += 1
            session.edit(uri, version, line, col0, col, "")
            col = col0
        version += 1
        session.edit(uri, version, line, col, col, ch)
        col += 1
        start = time.perf_counter()
        await session.inline(uri, line, col, trigger=lsp.InlineCompletionTriggerKind.Automatic)
        out.append(((time.perf_counter() - start) * 1000, session.notes.index_state().get("state", "")))
        await asyncio.sleep(gap_s)  # human typing pace: the index works in the gaps
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))], 1)


async def keystroke_run(repo: Path, focus: Path, workdir: Path, count: int) -> dict:
    """Cold index vs idle index, as the server sees them."""
    import psutil
    from lsprotocol import types as lsp

    async with _session(workdir, None, {"maxTokens": 8}) as c:
        notes = c.notes
        text = focus.read_text()
        uri = focus.as_uri()
        c.open(uri, text)
        line = next(i for i, ln in enumerate(text.split("\n")) if ln.startswith("    return"))
        await keystrokes(c, uri, line, text, 5, 0.05)  # warm the model's paths before measuring
        mark = len(notes.statuses)
        t0 = time.perf_counter()
        c.client.workspace_did_change_workspace_folders(lsp.DidChangeWorkspaceFoldersParams(
            event=lsp.WorkspaceFoldersChangeEvent(added=[lsp.WorkspaceFolder(uri=repo.as_uri(), name=repo.name)],
                                                  removed=[])))
        await notes.wait_status(lambda s: (s.get("index") or {}).get("state") == "indexing", after=mark, timeout=1800)

        def ready() -> bool:
            return any((s.get("index") or {}).get("state") == "ready" and (s.get("index") or {}).get("files")
                       for s in notes.statuses[mark:])

        pid = c.pid
        s0, m0 = sched_split(pid), len(notes.statuses)
        cold = await keystrokes(c, uri, line, text, count, 0.15, until=ready)
        s1, m1 = sched_split(pid), len(notes.statuses)
        await notes.wait_for(ready, timeout=1800)
        ready_s = time.perf_counter() - t0
        s2, m2 = sched_split(pid), len(notes.statuses)
        idle = await keystrokes(c, uri, line, text, max(len(cold), 20), 0.15)
        s3, m3 = sched_split(pid), len(notes.statuses)
        during = [ms for ms, state in cold if state == "indexing"]
        idle_ms = [ms for ms, _ in idle]
        rss = psutil.Process(c.pid).memory_info().rss
        statuses = list(notes.statuses)
    out = {"server_index_ready_s": round(ready_s, 1), "during_cold_n": len(during),
           "during_cold_p50_ms": pct(during, 50), "during_cold_p95_ms": pct(during, 95),
           "idle_n": len(idle_ms), "idle_p50_ms": pct(idle_ms, 50), "idle_p95_ms": pct(idle_ms, 95),
           "server_rss_mb": round(rss / 2**20)}
    if during and idle_ms:
        out["p50_ratio"] = round(pct(during, 50) / pct(idle_ms, 50), 2)
        out["p95_ratio"] = round(pct(during, 95) / pct(idle_ms, 95), 2)
    # what the server says of each answered request: prompt tokens prefilled (not reused from the KV cache), ms in
    # the model, and ms outside it (retrieval, prompt assembly, queueing): medians per phase
    for name, part in (("cold", statuses[m0:m1]), ("idle", statuses[m2:m3])):
        answered = [st for st in part if isinstance(st.get("total_ms"), (int, float)) and "prefill_tokens" in st]
        if answered:
            out[f"server_{name}"] = {
                "n": len(answered),
                "prefill_tokens_p50": statistics.median(st["prefill_tokens"] for st in answered),
                "prefill_tokens_mean": round(statistics.mean(st["prefill_tokens"] for st in answered), 1),
                "model_ms_p50": round(statistics.median(st.get("generation_ms") or 0 for st in answered), 1),
                "outside_model_ms_p50": round(statistics.median(
                    st["total_ms"] - (st.get("generation_ms") or 0) for st in answered), 1),
                "total_ms_p50": round(statistics.median(st["total_ms"] for st in answered), 1),
            }
    if s0 and s1 and s2 and s3 and cold and idle:
        # per keystroke, the server's normal-priority threads: time on a CPU (the work the code does) and time
        # runnable but waiting for a CPU (contention: other processes' load, and the niced indexing thread)
        out["per_keystroke_cold"] = {"cpu_ms": round((s1[0] - s0[0]) * 1000 / len(cold), 1),
                                     "wait_ms": round((s1[1] - s0[1]) * 1000 / len(cold), 1),
                                     "indexer_cpu_ms": round((s1[2] - s0[2]) * 1000 / len(cold), 1),
                                     "n": len(cold)}
        out["per_keystroke_idle"] = {"cpu_ms": round((s3[0] - s2[0]) * 1000 / len(idle), 1),
                                     "wait_ms": round((s3[1] - s2[1]) * 1000 / len(idle), 1),
                                     "n": len(idle)}  # the indexing thread has ended: not counted
    return out


def sched_split(pid: int) -> tuple[float, float, float, float] | None:
    """(on-CPU s, run-queue wait s) of a process's normal-priority threads, then of its niced ones (the
    indexer), from /proc/<pid>/task/*/schedstat; None where that is unavailable."""
    out = [0.0, 0.0, 0.0, 0.0]
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                on_cpu, waiting = (int(x) / 1e9 for x in fh.read().split()[:2])
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                nice = int(fh.read().rsplit(")", 1)[1].split()[16])
        except (OSError, ValueError, IndexError):
            continue
        base = 2 if nice > 0 else 0
        out[base] += on_cpu
        out[base + 1] += waiting
    return tuple(out)


async def home_run(tree: Path, workdir: Path, label: str, root: Path, settings: dict, open_file: Path,
                   home: Path, window_s: float = 40.0) -> dict:
    """RSS and CPU of the server on a broad root: sampled every second for ``window_s`` after the index is ready."""
    import psutil
    from lsprotocol import types as lsp

    t0 = time.perf_counter()
    async with _session(workdir, root, {"maxTokens": 8, **settings}, home=home) as c:
        proc = psutil.Process(c.pid)
        c.open(open_file.as_uri(), open_file.read_text())
        peak = 0
        samples = []

        def index_ready() -> bool:
            info = c.notes.index_state()
            return info.get("state") == "ready" and info.get("files", 0) > 0

        while not index_ready():
            peak = max(peak, proc.memory_info().rss)
            if time.perf_counter() - t0 > 1800:
                break
            with contextlib.suppress(TimeoutError):
                await c.notes.wait_for(index_ready, timeout=1.0)
        ready_s = time.perf_counter() - t0
        cpu_start = None
        for second in range(int(window_s)):
            await asyncio.sleep(1.0)
            rss = proc.memory_info().rss
            peak = max(peak, rss)
            samples.append(round(rss / 2**20))
            if second == int(window_s) - 11:
                times = proc.cpu_times()
                cpu_start = times.user + times.system
        times = proc.cpu_times()
        cpu_last10 = (times.user + times.system) - (cpu_start or 0)
        info = c.notes.index_state()
    return {"case": label, "index_ready_s": round(ready_s, 1), "peak_rss_mb": round(peak / 2**20),
            "rss_last_mb": samples[-1] if samples else None, "cpu_s_last_10s": round(cpu_last10, 2),
            "files": info.get("files"), "skipped": info.get("skipped"), "stopped_early": info.get("stopped_early"),
            "scope": info.get("scope"), "shown": c.notes.shown[:2]}


# ---------------------------------------------------------------- recall


def recall(repo: Path, holes: list[dict], n: int, tokenizer_dir: Path, seed: int = 0) -> dict:
    from codellama_lsp.config import Settings
    from codellama_lsp.context.prompt import build_prompt
    from codellama_lsp.context.retrieval import Retriever
    from codellama_lsp.context.workspace import WorkspaceIndex
    from codellama_lsp.engine.templates import template_for
    from codellama_lsp.engine.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    template = template_for(tokenizer, model_name="codellama/CodeLlama-7b-hf")
    rng = random.Random(seed)
    chosen = rng.sample(holes, min(n, len(holes)))
    focus = [str(repo / h["file"]) for h in chosen]
    s = Settings()
    cache = tempfile.mkdtemp(prefix="bench-bigws-recall-")
    index = WorkspaceIndex([repo], cache, max_files=s.index_max_files, memory_mb=s.index_memory_mb,
                           broad_roots=s.index_broad_roots, focus=focus, watch=False)
    retriever = Retriever(index)
    index.start_background()
    index.wait_ready()
    hits = 0
    settings = Settings(context_tokens=4096)
    for h in chosen:
        path = repo / h["file"]
        text = path.read_text()
        lines = text.split("\n")
        code = lines[h["line"] - 1]
        indent = code[: len(code) - len(code.lstrip())]
        offset = sum(len(ln) + 1 for ln in lines[: h["line"] - 1]) + len(indent)
        doc = text[:offset] + text[offset + len(code) - len(indent):]
        plan = build_prompt(text=doc, offset=offset, path=str(path), language_id="python", template=template,
                            tokenizer=tokenizer, settings=settings, retriever=retriever)
        header = f"def {h['callee']}("
        want = h["defined_in"]
        if any(sn.path == want and header in sn.text for sn in (plan.snippets if plan else [])):
            hits += 1
    info = index.summary()
    index.stop()
    shutil.rmtree(cache, ignore_errors=True)
    return {"holes": len(chosen), "definition_recall_4k": round(hits / max(len(chosen), 1), 4),
            "indexed_files": info["files"]}


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--home-files", type=int, default=200_000)
    parser.add_argument("--base", type=Path, default=Path(tempfile.gettempdir()) / "codellama-big-workspace")
    parser.add_argument("--holes", type=int, default=40)
    parser.add_argument("--keystrokes", type=int, default=60, help="at most this many during the cold index")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "big_workspace")
    parser.add_argument("--keep", action="store_true", help="keep the generated trees")
    parser.add_argument("--only-keystrokes", action="store_true",
                        help="only the keystroke measurement (4) for --sizes; no home-like tree")
    parser.add_argument("--child", nargs=4, metavar=("ROOT", "CACHE", "FOCUS", "RESTART"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, cache, focus, restart = args.child
        print(json.dumps(child_index(root, cache, focus, restart == "1")))
        return 0
    import psutil

    args.base.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    report: dict = {
        "benchmark": "big workspaces",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/big_workspace.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, "
                   f"{round(psutil.virtual_memory().total / 2**30)} GiB, Python {platform.python_version()}",
        "load_average_at_start": [round(x, 1) for x in load_before],
        "repos": [], "home": [],
    }
    for size in args.sizes:
        repo = args.base / f"repo-{size}"
        t0 = time.perf_counter()
        info = generate_repo(repo, size)
        gen_s = time.perf_counter() - t0
        focus = repo / info["holes"][0]["file"]
        if args.only_keystrokes:
            workdir = Path(tempfile.mkdtemp(prefix="bench-bigws-server-"))
            row = {"size": size, "keystrokes": asyncio.run(keystroke_run(repo, focus, workdir, args.keystrokes)),
                   "load_average": [round(x, 1) for x in os.getloadavg()]}
            shutil.rmtree(workdir, ignore_errors=True)
            report["repos"].append(row)
            print(json.dumps(row), flush=True)
            continue
        cache = Path(tempfile.mkdtemp(prefix="bench-bigws-cache-"))
        cold = run_child(str(repo), str(cache), str(focus), "0")
        warm = run_child(str(repo), str(cache), str(focus), "1")
        shutil.rmtree(cache, ignore_errors=True)
        workdir = Path(tempfile.mkdtemp(prefix="bench-bigws-server-"))
        keys = asyncio.run(keystroke_run(repo, focus, workdir, args.keystrokes))
        shutil.rmtree(workdir, ignore_errors=True)
        rec = recall(repo, info["holes"], args.holes, args.tokenizer) if args.tokenizer.is_dir() else {}
        row = {"size": size, "generate_s": round(gen_s, 1), "cold": cold, "restart": warm, "keystrokes": keys,
               "recall": rec, "load_average": [round(x, 1) for x in os.getloadavg()]}
        report["repos"].append(row)
        print(json.dumps(row), flush=True)
    if args.home_files and not args.only_keystrokes:
        tree = args.base / f"home-{args.home_files}"
        generate_home(tree, args.home_files)
        open_file = tree / "src/projects/app/app/main.py"
        for label, root, settings in (("rootUri = the home-like tree ($HOME)", tree, {}),
                                      ("rootUri = file:///", Path("/"), {}),
                                      ("home-like tree, index_broad_roots = true", tree, {"indexBroadRoots": True})):
            workdir = Path(tempfile.mkdtemp(prefix="bench-bigws-home-"))
            row = asyncio.run(home_run(tree, workdir, label, root, settings, open_file, tree))
            shutil.rmtree(workdir, ignore_errors=True)
            row["load_average"] = [round(x, 1) for x in os.getloadavg()]
            report["home"].append(row)
            print(json.dumps(row), flush=True)
    if not args.keep:
        shutil.rmtree(args.base, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown_keystrokes(report) if args.only_keystrokes else markdown(report)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


def markdown_keystrokes(r: dict) -> str:
    out = [f"# Big workspaces: keystrokes during the cold index\n\n`{r['command']}` — {r['date']}, {r['machine']}; "
           f"load average at start {r['load_average_at_start']} (shared machine).\n",
           "| files | server index ready s | p50/p95 ms during cold index (n) | idle (n) | ratio p50/p95 | "
           "per keystroke cold: CPU / waiting for a CPU / indexer CPU ms | idle: CPU / waiting ms | "
           "server p50 cold: prefill tokens / model ms / outside model ms | idle | "
           "server RSS MB | load average after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["repos"]:
        k = row["keystrokes"]
        pc, pi = k.get("per_keystroke_cold") or {}, k.get("per_keystroke_idle") or {}
        out.append(f"| {row['size']:,} | {k['server_index_ready_s']} | {k.get('during_cold_p50_ms')}/"
                   f"{k.get('during_cold_p95_ms')} ({k.get('during_cold_n')}) | {k.get('idle_p50_ms')}/"
                   f"{k.get('idle_p95_ms')} ({k.get('idle_n')}) | {k.get('p50_ratio')}/{k.get('p95_ratio')} | "
                   f"{pc.get('cpu_ms')} / {pc.get('wait_ms')} / {pc.get('indexer_cpu_ms')} | "
                   f"{pi.get('cpu_ms')} / {pi.get('wait_ms')} | {_server_p50(k.get('server_cold'))} | "
                   f"{_server_p50(k.get('server_idle'))} | {k.get('server_rss_mb')} | {row['load_average']} |")
    return "\n".join(out) + "\n"


def _server_p50(part: dict | None) -> str:
    if not part:
        return "-"
    return f"{part['prefill_tokens_p50']} / {part['model_ms_p50']} / {part['outside_model_ms_p50']}"


def markdown(r: dict) -> str:
    out = [f"# Big workspaces\n\n`{r['command']}` — {r['date']}, {r['machine']}; load average at start "
           f"{r['load_average_at_start']} (the 2 cores were shared with other developers' jobs: absolute times are "
           "noisy, ratios were measured within one run).\n",
           "Server defaults: index_max_files 20,000, index_memory_mb 200; demo model for keystrokes (maxTokens 8, "
           "150 ms between keystrokes).\n",
           "| files | cold index s | RSS MB (index) | indexed / skipped | restart s (re-parsed / re-read) | saved edit ms | "
           "keystroke p50/p95 ms during cold index (n) | idle (n) | ratio p50/p95 | server RSS MB | recall@4k |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["repos"]:
        c, w, k, rec = row["cold"], row["restart"], row["keystrokes"], row["recall"]
        skipped = sum(c["skipped"].values())
        out.append(
            f"| {row['size']:,} | {c['seconds']} | {c['rss_mb']} | {c['files']:,} / {skipped:,} | "
            f"{w['seconds']} ({w['parsed']} / {w.get('bm25_read')}) | {w.get('saved_edit_ms')} | "
            f"{k.get('during_cold_p50_ms')}/{k.get('during_cold_p95_ms')} ({k.get('during_cold_n')}) | "
            f"{k.get('idle_p50_ms')}/{k.get('idle_p95_ms')} ({k.get('idle_n')}) | "
            f"{k.get('p50_ratio')}/{k.get('p95_ratio')} | {k.get('server_rss_mb')} | "
            f"{rec.get('definition_recall_4k')} ({rec.get('holes')} holes) |")
    out.append("\nSkipped, by reason (cold index): " + "; ".join(
        f"{row['size']:,}: " + ", ".join(f"{k} {v:,}" for k, v in row["cold"]["skipped"].items())
        for row in r["repos"]))
    if r["home"]:
        out += ["\n## Home-like tree and `/`\n",
                "| case | index ready s | peak RSS MB | RSS at end MB | CPU s in the last 10 s | files | "
                "stopped early | scope |", "|---|---|---|---|---|---|---|---|"]
        for h in r["home"]:
            out.append(f"| {h['case']} | {h['index_ready_s']} | {h['peak_rss_mb']} | {h['rss_last_mb']} | "
                       f"{h['cpu_s_last_10s']} | {h['files']} | {h['stopped_early'] or '-'} | "
                       f"{', '.join(h['scope'] or [])} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
