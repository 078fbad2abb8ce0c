"""Turn a model's rewrite of one range into the smallest set of replacements inside that range.

Why not replace the whole range (or file)? A whole-range replace moves the editor's cursor, marks, folds
and undo history even where nothing changed, and it makes it impossible to tell the user what was
actually touched. A diff of the old and new text of the *target range* keeps untouched lines untouched,
and because every edit is computed from offsets within that range, nothing outside it can ever change.

Everything here is pure (text in, offsets out) so it is tested without a server or a model; ``lsp/text_edits``
turns the replacements into LSP TextEdits with the one position converter.
"""

from __future__ import annotations

import difflib
import re
import textwrap
from dataclasses import dataclass

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


def apply_replacements(text: str, replacements: list[Replacement]) -> str:
    """``text`` with non-overlapping replacements (offsets into ``text``) applied — what an editor does."""
    for r in sorted(replacements, key=lambda r: (r.start, r.end), reverse=True):
        text = text[: r.start] + r.new_text + text[r.end :]
    return text


def append_replacement(text: str, addition: str) -> Replacement:
    """Append ``addition`` at the end of ``text``, separated from what is there by one blank line (a text
    that is only whitespace is replaced)."""
    if not text.strip():
        return Replacement(0, len(text), addition)
    sep = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    return Replacement(len(text), len(text), sep + addition)
