"""LSP positions <-> document offsets in utf-8 / utf-16 / utf-32, where editors disagree most."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codellama_lsp.positions import UTF8, UTF16, UTF32, LineIndex, normalize_encoding, offset_at, position_at, units



@pytest.mark.parametrize(
    ("encoding", "column"),
    [(UTF8, len('x = "😋'.encode())), (UTF16, 7), (UTF32, 6)],
)
def test_column_after_an_emoji_depends_on_the_encoding(encoding, column):
    text = 'x = "😋"\n'
    offset = text.index('"', 5)  # the closing quote
    assert position_at(text, offset, encoding) == (0, column)
    assert offset_at(text, 0, column, encoding) == offset


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
@pytest.mark.parametrize(
    "line",
    ["名前 = '山田'  # CJK", "cafe\u0301 = 1  # combining accent", "flag = '🇫🇷'  # two code points", "plain ascii"],
)
def test_round_trip_on_every_character_boundary(encoding, line):
    text = f"first\r\n{line}\r\nlast"
    index = LineIndex.of(text)
    start = text.index(line)
    for col in range(len(line) + 1):
        pos = index.position_at(start + col, encoding)
        assert pos[0] == 1
        assert pos[1] == units(line[:col], encoding)
        assert index.offset_at(*pos, encoding) == start + col


def test_crlf_and_lone_cr_end_lines_but_form_feed_and_line_separator_do_not():
    text = "a\r\nb\rc\nd\x0ce\u2028f"
    index = LineIndex.of(text)
    assert [index.line_text(i) for i in range(len(index.starts))] == ["a", "b", "c", "d\x0ce\u2028f"]
    assert index.offset_at(3, 3, UTF16) == text.index("\u2028")


def test_positions_past_the_end_clamp_to_the_line_end_and_document_end():
    text = "ab\r\ncd"
    assert offset_at(text, 0, 99, UTF16) == 2  # end of "ab", before the CRLF
    assert offset_at(text, 9, 0, UTF16) == len(text)
    assert position_at(text, 3, UTF16) == (0, 2)  # between \r and \n: still the end of line 0


def test_a_column_inside_a_surrogate_pair_rounds_down_to_the_character():
    assert offset_at("😋x", 0, 1, UTF16) == 0
    assert offset_at("😋x", 0, 3, UTF8) == 0


def test_encoding_names_are_normalised():
    from lsprotocol.types import PositionEncodingKind

    assert normalize_encoding(PositionEncodingKind.Utf8) == UTF8
    assert normalize_encoding(None) == UTF16
    assert normalize_encoding("utf-32") == UTF32


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), st.data())
def test_offset_position_round_trip_property(text, data):
    index = LineIndex.of(text)
    offset = data.draw(st.integers(0, len(text)))
    if 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n":
        return  # inside a CRLF is not a position
    for encoding in (UTF8, UTF16, UTF32):
        assert index.offset_at(*index.position_at(offset, encoding), encoding) == offset


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_incremental_edits_land_where_the_client_meant(encoding):
    from lsprotocol import types as lsp
    from pygls.workspace import Workspace

    from codellama_lsp.lsp.documents import install_document_model

    workspace = Workspace(None, position_encoding=encoding)
    install_document_model(workspace)
    text = "a = '😋'\r\nform\x0cfeed\u2028same line\r\nlast"
    workspace.put_text_document(lsp.TextDocumentItem(uri="file:///t.txt", language_id="plaintext", version=1, text=text))
    doc = workspace.get_text_document("file:///t.txt")
    index = LineIndex.of(text)
    target = text.index("same")
    line, character = index.position_at(target, encoding)
    assert line == 1  # U+2028 and form feed are not line ends
    doc.apply_change(lsp.TextDocumentContentChangePartial(
        range=lsp.Range(start=lsp.Position(line=line, character=character),
                        end=lsp.Position(line=line, character=character + units("same", encoding))),
        text="SAME"))
    past_end = lsp.Position(line=0, character=999)  # clamps to the end of line 0, before its CRLF
    doc.apply_change(lsp.TextDocumentContentChangePartial(range=lsp.Range(start=past_end, end=past_end), text="!"))
    assert doc.source == "a = '😋'!\r\nform\x0cfeed\u2028SAME line\r\nlast"
