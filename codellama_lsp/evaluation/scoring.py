"""Per-task outcomes and their aggregation: pass@1, exact match, edit similarity, latency percentiles.

pass@1 is the execution result of one greedy completion (the paper's metric). Exact match compares the
text that ended up in the hole with ``canonical_solution``: strictly, and with all runs of whitespace
collapsed (so a missing trailing newline or a different indentation width is not counted as a miss).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def edit_similarity(a: str, b: str) -> float:
    """1.0 for identical strings, 0.0 for nothing in common (difflib's ratio, as CodeXGLUE-style ES)."""
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class TaskResult:
    task_id: str
    split: str
    fim_mode: str
    completion: str  # the text that ended up in the hole
    status: str  # passed | failed | timeout | error (no completion could be obtained)
    detail: str = ""
    exact: bool = False
    exact_ws: bool = False
    edit_similarity: float = 0.0
    latency_ms: float | None = None
    server: dict = field(default_factory=dict)  # the server's numbers for the request (tokens, stop reason)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> dict:
        data = asdict(self)
        if not data["server"]:
            del data["server"]
        data["edit_similarity"] = round(self.edit_similarity, 4)
        if self.latency_ms is not None:
            data["latency_ms"] = round(self.latency_ms, 1)
        return data


def compare(completion: str, canonical: str) -> dict:
    """The text-match fields of a TaskResult."""
    return {
        "exact": completion == canonical,
        "exact_ws": normalize_whitespace(completion) == normalize_whitespace(canonical),
        "edit_similarity": edit_similarity(completion, canonical),
    }


@dataclass
class Summary:
    split: str
    fim_mode: str
    tasks: int
    pass_at_1: float  # percent
    exact_match: float  # percent
    exact_match_ws: float  # percent
    edit_similarity: float  # mean, percent
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    empty: int  # completions that left the hole empty
    errors: int  # requests that failed (no completion obtained)
    statuses: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("pass_at_1", "exact_match", "exact_match_ws", "edit_similarity", "latency_p50_ms", "latency_p95_ms"):
            if data[key] is not None:
                data[key] = round(data[key], 1)
        return data


def summarize(results: list[TaskResult], split: str, fim_mode: str) -> Summary:
    n = len(results)

    def share(flags) -> float:
        return 100.0 * sum(1 for f in flags if f) / n if n else 0.0

    latencies = [r.latency_ms for r in results if r.latency_ms is not None]
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return Summary(
        split=split,
        fim_mode=fim_mode,
        tasks=n,
        pass_at_1=share(r.passed for r in results),
        exact_match=share(r.exact for r in results),
        exact_match_ws=share(r.exact_ws for r in results),
        edit_similarity=100.0 * sum(r.edit_similarity for r in results) / n if n else 0.0,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        empty=sum(1 for r in results if r.status != "error" and not r.completion.strip()),
        errors=statuses.get("error", 0),
        statuses=dict(sorted(statuses.items())),
    )
