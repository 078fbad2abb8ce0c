"""Write a run's results as JSON (everything, for machines) and a markdown table (for the README and PRs).

Both files carry the exact command that produced them, so a committed result can be reproduced.
"""

from __future__ import annotations

import json
from pathlib import Path

from .scoring import Summary, TaskResult

# Code Llama paper (arXiv 2308.12950 v3), Table 14, released (LCFT) checkpoints, pass@1 in percent.
PAPER_TABLE_14: dict[str, dict[tuple[str, str], float]] = {
    "Code Llama 7B": {
        ("single-line", "psm"): 74.1, ("single-line", "spm"): 83.3,
        ("multi-line", "psm"): 48.2, ("multi-line", "spm"): 50.8,
        ("random-span", "psm"): 59.7, ("random-span", "spm"): 39.0,
    },
    "Code Llama 13B": {
        ("single-line", "psm"): 75.9, ("single-line", "spm"): 85.6,
        ("multi-line", "psm"): 51.0, ("multi-line", "spm"): 56.1,
        ("random-span", "psm"): 63.6, ("random-span", "spm"): 41.9,
    },
}


def build_json(meta: dict, summaries: list[Summary], results: list[TaskResult], *, details: bool = True) -> dict:
    data = {"meta": meta, "summary": [s.to_json() for s in summaries]}
    if details:
        data["tasks"] = [r.to_json() for r in results]
    return data


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(summaries: list[Summary], *, anchor: str | None = "Code Llama 7B") -> str:
    anchors = PAPER_TABLE_14.get(anchor or "", {})
    header = "| split | FIM mode | tasks | pass@1 % | exact % | exact (ws) % | edit sim % | p50 ms | p95 ms | empty | errors |"
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if anchors:
        header += f" {anchor} (paper) |"
        rule += "---:|"
    lines = [header, rule]
    for s in summaries:
        row = (
            f"| {s.split} | {s.fim_mode} | {s.tasks} | {_fmt(s.pass_at_1)} | {_fmt(s.exact_match)} | "
            f"{_fmt(s.exact_match_ws)} | {_fmt(s.edit_similarity)} | {_fmt(s.latency_p50_ms, 0)} | "
            f"{_fmt(s.latency_p95_ms, 0)} | {s.empty} | {s.errors} |"
        )
        if anchors:
            row += f" {_fmt(anchors.get((s.split, s.fim_mode)))} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def build_markdown(meta: dict, summaries: list[Summary]) -> str:
    lines = [f"# HumanEval-infilling: {meta.get('title', 'results')}", ""]
    facts = [
        ("command", f"`{meta.get('command', '')}`"),
        ("model", meta.get("model_info", {}).get("model") or meta.get("model", "")),
        ("completions from", meta.get("source", "")),
        ("limit per split", meta.get("limit") or "all tasks"),
        ("seed", meta.get("seed")),
        ("repository context", "on" if meta.get("repo_context") else "off"),
        ("sandbox", meta.get("sandbox", {}).get("isolation", "")),
        ("date", meta.get("date", "")),
        ("commit", meta.get("git_commit", "")),
        ("machine", meta.get("machine", "")),
    ]
    lines += [f"- {name}: {value}" for name, value in facts if value not in (None, "")]
    lines += ["", markdown_table(summaries)]
    lines.append(
        "pass@1: the filled-in program passes its unit tests (greedy, one sample). exact: the hole's text equals "
        "the canonical solution (ws: up to whitespace). Latency: request to answer over LSP, as an editor sees it. "
        "Paper column: Code Llama paper Table 14 (pass@1, LCFT checkpoints), for reference only.\n"
    )
    return "\n".join(lines)


def write_reports(out_prefix: Path, meta: dict, summaries: list[Summary], results: list[TaskResult], *,
                  details: bool = True) -> tuple[Path, Path]:
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path = out_prefix.with_name(out_prefix.name + ".json")
    md_path = out_prefix.with_name(out_prefix.name + ".md")
    json_path.write_text(json.dumps(build_json(meta, summaries, results, details=details), indent=1,
                                    ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(build_markdown(meta, summaries), encoding="utf-8")
    return json_path, md_path
