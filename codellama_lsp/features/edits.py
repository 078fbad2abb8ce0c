"""Turn a model's rewrite of one range into the smallest set of LSP TextEdits inside that range.

Why not replace the whole range (or file)? A whole-range replace moves the editor's cursor, marks, folds
and undo history even where nothing changed, and it makes it impossible to tell the user what was
actually touched. A diff of the old and new text of the *target range* keeps untouched lines untouched,
and because every edit is computed from offsets within that range, nothing outside it can ever change.

Everything here is pure (text in, edits out) so it is tested without a server or a model.
Positions are in the client's negotiated encoding ("utf-8", "utf-16" or "utf-32" code units).
"""

from __future__ import annotations

import difflib
import functools
import re
import textwrap
from dataclasses import dataclass

from lsprotocol import types as lsp


@functools.lru_cache(maxsize=1)
def converter():
    """lsprotocol's cattrs converter, built once: ``get_converter()`` builds a new one on every call
    (~100-400 ms), far too slow for a code-action listing."""
    from lsprotocol.converters import get_converter

    return get_converter()

# ---------------------------------------------------------------------------------------------------
# positions <-> offsets


def _units(text: str, encoding: str) -> int:
    """Length of ``text`` in the client's position units."""
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    if encoding == "utf-32":
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _chars_for_units(line: str, units: int, encoding: str) -> int:
    """Number of characters of ``line`` that make up ``units`` code units (clamped to the line)."""
    if encoding == "utf-32":
        return min(units, len(line))
    count = 0
    for index, ch in enumerate(line):
        if count >= units:
            return index
        count += _units(ch, encoding)
    return len(line)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for match in re.finditer("\n", text):
        starts.append(match.end())
    return starts


def _line_body(text: str, starts: list[int], line: int) -> str:
    """The text of ``line`` without its line break ("\\r\\n" or "\\n")."""
    start = starts[line]
    end = starts[line + 1] - 1 if line + 1 < len(starts) else len(text)
    body = text[start:end]
    return body[:-1] if body.endswith("\r") else body


def offset_at(text: str, position: lsp.Position, encoding: str = "utf-16") -> int:
    """Character offset of an LSP position; out-of-range lines/columns clamp to the document's end or
    the line's end (the LSP rule for a character past the end of a line)."""
    starts = _line_starts(text)
    if position.line >= len(starts):
        return len(text)
    body = _line_body(text, starts, position.line)
    return starts[position.line] + _chars_for_units(body, position.character, encoding)


def position_at(text: str, offset: int, encoding: str = "utf-16") -> lsp.Position:
    """LSP position of a character offset into ``text``."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    return lsp.Position(line=line, character=_units(text[line_start:offset], encoding))


def range_offsets(text: str, rng: lsp.Range, encoding: str = "utf-16") -> tuple[int, int]:
    """(start, end) character offsets of ``rng`` in ``text``, ordered."""
    start, end = offset_at(text, rng.start, encoding), offset_at(text, rng.end, encoding)
    return (start, end) if start <= end else (end, start)


# ---------------------------------------------------------------------------------------------------
# extracting the code from an answer

_FENCE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M)


def extract_code_block(answer: str) -> str | None:
    """The code of the longest fenced block in a markdown answer, or None if there is none.

    The longest, because models often add a short usage example after the rewritten code. An answer
    cut off before its closing fence (max tokens) is taken as a block too, unless it is empty.
    """
    blocks = [m.group(3) for m in _FENCE.finditer(answer)]
    if any(block.strip() for block in blocks):
        return max(blocks, key=len)
    if not blocks:
        opened = re.search(r"^[ \t]*(```+|~~~+)[^\n]*\n", answer, re.M)
        if opened is None:
            return None
        tail = answer[opened.end():]
        return tail if tail.strip() else None
    return None


# ---------------------------------------------------------------------------------------------------
# indentation: the model sees the target dedented and answers at column 0


def common_indent(text: str) -> str:
    """The whitespace every non-blank line of ``text`` starts with."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    prefix = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
    for line in lines[1:]:
        while prefix and not line.startswith(prefix):
            prefix = prefix[:-1]
    return prefix


def reindent(code: str, indent: str) -> str:
    """Put ``code`` back at ``indent`` (the target's indentation) unless it is already there."""
    if not indent or common_indent(code).startswith(indent):
        return code
    return textwrap.indent(textwrap.dedent(code), indent, lambda line: bool(line.strip()))


def fit_replacement(original: str, code: str) -> str:
    """Adapt a model's rewrite to sit where ``original`` was: same indentation, same line-break style,
    same trailing-newline state. (A rewrite that drops the final newline would otherwise glue the next
    line of the document onto the last line of the code.)"""
    code = reindent(code, common_indent(original))
    if "\r\n" in original and "\r\n" not in code:
        code = code.replace("\n", "\r\n")
    newline = "\r\n" if "\r\n" in original else "\n"
    code = code.rstrip("\r\n")
    if original.endswith(("\n", "\r")):
        code += newline
    return code


# ---------------------------------------------------------------------------------------------------
# the minimal diff


@dataclass(frozen=True)
class Replacement:
    """Replace ``text[start:end]`` with ``new_text`` (offsets into the whole document)."""

    start: int
    end: int
    new_text: str


def _trim_common(old: str, new: str) -> tuple[int, int, str]:
    """Shrink one changed block to the characters that differ: (skip at start, skip at end, new middle)."""
    head = 0
    limit = min(len(old), len(new))
    while head < limit and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < limit - head and old[len(old) - 1 - tail] == new[len(new) - 1 - tail]:
        tail += 1
    return head, tail, new[head : len(new) - tail]


def diff_replacements(text: str, start: int, end: int, new_text: str) -> list[Replacement]:
    """Replacements that turn ``text[start:end]`` into ``new_text``, each inside [start, end].

    Line diff first (difflib, so unchanged lines stay untouched), then each changed block is trimmed to
    the characters that actually differ.
    """
    old_text = text[start:end]
    if old_text == new_text:
        return []
    old_lines = old_text.splitlines(keepends=True)
    new_lines = new_text.splitlines(keepends=True)
    old_offsets = [0]
    for line in old_lines:
        old_offsets.append(old_offsets[-1] + len(line))
    out: list[Replacement] = []
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old_block = "".join(old_lines[i1:i2])
        new_block = "".join(new_lines[j1:j2])
        head, tail, middle = _trim_common(old_block, new_block)
        block_start = start + old_offsets[i1] + head
        block_end = start + old_offsets[i2] - tail
        out.append(Replacement(block_start, block_end, middle))
    return out


def text_edits(text: str, replacements: list[Replacement], encoding: str = "utf-16") -> list[lsp.TextEdit]:
    """LSP TextEdits for replacements computed against ``text`` (all positions refer to ``text`` as it is
    before any edit, which is what LSP requires of the edits of one TextDocumentEdit)."""
    return [
        lsp.TextEdit(
            range=lsp.Range(start=position_at(text, r.start, encoding), end=position_at(text, r.end, encoding)),
            new_text=r.new_text,
        )
        for r in replacements
    ]


def minimal_edits(text: str, rng: lsp.Range, new_text: str, encoding: str = "utf-16") -> list[lsp.TextEdit]:
    """The TextEdits that turn the text of ``rng`` into ``new_text`` and touch nothing outside ``rng``."""
    start, end = range_offsets(text, rng, encoding)
    return text_edits(text, diff_replacements(text, start, end, new_text), encoding)


def apply_edits(text: str, edits: list[lsp.TextEdit], encoding: str = "utf-16") -> str:
    """Apply non-overlapping TextEdits (positions relative to ``text``) — what an editor does; used by
    tests and by the CLI to preview a rewrite."""
    spans = sorted(
        ((offset_at(text, e.range.start, encoding), offset_at(text, e.range.end, encoding), e.new_text) for e in edits),
        reverse=True,
    )
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


# ---------------------------------------------------------------------------------------------------
# WorkspaceEdits


def document_edit(
    uri: str, version: int | None, edits: list[lsp.TextEdit], *, document_changes: bool
) -> lsp.WorkspaceEdit:
    """One document's edits as a WorkspaceEdit. With ``document_changes`` (the client supports it) the
    edit carries the document version, so the editor itself refuses it if the buffer moved on."""
    if document_changes:
        return lsp.WorkspaceEdit(
            document_changes=[
                lsp.TextDocumentEdit(
                    text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                    edits=list(edits),
                )
            ]
        )
    return lsp.WorkspaceEdit(changes={uri: list(edits)})


def create_file_edit(uri: str, content: str) -> lsp.WorkspaceEdit:
    """Create ``uri`` and fill it with ``content`` (needs documentChanges + the "create" resource
    operation on the client)."""
    return lsp.WorkspaceEdit(
        document_changes=[
            lsp.CreateFile(uri=uri, options=lsp.CreateFileOptions(overwrite=False, ignore_if_exists=True)),
            lsp.TextDocumentEdit(
                text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
                edits=[lsp.TextEdit(range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)), new_text=content)],
            ),
        ]
    )


def append_edit(text: str, addition: str, encoding: str = "utf-16") -> lsp.TextEdit:
    """Append ``addition`` at the end of ``text``, separated from what is there by one blank line."""
    end = position_at(text, len(text), encoding)
    if not text.strip():
        return lsp.TextEdit(range=lsp.Range(lsp.Position(0, 0), end), new_text=addition)
    sep = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    return lsp.TextEdit(range=lsp.Range(end, end), new_text=sep + addition)
