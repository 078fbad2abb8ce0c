"""HumanEval-infilling tasks, read in place from ``../shared/data/human-eval-infilling``.

The data is MIT-licensed but not ours to redistribute inside the package, so it is always read from the
directory it lives in (``--data DIR``), never copied. A ``--limit`` slice is a seeded random sample,
returned in file order so that neighbouring tasks (same problem, different hole) stay together — the
server's KV prefix cache then sees the same reuse pattern in a slice as in a full run.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path

# split name (as used on the command line and in reports) -> file name in the upstream repository
SPLIT_FILES: dict[str, str] = {
    "single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random-span": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random-span-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
# The three splits of the Code Llama paper's Table 14 (``--split all``).
PAPER_SPLITS: tuple[str, ...] = ("single-line", "multi-line", "random-span")

_FIELDS = ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test")


class DatasetError(Exception):
    """The data directory or a task file is missing or malformed (message says which and what to do)."""


@dataclass(frozen=True)
class Task:
    task_id: str
    entry_point: str
    prompt: str  # the text before the hole
    suffix: str  # the text after the hole
    canonical_solution: str  # the hole's original text
    test: str  # defines ``check(candidate)``
    split: str = ""

    @property
    def document(self) -> str:
        """What the editor shows: the program with the hole removed."""
        return self.prompt + self.suffix

    def program(self, completion: str) -> str:
        """The upstream scoring recipe: the filled-in program followed by its test and the call to it."""
        return self.program_from_document(self.prompt + completion + self.suffix)

    def program_from_document(self, document: str) -> str:
        """Same, for a document edited by a completion whose range reached beyond the hole."""
        return document + "\n" + self.test + f"\ncheck({self.entry_point})\n"


def default_data_dir() -> Path:
    """``../shared/data/human-eval-infilling`` next to the checkout (or ``$CODELLAMA_LSP_SHARED/data/...``)."""
    import os

    shared = os.environ.get("CODELLAMA_LSP_SHARED")
    if shared:
        return Path(shared) / "data" / "human-eval-infilling"
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "human-eval-infilling"


def parse_splits(value: str) -> list[str]:
    """``"all"`` -> the paper's three splits; otherwise a comma-separated list of known split names."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names or names == ["all"]:
        return list(PAPER_SPLITS)
    unknown = [n for n in names if n not in SPLIT_FILES]
    if unknown:
        raise DatasetError(f"unknown split {', '.join(unknown)}; choose from all, {', '.join(SPLIT_FILES)}")
    return names


def load_split(data_dir: Path, split: str) -> list[Task]:
    """Every task of one split, in file order."""
    if split not in SPLIT_FILES:
        raise DatasetError(f"unknown split {split!r}; choose from {', '.join(SPLIT_FILES)}")
    path = Path(data_dir) / SPLIT_FILES[split]
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: point --data at a checkout of openai/human-eval-infilling's data/ directory"
        )
    tasks: list[Task] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                missing = [f for f in _FIELDS if not isinstance(record.get(f), str)]
                if missing:
                    raise DatasetError(f"{path}:{number}: missing or non-string field(s) {', '.join(missing)}")
                tasks.append(Task(**{f: record[f] for f in _FIELDS}, split=split))
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    return tasks


def select(tasks: list[Task], limit: int | None, seed: int) -> list[Task]:
    """A seeded random sample of ``limit`` tasks (all when ``limit`` is None or too big), in file order."""
    if limit is None or limit >= len(tasks):
        return list(tasks)
    chosen = sorted(random.Random(seed).sample(range(len(tasks)), max(limit, 0)))
    return [tasks[i] for i in chosen]


def load_tasks(data_dir: Path, splits: list[str], *, limit: int | None = None, seed: int = 0,
               pattern: str | None = None) -> dict[str, list[Task]]:
    """``{split: tasks}``: those whose task_id matches the regular expression ``pattern`` (all when None),
    then ``limit`` applied per split."""
    import re

    try:
        wanted = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise DatasetError(f"bad task pattern {pattern!r}: {exc}") from exc
    chosen = {}
    for split in splits:
        tasks = load_split(data_dir, split)
        if wanted is not None:
            tasks = [t for t in tasks if wanted.search(t.task_id)]
        chosen[split] = select(tasks, limit, seed)
    return chosen
