"""LSP positions and ranges <-> character offsets: where the protocol's positions stop.

Every conversion goes through ``positions.LineIndex`` — lines end at ``\\n``, ``\\r\\n`` and ``\\r``, columns
count code units of the negotiated encoding — so a completion's range, a code action's target and the
edit it sends can never disagree about where a position is. ``features/`` only ever sees offsets.
The encoding defaults to UTF-16, the LSP default.
"""

from __future__ import annotations

from lsprotocol import types as lsp

from ..positions import UTF16, LineIndex, normalize_encoding


def encoding_of(document) -> str:
    """The position encoding a pygls document was opened with ("utf-8" | "utf-16" | "utf-32")."""
    return normalize_encoding(getattr(getattr(document, "position_codec", None), "encoding", None))


def offset(text: str, position: lsp.Position, encoding: str = UTF16) -> int:
    """Character offset of ``position``; past the end of a line or of the text clamps to that end."""
    return LineIndex.of(text).offset_at(position.line, position.character, encoding)


def offsets(text: str, rng: lsp.Range, encoding: str = UTF16) -> tuple[int, int]:
    """(start, end) character offsets of ``rng``, ordered."""
    start, end = offset(text, rng.start, encoding), offset(text, rng.end, encoding)
    return (start, end) if start <= end else (end, start)


def position(text: str, at: int, encoding: str = UTF16) -> lsp.Position:
    """The LSP position of character offset ``at``."""
    line, character = LineIndex.of(text).position_at(at, encoding)
    return lsp.Position(line=line, character=character)


def to_range(text: str, start: int, end: int, encoding: str = UTF16) -> lsp.Range:
    """The LSP range of ``text[start:end]``."""
    lines = LineIndex.of(text)
    (sl, sc), (el, ec) = lines.position_at(start, encoding), lines.position_at(end, encoding)
    return lsp.Range(start=lsp.Position(line=sl, character=sc), end=lsp.Position(line=el, character=ec))
