"""The minimal-diff WorkspaceEdit builder: edits reproduce the rewrite exactly and never leave the range."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types as lsp

from codellama_lsp.features import edits
from codellama_lsp.lsp import ranges, text_edits
from codellama_lsp.positions import LineIndex

ENCODINGS = ("utf-8", "utf-16", "utf-32")

SOURCE = '''import os


def add(a, b):
    return a - b


class Box:
    def size(self):
        return len(self.items)
'''


def rng(l1, c1, l2, c2):
    return lsp.Range(lsp.Position(l1, c1), lsp.Position(l2, c2))


def test_one_changed_character_gives_one_tiny_edit():
    target = rng(3, 0, 4, 16)
    old = "def add(a, b):\n    return a - b"
    assert ranges.offsets(SOURCE, target) == (SOURCE.index("def add"), SOURCE.index("def add") + len(old))
    result = text_edits.minimal_edits(SOURCE, target, "def add(a, b):\n    return a + b")
    assert len(result) == 1
    assert result[0].range == rng(4, 13, 4, 14)
    assert result[0].new_text == "+"
    assert text_edits.apply_edits(SOURCE, result) == SOURCE.replace("a - b", "a + b")


def test_unchanged_rewrite_gives_no_edits():
    assert text_edits.minimal_edits(SOURCE, rng(3, 0, 4, 16), "def add(a, b):\n    return a - b") == []


def test_inserted_docstring_is_a_pure_insertion_and_other_lines_untouched():
    new = 'def add(a, b):\n    """Add two numbers."""\n    return a - b'
    result = text_edits.minimal_edits(SOURCE, rng(3, 0, 4, 16), new)
    assert len(result) == 1
    assert result[0].range.start == result[0].range.end  # insertion, no deletion
    assert text_edits.apply_edits(SOURCE, result) == SOURCE.replace("def add(a, b):\n", 'def add(a, b):\n    """Add two numbers."""\n')


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_positions_round_trip_with_non_ascii(encoding):
    text = 'x = "😋é"\ny = 1\r\nz = "中"\n'
    for offset in range(len(text) + 1):
        if offset and text[offset - 1] == "\r":  # a position never points between \r and \n
            continue
        pos = ranges.position(text, offset, encoding)
        assert ranges.offset(text, pos, encoding) == offset


def test_utf16_columns_count_surrogate_pairs():
    text = 'a = "😋"; b = 1\n'
    target_offset = text.index("b")
    assert ranges.position(text, target_offset, "utf-16").character == target_offset + 1
    assert ranges.position(text, target_offset, "utf-8").character == target_offset + 3
    assert ranges.position(text, target_offset, "utf-32").character == target_offset


def test_positions_past_the_end_clamp():
    text = "ab\ncd"
    assert ranges.offset(text, lsp.Position(0, 99)) == 2
    assert ranges.offset(text, lsp.Position(9, 0)) == len(text)


@pytest.mark.parametrize(
    "answer, code",
    [
        ("Here you go:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
        ("```\nshort\n```\ntext\n```py\nlonger block\n```", "longer block\n"),
        ("~~~js\nlet x = 1;\n~~~", "let x = 1;\n"),
        ("cut off:\n```python\ndef f():\n    return", "def f():\n    return"),
        ("no code at all", None),
        ("```python\n```", None),
    ],
)
def test_extract_code_block(answer, code):
    assert edits.extract_code_block(answer) == code


def test_fit_replacement_restores_indentation_and_trailing_newline():
    original = "    def size(self):\n        return len(self.items)\n"
    answer = "def size(self):\n    return len(self.items or [])"
    fitted = edits.fit_replacement(original, answer)
    assert fitted == "    def size(self):\n        return len(self.items or [])\n"
    # already indented answers are left alone
    assert edits.fit_replacement(original, fitted) == fitted
    # CRLF documents keep CRLF
    assert edits.fit_replacement("a\r\nb\r\n", "a\nc\n") == "a\r\nc\r\n"


def test_document_edit_carries_the_version_only_with_document_changes():
    e = [lsp.TextEdit(rng(0, 0, 0, 0), "x")]
    versioned = text_edits.document_edit("file:///a.py", 7, e, document_changes=True)
    assert versioned.document_changes[0].text_document.version == 7
    plain = text_edits.document_edit("file:///a.py", 7, e, document_changes=False)
    assert plain.changes == {"file:///a.py": e}


def test_append_edit_separates_with_one_blank_line():
    text = "def test_a():\n    pass\n"
    edit = text_edits.append_edit(text, "def test_b():\n    pass\n")
    assert text_edits.apply_edits(text, [edit]) == "def test_a():\n    pass\n\ndef test_b():\n    pass\n"
    assert text_edits.apply_edits("", [text_edits.append_edit("", "x\n")]) == "x\n"


lines = st.lists(st.text(alphabet="ab c😋\t", max_size=6), max_size=6).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(before=lines, target=lines, after=lines, rewrite=lines, encoding=st.sampled_from(ENCODINGS))
def test_edits_reproduce_the_rewrite_and_stay_inside_the_range(before, target, after, rewrite, encoding):
    text = before + "\n" + target + "\n" + after
    start = len(before) + 1
    end = start + len(target)
    target_range = lsp.Range(ranges.position(text, start, encoding), ranges.position(text, end, encoding))
    result = text_edits.minimal_edits(text, target_range, rewrite, encoding)
    assert text_edits.apply_edits(text, result, encoding) == text[:start] + rewrite + text[end:]
    for e in result:
        s, t = ranges.offsets(text, e.range, encoding)
        assert start <= s <= t <= end


def test_one_converter_reads_a_lone_cr_as_a_line_end_and_counts_a_lone_surrogate():
    """LSP ends lines at "\n", "\r\n" and "\r": code-action edits and completions share one converter. Before,
    edits.py split at "\n" only (line 1 column 0 of "a\rbc\nd" was offset 5, not 2) and raised on a lone
    surrogate that positions.py counted as one UTF-16 unit."""
    text = "a\rbc\nd"
    assert ranges.offset(text, lsp.Position(1, 0)) == 2 == LineIndex.of(text).offset_at(1, 0, "utf-16")
    assert ranges.position(text, 5) == lsp.Position(2, 0)
    (edit,) = text_edits.minimal_edits(text, rng(1, 0, 1, 2), "xc")
    assert edit.range == rng(1, 0, 1, 1) and text_edits.apply_edits(text, [edit]) == "a\rxc\nd"
    lone = "a\ud800b"
    for encoding, column in (("utf-8", 4), ("utf-16", 2), ("utf-32", 2)):
        assert ranges.position(lone, 2, encoding) == lsp.Position(0, column)
        assert ranges.offset(lone, lsp.Position(0, column), encoding) == 2
