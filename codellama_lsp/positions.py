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
import re
import threading
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


@dataclass(frozen=True, eq=False)
class LineIndex:
    """Start offsets of every line of one text, so several conversions share one scan."""

    text: str
    starts: tuple[int, ...]

    @classmethod
    def of(cls, text: str) -> "LineIndex":
        """The index of ``text``; the few most recent ones are remembered, so the edit, the completion
        and the warm-up of one keystroke share one (a 20 MB file has ~800 000 lines)."""
        cached = _recent_index(text)
        if cached is not None:
            return cached
        return _remember(cls(text, _line_starts(text)))

    def after_edit(self, begin: int, finish: int, new_text: str, result: str) -> "LineIndex":
        """The index of ``result`` = this text with ``[begin, finish)`` replaced by ``new_text``, from
        this one: only the lines of the edit are scanned (the rest shift), so typing in a big file does
        not rescan it. A ``\r`` near the edit (a ``\r\n`` may form or split) rescans everything."""
        text = self.text
        if "\r" in new_text or "\r" in text[max(0, begin - 1) : finish + 1]:
            return LineIndex.of(result)
        first = bisect.bisect_right(self.starts, begin) - 1
        last = bisect.bisect_right(self.starts, finish) - 1
        inner = [begin + m.end() for m in _LINE_END.finditer(new_text)]
        delta = len(new_text) - (finish - begin)
        starts = self.starts
        if isinstance(starts, tuple):
            new_starts = starts[: first + 1] + tuple(inner) + tuple(s + delta for s in starts[last + 1 :])
        else:  # a numpy array (big texts): shifting the rest is one vectorised add
            import numpy as np

            new_starts = np.concatenate([starts[: first + 1], np.asarray(inner, dtype=np.int64), starts[last + 1 :] + delta])
        return _remember(LineIndex(result, new_starts))

    def line_text(self, line: int) -> str:
        """Line ``line`` without its line ending."""
        start = int(self.starts[line])
        end = int(self.starts[line + 1]) if line + 1 < len(self.starts) else len(self.text)
        return _LINE_END.sub("", self.text[start:end], count=1) if end > start else ""

    def offset_at(self, line: int, character: int, encoding: str) -> int:
        """Offset into ``text`` of an LSP position; positions past the end clamp to the end (of the
        line, or of the document), as the specification asks."""
        if line < 0:
            return 0
        if line >= len(self.starts):
            return len(self.text)
        content = self.line_text(line)
        return int(self.starts[line]) + _chars_for_units(content, max(character, 0), encoding)

    def position_at(self, offset: int, encoding: str) -> tuple[int, int]:
        """LSP (line, character) of an offset into ``text``."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.starts, offset) - 1
        content = self.line_text(line)
        column = min(offset - int(self.starts[line]), len(content))
        return line, units(content[:column], encoding)


# Texts this long keep their line starts in a numpy array: an edit shifts them in one vectorised add.
_ARRAY_FROM_CHARS = 1_000_000
_RECENT: list[LineIndex] = []
_RECENT_LOCK = threading.Lock()
_RECENT_MAX, _RECENT_MAX_CHARS = 4, 48_000_000
# str.splitlines also breaks at these, which are not LSP line ends: texts holding one use the regex.
_NOT_LSP_BREAKS = "\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def _line_starts(text: str):
    if len(text) < _ARRAY_FROM_CHARS:
        return (0, *(m.end() for m in _LINE_END.finditer(text)))
    import itertools

    import numpy as np

    if any(ch in text for ch in _NOT_LSP_BREAKS):
        ends = (m.end() for m in _LINE_END.finditer(text))
    else:  # C-speed: splitlines breaks exactly at \r\n, \r and \n here
        ends = itertools.accumulate(map(len, text.splitlines(True)))
    starts = np.fromiter(itertools.chain((0,), ends), dtype=np.int64)
    if len(starts) > 1 and starts[-1] == len(text) and not text.endswith(("\n", "\r")):
        starts = starts[:-1]  # splitlines' last piece has no line end
    return starts


def _recent_index(text: str) -> LineIndex | None:
    with _RECENT_LOCK:
        for index in _RECENT:
            if index.text is text:
                return index
    return None


def _remember(index: LineIndex) -> LineIndex:
    """Keep ``index`` among the recent ones (a handful, and not too many characters of text alive)."""
    with _RECENT_LOCK:
        _RECENT.insert(0, index)
        while len(_RECENT) > _RECENT_MAX or (len(_RECENT) > 1 and sum(len(i.text) for i in _RECENT) > _RECENT_MAX_CHARS):
            _RECENT.pop()
    return index


def offset_at(text: str, line: int, character: int, encoding: str) -> int:
    return LineIndex.of(text).offset_at(line, character, encoding)


def position_at(text: str, offset: int, encoding: str) -> tuple[int, int]:
    return LineIndex.of(text).position_at(offset, encoding)


def apply_change(text: str, start: tuple[int, int], end: tuple[int, int], new_text: str, encoding: str) -> str:
    """``text`` with the LSP range ``start``-``end`` (line, character) replaced by ``new_text``."""
    index = LineIndex.of(text)
    begin = index.offset_at(*start, encoding)
    finish = max(begin, index.offset_at(*end, encoding))
    result = text[:begin] + new_text + text[finish:]
    index.after_edit(begin, finish, new_text, result)  # remembered: the next LineIndex.of(result) is free
    return result
