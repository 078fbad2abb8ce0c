"""What several bench scripts share: where results go, the tests' tiny model, the Code Llama tokenizer and
template, a parse check, and writing a run's record (JSON, with its markdown beside it).

Driving the server is elsewhere: ``codellama_lsp/evaluation/lsp_driver.py`` (the harness) and
``bench/raw_lsp.py`` (raw frames).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def tiny_model(dest: Path) -> Path:
    """The tests' seeded tiny checkpoint (real Code Llama tokenizer from ../shared, random weights)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_llama

    return build_tiny_llama(dest)


def codellama_tokenizer(path: Path):
    """(tokenizer, template) for Code Llama from the tokenizer directory ``path``; exits (status 2, a line on
    stderr) when it holds no tokenizer.json."""
    if not (path / "tokenizer.json").is_file():
        print(f"no tokenizer.json in {path}", file=sys.stderr)
        raise SystemExit(2)
    from codellama_lsp.engine.templates import template_for
    from codellama_lsp.engine.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path)
    return tokenizer, template_for(tokenizer, model_name="codellama/CodeLlama-7b-hf")


def parses(text: str) -> bool:
    """Python ``text`` parses (``ast.parse``)."""
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


def save_record(out: Path | str, record: dict, markdown: Callable[[dict], str], *, indent: int = 1) -> None:
    """``record`` as JSON at ``out``, its markdown at ``out`` with ``.md``, and the markdown printed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=indent) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(record), encoding="utf-8")
    print(markdown(record))
