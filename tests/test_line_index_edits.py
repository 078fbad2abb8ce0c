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
