"""LSP positions <-> offsets into a Python string, in the encoding the client negotiated.

Why not pygls' own codec: it splits lines with ``str.splitlines``, which also breaks at form feeds,
``\\x1c``-``\\x1e``, ``\\x85`` and U+2028/2029 — characters that are *not* line ends in LSP (only
``\\n``, ``\\r\\n`` and ``\\r`` are) — and it clamps a column past the end of a line to one character
short of it. Either mistake moves a ghost-text range onto the wrong character, so completion ranges
go through these few functions instead.

``character`` counts code units of the negotiated ``positionEncoding``: UTF-8 bytes (Neovim 0.11),
UTF-16 units (the LSP default; Neovim 0.7, VS Code) or code points (UTF-32, Emacs).
"""

from __future__ import annotations

import bisect
import errno
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"


def normalize_encoding(encoding: object) -> str:
    """``PositionEncodingKind`` enum, plain string or None -> "utf-8" | "utf-16" | "utf-32"."""
    value = getattr(encoding, "value", encoding)
    return value if value in (UTF8, UTF16, UTF32) else UTF16


def units(text: str, encoding: str) -> int:
    """Length of ``text`` in code units of ``encoding``."""
    if encoding == UTF32:
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _chars_for_units(line: str, count: int, encoding: str) -> int:
    """Number of characters of ``line`` that ``count`` code units cover; a count that falls inside a
    character rounds down to its start (a client must not split one, but some do)."""
    if encoding == UTF32:
        return min(count, len(line))
    used = 0
    for index, ch in enumerate(line):
        width = units(ch, encoding)
        if used + width > count:
            return index
        used += width
    return len(line)


@dataclass(frozen=True)
class LineIndex:
    """Start offsets of every line of one text, so several conversions share one scan."""

    text: str
    starts: tuple[int, ...]

    @classmethod
    def of(cls, text: str) -> "LineIndex":
        return cls(text, (0, *(m.end() for m in _LINE_END.finditer(text))))

    def line_text(self, line: int) -> str:
        """Line ``line`` without its line ending."""
        start = self.starts[line]
        end = self.starts[line + 1] if line + 1 < len(self.starts) else len(self.text)
        return _LINE_END.sub("", self.text[start:end], count=1) if end > start else ""

    def offset_at(self, line: int, character: int, encoding: str) -> int:
        """Offset into ``text`` of an LSP position; positions past the end clamp to the end (of the
        line, or of the document), as the specification asks."""
        if line < 0:
            return 0
        if line >= len(self.starts):
            return len(self.text)
        content = self.line_text(line)
        return self.starts[line] + _chars_for_units(content, max(character, 0), encoding)

    def position_at(self, offset: int, encoding: str) -> tuple[int, int]:
        """LSP (line, character) of an offset into ``text``."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.starts, offset) - 1
        content = self.line_text(line)
        column = min(offset - self.starts[line], len(content))
        return line, units(content[:column], encoding)


def offset_at(text: str, line: int, character: int, encoding: str) -> int:
    return LineIndex.of(text).offset_at(line, character, encoding)


def position_at(text: str, offset: int, encoding: str) -> tuple[int, int]:
    return LineIndex.of(text).position_at(offset, encoding)


def apply_change(text: str, start: tuple[int, int], end: tuple[int, int], new_text: str, encoding: str) -> str:
    """``text`` with the LSP range ``start``-``end`` (line, character) replaced by ``new_text``."""
    index = LineIndex.of(text)
    begin = index.offset_at(*start, encoding)
    finish = max(begin, index.offset_at(*end, encoding))
    return text[:begin] + new_text + text[finish:]


def install_document_model(workspace) -> None:
    """Make a pygls ``Workspace`` apply incremental edits with these rules (LSP line ends, no
    off-by-one clamping) instead of its own; documents opened afterwards use them."""
    from pygls.workspace import TextDocument, Workspace

    class LspTextDocument(TextDocument):
        def _apply_incremental_change(self, change) -> None:
            encoding = normalize_encoding(self.position_codec.encoding)
            r = change.range
            self._source = apply_change(self.source, (r.start.line, r.start.character),
                                        (r.end.line, r.end.character), change.text, encoding)

        refused: str | None = None  # set for unopened documents the server must not read (readguard)

        @property
        def source(self) -> str:
            if self.refused and self._source is None:
                raise PermissionError(errno.EACCES, f"not read: {self.refused}", self.path)
            return super().source

    class LspWorkspace(Workspace):
        def _create_text_document(self, doc_uri, source=None, version=None, language_id=None):
            return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                                   sync_kind=self._sync_kind, position_codec=self._position_codec)

        def get_text_document(self, doc_uri):
            from .readguard import disk_read_refusal

            doc = super().get_text_document(doc_uri)
            if doc._source is None and doc.path:  # not opened by the editor: would be read from disk
                doc.refused = disk_read_refusal(doc.path, self)
            return doc

    if isinstance(workspace, Workspace) and not isinstance(workspace, LspWorkspace):
        workspace.__class__ = LspWorkspace
