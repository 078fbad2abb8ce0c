#!/usr/bin/env python3
"""Where the server's own time per inline request goes, apart from the model: a deterministic profile.

    python bench/profile_overhead.py [--document FILE] [--positions 20] [--tokenizer DIR] [--top 25]

In-process, no server and no model: at ``--positions`` line ends of ``--document`` (default: this repository's
``codellama_lsp/lsp/server.py``), what the server does around the model for an invoked inline request —
``CompletionService.build_plan`` (syntax decision, repository retrieval, packing, tokenizing, token healing) and
the clean-up (``CompletionService.clean``) of a first answer and three alternatives — under cProfile. The answers
are taken from the document itself, so they look like a model's: the next two lines (a right answer followed by
an overrun), the next line alone, the next line dedented to column 0 (a wrong dedent, which the Python check cuts
back), and an unclosed call. The tokenizer is the Code Llama one (``../shared/data/codellama-tokenizer``, the
tiny test model's); repository context comes from an index of this checkout, built before the profile starts.

Prints, per request, the cumulative milliseconds and calls of the top functions of the package (plus the
tokenizer's ``encode``). Numbers are cProfile's, so slower than unprofiled code, but comparable between commits:
run it from another checkout with ``PYTHONPATH=<checkout> python bench/profile_overhead.py`` (older layouts,
``codellama_lsp/completion.py``, are found too). ``bench/server_overhead.py`` measures the real server.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path and not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("CODELLAMA_LSP_SHARED", ROOT.parent / "shared"))


def _service_class():
    try:  # the older layout first: an editable install would find a missing features/ in its own checkout
        from codellama_lsp.completion import CompletionService
    except ImportError:
        from codellama_lsp.features.completion import CompletionService
    return CompletionService


def document_answers(lines: list[str], line: int) -> list[str]:
    """A first answer and three alternatives for a cursor at the end of ``lines[line]``, taken from the document:
    the next two lines (a right answer and an overrun), the next line, it dedented to column 0, an open call."""
    nxt, after = (lines[line + 1:line + 3] + ["", ""])[:2]
    return ["\n" + nxt + "\n" + after, "\n" + nxt, "\n" + nxt.lstrip(), " foo(bar, "]


def token_answers(tokenizer, rng: random.Random) -> list[str]:
    """Four single random vocabulary tokens: what the tiny random model answers in ``bench/server_overhead.py``
    (``maxTokens`` 1), mostly rejected by the clean-up after every check it has."""
    return [tokenizer.decode([rng.randrange(3, 32000)]) for _ in range(4)]


def positions(text: str, count: int) -> list[int]:
    """Line numbers of non-blank lines spread over the file (``bench/server_overhead.py`` picks the same)."""
    lines = text.split("\n")
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    step = max(1, len(candidates) // count)
    return candidates[::step][:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--document", default=str(ROOT / "codellama_lsp" / "lsp" / "server.py"))
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--tokenizer", default=str(SHARED / "data" / "codellama-tokenizer"),
                        help="a directory with tokenizer.json (the tiny test model's: Code Llama)")
    parser.add_argument("--context-tokens", type=int, default=1024, help="as bench/server_overhead.py")
    parser.add_argument("--answers", choices=("tokens", "document"), default="tokens",
                        help="tokens: four random single tokens per request, like the tiny model in "
                        "server_overhead.py; document: the text that follows the cursor (see document_answers)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    from codellama_lsp.config import Settings
    from codellama_lsp.context.retrieval import Retriever
    from codellama_lsp.context.syntax import DocumentTrees
    from codellama_lsp.context.workspace import WorkspaceIndex
    from codellama_lsp.engine.templates import template_for
    from codellama_lsp.engine.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(Path(args.tokenizer))
    template = template_for(tokenizer, model_name="codellama/CodeLlama-7b-hf")
    backend = SimpleNamespace(tokenizer=tokenizer, template=template, info=SimpleNamespace(context_length=16384))
    engine = SimpleNamespace(backend=backend)
    cache = tempfile.mkdtemp(prefix="profile-overhead-")
    package = Path(sys.modules["codellama_lsp"].__file__).parent.parent
    index = WorkspaceIndex([package], cache, watch=False).start()  # indexes in this thread
    retriever = Retriever(index)
    if hasattr(retriever, "warm"):
        retriever.warm()
    trees = DocumentTrees()
    service = _service_class()(engine, Settings(context_tokens=args.context_tokens), retriever=retriever, trees=trees)

    document = Path(args.document).resolve()
    text = document.read_text(encoding="utf-8")
    uri = document.as_uri()
    trees.update(uri, text, "python")
    lines = text.split("\n")
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln) + 1)

    rng = random.Random(0)

    def request(line: int) -> None:
        offset = starts[line] + len(lines[line])
        plan = service.build_plan(text, offset, uri=uri, path=str(document), language_id="python",
                                  open_documents={uri: text}, invoked=True)
        if plan is None:
            return
        answers = token_answers(tokenizer, rng) if args.answers == "tokens" else document_answers(lines, line)
        for answer in answers:
            service.clean(answer, text[:offset], text[offset:], plan)

    chosen = positions(text, args.positions + 5)
    for line in chosen[:5]:  # warm-up, as the server bench: first parse, first retrieval, first encodes
        request(line)
    measured = chosen[5:]
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for line in measured:
        request(line)
    profiler.disable()
    wall = (time.perf_counter() - started) * 1000 / len(measured)
    index.stop()

    stats = pstats.Stats(profiler)
    rows = []
    for (filename, lineno, name), (_, calls, _, cumulative, _) in stats.stats.items():
        if "codellama_lsp" not in filename:
            continue
        module = filename[filename.rfind("codellama_lsp"):].removesuffix(".py").replace(os.sep, ".")
        rows.append((cumulative, calls, f"{module}.{name}"))
    rows.sort(reverse=True)
    n = len(measured)
    try:
        load = "%.1f / %.1f / %.1f" % os.getloadavg()
    except OSError:
        load = "n/a"
    print(f"# {n} requests at line ends of {document.name} ({len(lines)} lines), 4 answers each ({args.answers}); "
          f"package {package}; load average {load}; profiled wall {wall:.1f} ms per request\n")
    print("| function | cumulative ms per request | calls per request |\n|---|---|---|")
    shown = set()
    for cumulative, calls, name in rows[: args.top]:
        shown.add(name)
        print(f"| `{name}` | {cumulative * 1000 / n:.1f} | {calls / n:.1f} |")
    for cumulative, calls, name in rows:
        if name.endswith("tokenizer.encode") and name not in shown:
            print(f"| `{name}` | {cumulative * 1000 / n:.1f} | {calls / n:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
