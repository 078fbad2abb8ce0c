#!/usr/bin/env python3
"""Definition recall of the repository context, against CrossCodeEval's BM25-windows baseline.

    python bench/retrieval.py [--packages click jinja2 rich pygls] [--holes 120] [--budgets 1024 4096 16384]
                              [--tokenizer DIR] [--out bench/results/retrieval]

Repositories: the source of packages installed in the venv (real open-source code, available offline).
Holes: lines that use a name defined in *another* file of the same repository (resolved with ``ast`` through the
file's imports, following re-exports in package ``__init__`` files). The cursor is put at the start of the line's
code and the rest of the line is removed, as when a developer is about to type it (CrossCodeEval's line holes);
the file's prefix and suffix stay.

For each hole and whole-prompt budget (1k / 4k / 16k tokens, counted with the Code Llama tokenizer), the prompt
is packed twice with the same packer (``build_prompt``: same prefix/suffix/context split), once with this
engine's ``Retriever`` and once with a BM25 retriever over sliding windows (20 lines, stride 10, query = the 20
lines above the cursor, current file excluded) — CrossCodeEval's baseline. A needed definition counts as present
when a snippet of its file shows its header line (``def name``/``class name``/``NAME =``). Reported:
hole recall (share of holes with *all* needed definitions present) and definition recall (share of needed
definitions present).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import functools
import json
import os
import platform
import random
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codellama_lsp.config import Settings  # noqa: E402
from codellama_lsp.context.prompt import Snippet, build_prompt  # noqa: E402
from codellama_lsp.context.retrieval import BM25Windows, Retriever, split_terms  # noqa: E402
from codellama_lsp.context.workspace import WorkspaceIndex  # noqa: E402
from common import codellama_tokenizer, save_record  # noqa: E402

DEFAULT_TOKENIZER = ROOT.parent / "shared" / "data" / "codellama-tokenizer"
DEFAULT_PACKAGES = ["click", "jinja2", "rich", "pygls"]


# ---------------------------------------------------------------- ground truth with ast


def module_path(root: Path, package: str, module: str, level: int, current: Path) -> Path | None:
    """The file of ``module`` (absolute or relative import) inside the repository, if it is one of its files."""
    if level:
        base = current.parent
        for _ in range(level - 1):
            base = base.parent
        parts = module.split(".") if module else []
    else:
        parts = module.split(".") if module else []
        if not parts or parts[0] != package:
            return None
        base, parts = root, parts[1:]
    target = base.joinpath(*parts) if parts else base
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.is_file() and root in candidate.parents:
            return candidate
    return None


class Repo:
    def __init__(self, root: Path, package: str):
        self.root, self.package = root, package
        self._trees: dict[Path, ast.Module | None] = {}

    def tree(self, path: Path) -> ast.Module | None:
        if path not in self._trees:
            try:
                self._trees[path] = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, OSError):
                self._trees[path] = None
        return self._trees[path]

    def top_level(self, path: Path) -> dict[str, int]:
        """Top-level definitions of a file: name -> header line (1-based)."""
        out: dict[str, int] = {}
        tree = self.tree(path)
        for node in tree.body if tree else []:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out[node.name] = node.lineno
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        out[t.id] = node.lineno
        return out

    def bindings(self, path: Path) -> tuple[dict[str, tuple[Path, str]], dict[str, Path]]:
        """Names imported from repository files (local -> (file, name)) and module aliases (local -> file)."""
        names: dict[str, tuple[Path, str]] = {}
        modules: dict[str, Path] = {}
        tree = self.tree(path)
        for node in ast.walk(tree) if tree else []:
            if isinstance(node, ast.ImportFrom):
                target = module_path(self.root, self.package, node.module or "", node.level, path)
                for alias in node.names:
                    local = alias.asname or alias.name
                    sub = module_path(self.root, self.package, f"{node.module}.{alias.name}" if node.module
                                      else alias.name, node.level, path)
                    if sub is not None and sub != target:
                        modules[local] = sub
                    elif target is not None:
                        names[local] = (target, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    target = module_path(self.root, self.package, alias.name, 0, path)
                    if target is not None and alias.asname:
                        modules[alias.asname] = target
        return names, modules

    def resolve(self, file: Path, name: str, depth: int = 0) -> tuple[Path, str, int] | None:
        """Where ``name`` as seen in ``file`` is defined (following re-exports), as (file, name, line)."""
        defs = self.top_level(file)
        names, _ = self.bindings(file)
        if name in names and depth < 4:
            target, original = names[name]
            return self.resolve(target, original, depth + 1)
        if name in defs:
            return file, name, defs[name]
        return None


def holes_of(repo: Repo, path: Path) -> list[tuple[int, list[tuple[Path, str, int]]]]:
    """(line, needed definitions) for each line that uses a name defined in another repository file."""
    tree = repo.tree(path)
    if tree is None:
        return []
    names, modules = repo.bindings(path)
    import_lines = {n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))}
    needed: dict[int, set[tuple[Path, str, int]]] = {}
    for node in ast.walk(tree):
        line = getattr(node, "lineno", None)
        if line is None or line in import_lines:
            continue
        found = None
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names:
            target, original = names[node.id]
            found = repo.resolve(target, original)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            found = repo.resolve(modules[node.value.id], node.attr)
        if found is not None and found[0] != path:
            needed.setdefault(line, set()).add(found)
    return [(line, sorted(defs)) for line, defs in sorted(needed.items())]


# ---------------------------------------------------------------- the baseline retriever


class BM25Baseline:
    """CrossCodeEval's retrieval baseline: BM25 over 20-line windows (stride 10), query = last 20 prefix lines."""

    def __init__(self, index: WorkspaceIndex):
        self.index = index
        self.bm25 = BM25Windows()
        for path in index.files():
            self.bm25.set_file(path, Path(path).read_text(encoding="utf-8", errors="replace"))

    def snippets(self, path, text, offset, *, budget_tokens, count_tokens, render=None, **_):
        lines = text[:offset].split("\n")
        query = split_terms("\n".join(lines[-20:]))
        real = os.path.realpath(path)
        out, used = [], 0
        for _, w in self.bm25.search(query, k=120, exclude=lambda w: w.path == real):
            file_lines = _lines(w.path)
            rel = os.path.relpath(w.path, self.index.root_of(w.path)).replace(os.sep, "/")
            snip = Snippet(rel, w.start_line, w.end_line, "\n".join(file_lines[w.start_line - 1:w.end_line]),
                           "bm25 window")
            snip.tokens = count_tokens(render(snip) if render else snip.text)
            if used + snip.tokens > budget_tokens:
                continue
            used += snip.tokens
            out.append(snip)
        return list(reversed(out))  # best window nearest the cursor, as the engine does


@functools.lru_cache(maxsize=None)
def _lines(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8", errors="replace").split("\n")


# ---------------------------------------------------------------- measuring


def present(snippets: list[Snippet], root: Path, need: tuple[Path, str, int], header: str) -> bool:
    rel = os.path.relpath(need[0], root).replace(os.sep, "/")
    for s in snippets:
        if s.path == rel and s.start_line <= need[2] <= s.end_line and header in s.text:
            return True
    return False


def run_package(package: str, site: Path, tokenizer, template, budgets: list[int], holes_per_repo: int,
                seed: int) -> dict:
    root = (site / package).resolve()
    repo = Repo(root, package)
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    all_holes = [(f, line, need) for f in files for line, need in holes_of(repo, f)]
    rng = random.Random(seed)
    chosen = sorted(rng.sample(all_holes, min(holes_per_repo, len(all_holes))), key=lambda h: (str(h[0]), h[1]))
    cache = tempfile.mkdtemp(prefix="bench-retrieval-")
    t0 = time.perf_counter()
    index = WorkspaceIndex([root], cache, watch=False).start()
    engine = Retriever(index).warm()
    baseline = BM25Baseline(index)
    index_s = time.perf_counter() - t0
    results = {b: {"engine": [0, 0, 0], "baseline": [0, 0, 0], "engine_ms": []} for b in budgets}
    for path, line, need in chosen:
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        code = lines[line - 1]
        indent = code[: len(code) - len(code.lstrip())]
        offset = sum(len(ln) + 1 for ln in lines[: line - 1]) + len(indent)
        doc = text[:offset] + text[offset + len(code) - len(indent):]  # the rest of the line is the hole
        headers = {n: _lines(str(n[0]))[n[2] - 1].strip() for n in need}
        for budget in budgets:
            settings = Settings(context_tokens=budget)
            for name, retriever in (("engine", engine), ("baseline", baseline)):
                start = time.perf_counter()
                plan = build_prompt(text=doc, offset=offset, path=str(path), language_id="python",
                                    template=template, tokenizer=tokenizer, settings=settings, retriever=retriever)
                if name == "engine":
                    results[budget]["engine_ms"].append((time.perf_counter() - start) * 1000)
                snippets = plan.snippets if plan else []
                hits = [present(snippets, root, n, headers[n]) for n in need]
                row = results[budget][name]
                row[0] += all(hits)
                row[1] += sum(hits)
                row[2] += len(hits)
    index.stop()
    out = {"package": package, "files": len(index.files()), "holes_available": len(all_holes),
           "holes": len(chosen), "index_seconds": round(index_s, 2), "budgets": {}}
    for budget in budgets:
        r = results[budget]
        ms = sorted(r["engine_ms"])
        out["budgets"][str(budget)] = {
            name: {"hole_recall": round(r[name][0] / max(len(chosen), 1), 4),
                   "definition_recall": round(r[name][1] / max(r[name][2], 1), 4),
                   "definitions": r[name][2]}
            for name in ("engine", "baseline")
        }
        out["budgets"][str(budget)]["engine_p50_ms"] = round(ms[len(ms) // 2], 2) if ms else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=DEFAULT_PACKAGES)
    parser.add_argument("--holes", type=int, default=120, help="holes sampled per repository")
    parser.add_argument("--budgets", nargs="+", type=int, default=[1024, 4096, 16384])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval")
    args = parser.parse_args()
    tokenizer, template = codellama_tokenizer(args.tokenizer)
    site = Path(sysconfig.get_paths()["purelib"])
    started = time.perf_counter()
    repos = []
    for package in args.packages:
        if not (site / package).is_dir():
            print(f"skipping {package}: not installed", file=sys.stderr)
            continue
        result = run_package(package, site, tokenizer, template, args.budgets, args.holes, args.seed)
        repos.append(result)
        print(json.dumps(result), flush=True)
    summary = {}
    for budget in map(str, args.budgets):
        summary[budget] = {}
        for name in ("engine", "baseline"):
            holes = sum(r["holes"] for r in repos)
            summary[budget][name] = {
                "hole_recall": round(sum(r["budgets"][budget][name]["hole_recall"] * r["holes"] for r in repos)
                                     / max(holes, 1), 4),
                "definition_recall": round(
                    sum(r["budgets"][budget][name]["definition_recall"] * r["budgets"][budget][name]["definitions"]
                        for r in repos) / max(sum(r["budgets"][budget][name]["definitions"] for r in repos), 1), 4),
            }
    report = {
        "benchmark": "retrieval definition recall",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/retrieval.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
        "tokenizer": str(args.tokenizer.name),
        "seconds": round(time.perf_counter() - started, 1),
        "repositories": repos,
        "summary": summary,
    }
    save_record(args.out.with_suffix(".json"), report, markdown, indent=2)
    return 0


def markdown(report: dict) -> str:
    lines = [
        "# Repository context: definition recall",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']}",
        "- holes: lines using a name defined in another file of the repository (ground truth from `ast`); the",
        "  rest of the line is removed and the cursor put at its start. A definition counts when a snippet of its",
        "  file in the packed prompt shows its header line. *hole recall* = holes with all needed definitions.",
        "- engine = `context.retrieval.Retriever`; baseline = BM25 over 20-line windows, stride 10, query = the 20",
        "  lines above the cursor (CrossCodeEval's retrieval baseline); both packed by `build_prompt` with the",
        "  same budget split, counted with the Code Llama tokenizer.",
        "",
        "| budget (tokens) | engine hole recall | baseline hole recall | engine definition recall | baseline definition recall |",
        "|---|---|---|---|---|",
    ]
    for budget, row in report["summary"].items():
        lines.append(f"| {budget} | {row['engine']['hole_recall']:.1%} | {row['baseline']['hole_recall']:.1%} | "
                     f"{row['engine']['definition_recall']:.1%} | {row['baseline']['definition_recall']:.1%} |")
    lines += ["", "Per repository (hole recall, engine / baseline):", "",
              "| repository | files | holes | " + " | ".join(f"{b}" for b in report["summary"]) + " |",
              "|---|---|---|" + "---|" * len(report["summary"])]
    for r in report["repositories"]:
        cells = [f"{r['budgets'][b]['engine']['hole_recall']:.1%} / {r['budgets'][b]['baseline']['hole_recall']:.1%}"
                 for b in report["summary"]]
        lines.append(f"| {r['package']} | {r['files']} | {r['holes']} of {r['holes_available']} | " +
                     " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
