"""The line index follows edits without rescanning the text (typing in a 20 MB file must not cost a
scan per keystroke), and gives exactly what a fresh scan gives — also for \\r\\n, lone \\r, edits that
join or split lines, and the numpy form used for big texts."""

from __future__ import annotations

import random

import pytest

from codellama_lsp import positions
from codellama_lsp.positions import LineIndex, apply_change

PIECES = ["a", "bc", "\n", "\r\n", "\r", "é", "😀", "  ", "\f", "def f():\n    return 1\n"]


def _fresh(text: str) -> list[int]:
    return [0, *(m.end() for m in positions._LINE_END.finditer(text))]


@pytest.mark.parametrize("big", [False, True])
def test_after_edit_matches_a_fresh_scan(big, monkeypatch):
    if big:
        monkeypatch.setattr(positions, "_ARRAY_FROM_CHARS", 0)
    rng = random.Random(7)
    text = "".join(rng.choice(PIECES) for _ in range(200))
    for _ in range(400):
        begin = rng.randrange(len(text) + 1)
        finish = min(len(text), begin + rng.choice([0, 0, 1, 2, 5, 30]))
        new = "".join(rng.choice(PIECES) for _ in range(rng.choice([0, 1, 1, 2, 4])))
        result = text[:begin] + new + text[finish:]
        index = LineIndex.of(text).after_edit(begin, finish, new, result)
        assert index.text is result
        assert [int(s) for s in index.starts] == _fresh(result), (text, begin, finish, new)
        assert LineIndex.of(result) is index  # remembered for the completion that follows
        text = result


def test_big_texts_scan_like_the_regex():
    text = ("x = 1\n" * 200_000) + "tail\r\nlast"
    assert [int(s) for s in LineIndex.of(text).starts] == _fresh(text)
    assert [int(s) for s in LineIndex.of(text + "\f\n").starts] == _fresh(text + "\f\n")


def test_apply_change_in_a_big_text_gives_the_right_offsets():
    text = "def f():\n    return 1\n" * 60_000
    after = apply_change(text, (30_001, 12), (30_001, 12), " + x", "utf-16")
    assert after.splitlines()[30_001] == "    return 1 + x"
    index = LineIndex.of(after)
    assert index.offset_at(30_001, 16, "utf-16") == after.index("1 + x") + 5
    assert index.position_at(len(after), "utf-8") == (120_000, 0)
    assert isinstance(index.offset_at(5, 2, "utf-8"), int)


def test_recent_edit_lines_of_a_big_file_are_cut_like_a_small_one():
    from codellama_lsp.context.retrieval import _edited_lines

    text = "".join(f"line {i}\n" for i in range(300_000)) + "end"
    lines = text.split("\n")
    for first, last in ((0, 0), (5, 7), (150_000, 150_010), (299_999, 300_000)):
        start, end, body = _edited_lines(text, first, last)
        s = max(1, first + 1 - 3)
        e = min(len(lines), max(last, first) + 1 + 3, s + 29)
        assert (start, end, body) == (s, e, "\n".join(lines[s - 1:e]))


def test_typing_in_a_big_file_does_not_rescan_it(monkeypatch):
    """Issue: a 20 MB .py file made every keystroke seconds slower. After the document is open, a keystroke
    (the edit, then the completion's offsets) must not scan the whole text again."""
    text = "def f(a):\n    return a\n" * 70_000  # 1.6M characters: the numpy form
    scans = []
    real = positions._line_starts
    monkeypatch.setattr(positions, "_line_starts", lambda t: scans.append(len(t)) or real(t))
    LineIndex.of(text)  # didOpen's first use
    row = 35_001
    for i in range(5):
        text = apply_change(text, (row, 12 + i), (row, 12 + i), "+", "utf-8")
        LineIndex.of(text).offset_at(row, 13 + i, "utf-8")  # complete_at, then the warm-up
        LineIndex.of(text).position_at(100, "utf-16")
    assert scans == [len(text) - 5]
    assert text.split("\n")[row] == "    return a+++++"


def test_retrieval_reads_only_the_cursors_neighbourhood_of_a_big_file(tmp_path, monkeypatch):
    from codellama_lsp.context import retrieval
    from codellama_lsp.context.workspace import WorkspaceIndex

    (tmp_path / "util.py").write_text("def helper(x):\n    return x * 2\n")
    big = tmp_path / "big.py"
    text = "import os\nfrom util import helper\n" + "".join(
        f"def f{i}(a):\n    return helper(a) + {i}\n\n" for i in range(60_000))
    big.write_text(text)
    index = WorkspaceIndex([str(tmp_path)])
    index.start()
    try:
        retriever = retrieval.Retriever(index)
        seen: list[int] = []
        real_usage, real_redact = retrieval.Retriever._usage_counts, retrieval.redact_secrets
        monkeypatch.setattr(retrieval.Retriever, "_usage_counts",
                            lambda self, p, t: seen.append(len(t)) or real_usage(self, p, t))
        monkeypatch.setattr(retrieval, "redact_secrets", lambda t: seen.append(len(t)) or real_redact(t))
        offset = text.index("return helper(a) + 30000") + len("return ")
        row = text.count("\n", 0, offset)
        retriever.snippets(str(big), text, offset, open_documents={str(big): text}, recent_edits=[(str(big), row, row)],
                           budget_tokens=400, count_tokens=lambda s: len(s) // 4)
        assert seen and max(seen) < 100_000, f"scanned {max(seen)} of {len(text)} characters"
    finally:
        index.stop()
