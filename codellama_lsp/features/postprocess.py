"""Cleaning a raw model completion before it is shown: small pure rules, each one function, applied in order.

1. ``drop_blank`` — nothing but whitespace is no suggestion.
2. ``cut_suffix_repeat`` — a model that does not stop in time goes on writing what follows the cursor: the
   completion is cut where it starts repeating the suffix (a whole line of it, a few characters, or a closer
   that leaves the document with more unmatched brackets than the cut does).
3. ``first_line`` — single-line requests keep the rest of the current line only.
4. ``cut_at_block_end`` — multi-line requests stop where the enclosing block ends (indentation; a closing
   bracket line is kept when the suffix does not already have it). The completion may dedent down to the
   level of the code that follows the cursor: a right answer often finishes an inner block and goes on.
5. ``trim_suffix_overlap`` — text the suffix already has right after the cursor (auto-inserted ``)``, ``;``…)
   is not repeated; brackets are only trimmed when they close something the completion did not open.
6. ``balance_brackets`` — brackets the completion opens are closed by it or by the suffix (a hole inside an
   expression is closed after the cursor); otherwise closed (single line) or trimmed back (multi-line).
7. ``syntax.validate`` — the result must not add parse errors to ``prefix + completion + suffix``; it is trimmed
   to its longest prefix that does not, or dropped.

Measured with ``bench/fim_eval.py --oracle postprocessed`` (a right answer must survive) and ``--oracle
overrun`` (a right answer followed by a typical overrun must come back as the right answer).
"""

from __future__ import annotations

import functools
import re

from ..context import syntax

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {")": "(", "]": "[", "}": "{"}
_PY_CONTINUATION = re.compile(r"(else|elif|except|finally|case)\b")
_BRACE_CONTINUATION = re.compile(r"(\}\s*)?(else|catch|finally|while)\b")
_INDENT_LANGS = {"python", "yaml", "haskell", "nim", "elixir"}


def clean(completion: str, *, prefix: str, suffix: str, language: str | None, multiline: bool,
          validate: bool = True) -> str:
    """The completion as it should be shown, or "" when nothing useful is left."""
    text = drop_blank(completion)
    if not text:
        return ""
    text = cut_suffix_repeat(text, prefix, suffix)
    if not text.strip():
        return ""
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    if not line_prefix.strip() and suffix.split("\n", 1)[0].strip():
        return _new_lines_above(text, prefix, suffix, language, multiline, validate)
    text = drop_line_start_repeat(text, line_prefix)
    if not text.strip():
        return ""
    if not multiline:
        text = first_line(text, prefix)
    else:
        text = cut_suffix_repeat(cut_at_block_end(text, prefix, suffix, language), prefix, suffix)
    text = trim_suffix_overlap(text, suffix)
    text = balance_brackets(text, suffix, multiline)
    last_line = text.rsplit("\n", 1)[-1]
    # a completion that ends with a line break before code the suffix has on the cursor's line (``{|}``, or a
    # hole that ends at a line start) keeps the break and the indentation, so that code stays on its own line
    tail = "\n" + last_line if "\n" in text and not last_line.strip() and suffix.split("\n", 1)[0].strip() else ""
    if not tail and re.match(r"[A-Za-z0-9_]", suffix[:1]):
        tail = last_line[len(last_line.rstrip(" \t")):]  # "x for x in strings |if ...": the blank separates words
    text = text.rstrip() + tail
    if not text.strip():
        return ""
    if validate:
        fitted = python_fit(prefix, text, suffix) if language == "python" else None
        if fitted is not None:
            text = fitted
        else:
            checked = syntax.validate(prefix, text, suffix, language)
            if checked != text:
                text = checked.rstrip()
    return text if text.strip() else ""


PYTHON_FIT_MAX_CHARS = 200_000  # documents longer than this are judged by tree-sitter alone
_PY_HEADER = re.compile(r"\s*(if|elif|else|for|while|with|def|class|try|except|finally|async\s+(?:def|for|with))\b")


def python_fit(prefix: str, completion: str, suffix: str) -> str | None:
    """A Python completion that leaves the file compilable: itself, else its longest cut at a line end (or that
    cut closed by the ``:`` a compound statement's header needs) with which the file compiles; None when none
    does (the file may not compile for other reasons: tree-sitter's validation judges then). Tree-sitter
    forgives what Python does not (a wrong dedent), which is what a small model gets wrong most."""
    if len(prefix) + len(suffix) > PYTHON_FIT_MAX_CHARS:
        return None
    split = python_split(prefix, suffix)
    if split.fits(completion):
        return completion
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    ends = [len(completion)] + [i for i in range(len(completion) - 1, 0, -1) if completion[i] == "\n"][:12]
    for end in ends:
        cut = completion[:end].rstrip(" \t")
        if not cut.strip():
            continue
        header = _PY_HEADER.match(line_prefix + cut.split("\n", 1)[0]) and "\n" not in cut
        for candidate in ([cut, cut + ":"] if header and not cut.endswith(":") else [cut]):
            if split.fits(candidate):
                return candidate
    return None


def _compiles(source: str) -> bool:
    """Whether ``source`` parses as Python (``ast.parse``: syntax only, not what the compiler checks after)."""
    import ast
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


@functools.lru_cache(maxsize=16)
def _compiles_alone(source: str) -> bool:
    """:func:`_compiles` for the parts cut off around the cursor's top-level statement (never a completion),
    memoized across requests: they stay the same while the user types inside that statement."""
    return _compiles(source)


@functools.lru_cache(maxsize=4)
def python_split(prefix: str, suffix: str) -> "PythonSplit":
    """The split of one request's document, shared by the first answer and the alternatives (and every cut)."""
    return PythonSplit(prefix, suffix)


_PY_BOUNDARY = re.compile(r"^(?!(?:else|elif|except|finally)\b)[A-Za-z_]", re.M)
_NEUTRAL = re.compile(r"[^()\[\]{}'\"\\#@\n\r\f\x00]*")
_PY_CODE_AT_0 = re.compile(r"^[^ \n#]", re.M)
_PY_INDENTED_CODE = re.compile(r"^( +)[^ \n#]", re.M)


class PythonSplit:
    """The document around the cursor cut so that a completion is judged on the statement around it instead of
    the whole file, with the same verdict as ``ast.parse`` of the whole document (:meth:`fits`). Built once per
    request; the parts cut off are checked once (memoized across requests while they do not change).

    Two levels, each an exact reduction:

    1. Top level: ``head`` (the code before the cursor's top-level statement) compiles on its own and the next
       line starts a new statement at column 0, so it is left out; ``far`` (the code from the next such statement
       after the cursor's line) compiles on its own, so whether the document compiles is decided by
       ``rest_prefix + completion + near`` alone, except when that does not compile and ends inside brackets or
       a string (then ``far`` is parsed with it).
    2. Inside the cursor's top-level statement (a class or function: its body is at ``indent`` columns): the
       statements of that body before the one the cursor is in are complete statements (each checked alone in
       an ``if 1:`` block), none of their lines is shallower than the body, and the header before them accepts
       a body at that indentation: leaving them out changes no verdict (a statement list is a plain sequence;
       the next statement starts fresh, not with ``else``/``except``/``case``...). The same holds for the
       statements after the cursor's one up to the end of ``near``; they are replaced by one ``pass`` at the
       body's indentation, which is exact when the text before them ends between statements (a ``pass`` that
       compiles after a line that does not end with a backslash shows it does; when it does not compile,
       Python's tokenizer tells).

    Tabs, form feeds or carriage returns in the statement skip level 2 (widths and blank lines would need the
    tokenizer's rules)."""

    def __init__(self, prefix: str, suffix: str) -> None:
        line_start = prefix.rfind("\n") + 1  # the cursor's line; the head must end before it
        head_end = 0
        for match in _last_matches(_PY_BOUNDARY, prefix, line_start, 2):
            if _compiles_alone(prefix[: match.start()]):
                head_end = match.start()
                break
        near_end = len(suffix)
        first_break = suffix.find("\n")
        if first_break >= 0:
            match = _PY_BOUNDARY.search(suffix, first_break + 1)
            if match is not None and _compiles_alone(suffix[match.start():]):
                near_end = match.start()
        self.rest_prefix, self.near, self.far = prefix[head_end:], suffix[:near_end], suffix[near_end:]
        self.lead = self.rest_prefix  # rest_prefix with the statements before the cursor's left out (level 2)
        self.near_kept: str | None = None  # near up to the statements left out after the cursor's, if any
        self.pad = ""  # what stands in for them
        self.indent = 0
        self._inner(line_start - head_end, first_break)
        self._verdicts: dict[str, bool] = {}
        self._code_before_cursor = bool(prefix[line_start:].strip())
        self._ends_without: bool | None = None

    def _inner(self, line_start: int, first_break: int) -> None:
        rest, near = self.rest_prefix, self.near
        if any(c in rest or c in near for c in "\t\f\r"):
            return
        top = _last_matches(_PY_CODE_AT_0, rest, line_start, 1)
        if not top:
            return
        body = _PY_INDENTED_CODE.search(rest, top[0].end(), line_start)
        if body is None:
            return
        body_start, indent = body.start(), len(body.group(1))
        header = rest[:body_start]
        pad = " " * indent + "pass\n"
        if not _compiles_alone(header + pad):  # the header takes a body at this indentation
            return
        fresh = re.compile(r"^ {%d}(?!(?:else|elif|except|finally|case)\b)[A-Za-z_@]" % indent, re.M)
        shallower = re.compile(r"^ {0,%d}[^ \n#]" % (indent - 1), re.M)
        self.indent, self.pad = indent, pad
        # before: the nearest statement start at the body's indentation whose predecessors check out
        limit = line_start
        low = shallower.search(rest, body_start, line_start)
        if low is not None:
            limit = low.start()
        for match in _last_matches(fresh, rest, limit, 3):
            if match.start() > body_start and _statements(rest, body_start, match.start(), fresh, pad):
                self.lead = header + rest[match.start():]
                break
        # after: the first statement start at the body's indentation after the cursor's line, with only
        # complete statements no shallower than the body from there to the end of near
        if first_break < 0 or first_break >= len(near):
            return
        low_after = None
        for low_after in shallower.finditer(near, first_break + 1):
            pass
        start = max(first_break + 1, low_after.end() if low_after is not None else 0)
        match = fresh.search(near, start)
        if (match is not None and not _continued(near, match.start())
                and _statements(near, match.start(), len(near), fresh, pad)):
            self.near_kept = near[: match.start()]

    def _ends_between_statements_with(self, completion: str, kept: str) -> bool:
        """:func:`_ends_between_statements` of ``kept`` (the text with ``completion``). After code on the cursor's
        line, a completion without brackets, quotes, backslashes, ``#``, ``@`` or line breaks changes none of what
        that function looks at (it opens and closes nothing, starts no logical line): the answer without it,
        computed once per request, holds (Python's tokenizer is slow: it would otherwise run on every answer)."""
        if self._code_before_cursor and _NEUTRAL.fullmatch(completion):
            if self._ends_without is None:
                self._ends_without = _ends_between_statements(self.lead + (self.near_kept or ""))
            if self._ends_without:
                return True
        return _ends_between_statements(kept)

    def fits(self, completion: str) -> bool:
        """Whether the whole document compiles with ``completion`` at the cursor (memoized per answer)."""
        verdict = self._verdicts.get(completion)
        if verdict is None:
            verdict = self._verdicts[completion] = self._fits(completion)
        return verdict

    def _fits(self, completion: str) -> bool:
        if self.near_kept is not None:
            kept = self.lead + completion + self.near_kept
            if not _continued(kept, len(kept)):  # else the ``pass`` would join its line, not follow it
                if _compiles(kept + self.pad):
                    return True
                if self._ends_between_statements_with(completion, kept):
                    return False
        middle = self.lead + completion + self.near
        if not self.far:
            return _compiles(middle)
        if _compiles(middle):
            return True
        if 2 * len(middle) < len(middle) + len(self.far) and _ends_between_statements(middle):
            return False
        return _compiles(middle + self.far)


def _statements(text: str, start: int, end: int, fresh: re.Pattern, pad: str) -> bool:
    """Whether ``text[start:end]`` is complete statements (at the indentation ``fresh`` and ``pad`` have), checked
    one piece at a time between the lines ``fresh`` matches (a piece that is not complete alone, a line inside a
    string that looks like a statement, is checked joined with the next), each in an ``if 1:`` block followed by
    ``pad``, memoized across requests. A piece must not end with a backslash: the next line would continue it."""
    piece_start = start
    for match in fresh.finditer(text, start + 1, end):
        piece = text[piece_start:match.start()]
        if not _continued(piece, len(piece)) and _piece_compiles("if 1:\n" + piece + pad):
            piece_start = match.start()
    piece = text[piece_start:end]
    return not piece or (not _continued(piece, len(piece)) and _piece_compiles("if 1:\n" + piece + pad))


def _continued(text: str, pos: int) -> bool:
    """Whether the line that ends before ``pos`` (a line start) ends with a backslash (a line continuation)."""
    end = pos - 1 if pos and text[pos - 1] == "\n" else pos
    if end and text[end - 1] == "\r":
        end -= 1
    return end > 0 and text[end - 1] == "\\"


@functools.lru_cache(maxsize=1024)
def _piece_compiles(source: str) -> bool:
    """:func:`_compiles` for one statement of the cursor's block (wrapped in ``if 1:``), memoized across requests:
    the statements around the cursor's stay the same while the user types, or moves to another one nearby."""
    return _compiles(source)


def _last_matches(pattern: re.Pattern, text: str, end: int, most: int) -> list[re.Match]:
    """The last ``most`` matches of ``pattern`` that start before ``end`` (nearest first), searching backwards
    in growing windows so that a long file is not scanned from its start."""
    window = 4000
    while True:
        start = max(0, end - window)
        # a match must start at a line start: begin the window at one
        start = text.rfind("\n", 0, start) + 1 if start else 0
        found = list(pattern.finditer(text, start, end))
        if len(found) >= most or start == 0:
            return found[::-1][:most]
        window *= 4


def _ends_between_statements(source: str) -> bool:
    """Whether Python's tokenizer ends ``source`` outside brackets, strings and line continuations, and its last
    logical line is not a decorator (a decorator is continued by the ``def`` after it)."""
    import io
    import tokenize

    first_of_line = None
    at_line_start = True
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                at_line_start = True
            elif token.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                if at_line_start:
                    first_of_line = token.string
                at_line_start = False
    except (tokenize.TokenError, SyntaxError, ValueError):  # IndentationError is a SyntaxError
        return False
    return first_of_line != "@"


def _new_lines_above(text: str, prefix: str, suffix: str, language: str | None, multiline: bool,
                     validate: bool) -> str:
    """Cursor at the start of a line with code after it: the suggestion is whole lines inserted above that code.

    The line break after the last suggested line is kept, followed by the indentation the model wrote for the
    existing line (a model trained to infill writes exactly what goes between), else the indentation that stood
    before the cursor, so the existing line keeps its place and indentation. The block-end rule allows dedenting
    down to the body of the enclosing definition. A multi-line answer that does not end with a line break is a
    span that ends inside the existing line: it is kept joined to that line when the join reads as intended."""
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    if multiline:
        following = _width(_indent(line_prefix + suffix.split("\n", 1)[0]))
        first = _width(line_prefix + _indent(text.lstrip("\n").split("\n", 1)[0]))
        floor = min(first, following)
        if language in _INDENT_LANGS and first > 0:
            floor = max(1, min(first, _body_floor(prefix)))  # finishing an inner block and going on is fine
        text = cut_suffix_repeat(_cut_below(text, line_prefix, floor, language), prefix, suffix)
        if not text.strip():
            return ""
        if validate and not text.rstrip(" \t").endswith("\n"):
            joined = text.rstrip(" \t") if suffix[:1] in (" ", "\t") else text
            if _joins(joined, prefix, suffix, language, line_prefix):
                return joined
    else:
        text = text.lstrip("\n").split("\n", 1)[0]
    trailing = text[len(text.rstrip()):]
    end = "\n" + line_prefix
    if multiline and "\n" in trailing:
        if trailing[trailing.rfind("\n") + 1:] or suffix[:1] in (" ", "\t"):
            # the model indented the existing line itself, or its indentation is after the cursor
            end = trailing[trailing.rfind("\n"):]
    text = balance_brackets(text.rstrip(), "\n" + suffix, multiline)
    if not text.strip():
        return ""
    text = text.rstrip() + end
    if validate:
        checked = syntax.validate(prefix, text, suffix, language)
        if checked != text:
            checked = checked.rstrip()
            text = checked + "\n" + line_prefix if checked.strip() else ""
    return text


def _joins(joined: str, prefix: str, suffix: str, language: str | None, line_prefix: str) -> bool:
    """Whether a completion that ends inside the existing line is meant to join it: a blank separates it from
    the suffix, or it ends in the middle of a word the suffix continues, or the document parses better joined
    than broken; and joined it adds no parse error and stays inside the block."""
    if not joined.strip():
        return False
    word = re.compile(r"[A-Za-z0-9_]")
    blank_between = joined[-1:] in (" ", "\t") or suffix[:1] in (" ", "\t")
    if not (blank_between or (word.match(joined[-1:]) and word.match(suffix[:1]))):
        broken = joined.rstrip() + "\n" + line_prefix
        around = prefix[-3000:], suffix[:3000]
        errors = [syntax.parse_errors(around[0] + c + around[1], language) for c in (joined, broken)]
        if errors[0] is None or len(errors[0]) >= len(errors[1] or []):
            return False
    return (syntax.validate(prefix, joined, suffix, language) == joined
            and cut_at_block_end(joined, prefix, suffix, language) == joined)


def _cut_below(text: str, line_prefix: str, floor: int, language: str | None) -> str:
    """Keep lines while they stay at or deeper than ``floor`` columns (the code that follows the cursor)."""
    lines = text.lstrip("\n").split("\n") if not line_prefix else text.split("\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if line.strip() and _width(_indent(line)) < floor:
            if language not in _INDENT_LANGS and line.strip()[0] in CLOSERS:
                kept.append(line)
            break
        kept.append(line)
    return "\n".join(kept)


# ---------------------------------------------------------------- rules


def drop_blank(completion: str) -> str:
    return completion if completion and completion.strip() else ""


def drop_line_start_repeat(completion: str, line_prefix: str) -> str:
    """A completion that writes the cursor's line again from its start (``if `` + ``    if not x:``) is
    shown without that repeat: the text before the cursor is never suggested twice."""
    typed = line_prefix.strip()
    if not typed:
        return completion
    m = re.match(r"[ \t]*" + re.escape(typed) + r"(?![A-Za-z0-9_])", completion)
    if m is None:
        return completion
    rest = completion[m.end():]
    return rest[1:] if line_prefix[-1:] in (" ", "\t") and rest[:1] in (" ", "\t") else rest


def first_line(completion: str, prefix: str) -> str:
    """Single-line mode: up to the first line break (a leading break on a blank line is skipped)."""
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    if not line_prefix.strip():
        stripped = completion.lstrip("\n")
        if stripped != completion and line_prefix == "":
            completion = stripped
    return completion.split("\n", 1)[0]


def _width(s: str) -> int:
    return len(s.expandtabs(4))


def _indent(s: str) -> str:
    return s[: len(s) - len(s.lstrip(" \t"))]


def _opens_block(line_prefix: str, language: str | None) -> bool:
    stripped = line_prefix.rstrip()
    if language == "python":
        return stripped.endswith(":")
    return stripped.endswith(("{", "(", "[")) or (language == "bash" and bool(re.search(r"\b(then|do)$", stripped)))


def _first_nonblank(text: str) -> str:
    for line in text.split("\n"):
        if line.strip():
            return line.strip()
    return ""


def _suffix_starts_with_closer(suffix: str) -> bool:
    first = suffix.split("\n", 1)[0].strip()
    return bool(first) and first[0] in CLOSERS


def cut_at_block_end(completion: str, prefix: str, suffix: str, language: str | None) -> str:
    """Stop a multi-line completion where its block ends, judged by indentation."""
    lines = completion.split("\n")
    if len(lines) == 1:
        return completion
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    blank_start = not line_prefix.strip()
    if blank_start:
        base = _width(line_prefix + _indent(lines[0]))
        deeper = False
    else:
        base = _width(_indent(line_prefix))
        deeper = _opens_block(line_prefix, language)
    indent_lang = language in _INDENT_LANGS
    suffix_next = _first_nonblank(suffix)
    if indent_lang and not deeper and base > 0:
        # A right answer often finishes an inner block and goes on in the enclosing one: it may dedent down
        # to the body of the enclosing top-level definition (never to a new top-level statement).
        base = max(1, min(base, _body_floor(prefix)))
    kept = [lines[0]]
    went_deeper = False
    for line in lines[1:]:
        if not line.strip():
            kept.append(line)
            continue
        width = _width(_indent(line))
        stripped = line.strip()
        ends_block = width < base or (deeper and width == base)
        if not ends_block and width == base and went_deeper and base == 0 and indent_lang:
            ends_block = not _PY_CONTINUATION.match(stripped)  # top level: one definition at a time
        if ends_block:
            if indent_lang and _PY_CONTINUATION.match(stripped) and width == base:
                kept.append(line)
                went_deeper = False
                continue
            if not indent_lang and stripped[0] in CLOSERS:
                if _BRACE_CONTINUATION.match(stripped) and not stripped.rstrip().endswith(("}", ")", "]", ";")):
                    kept.append(line)  # "} else {" continues the statement
                    continue
                cursor_rest = suffix.split("\n", 1)[0].strip()
                if cursor_rest[:1] == stripped[:1]:
                    # auto-paired ``{|}``: the suffix closes the block; keep the line break and indentation
                    # so its closer lands on a line of its own
                    kept.append(_indent(line))
                    break
                if stripped == suffix_next:
                    break  # the suffix's next line already closes this block
                kept.append(line)
            break
        if width > base:
            went_deeper = True
        kept.append(line)
    result = "\n".join(kept)
    return result


def _body_floor(prefix: str) -> int:
    """Width of the shallowest indented line between the cursor and the top-level line above it (the body
    of the enclosing definition); a large number when there is none."""
    floor = 1 << 30
    for line in reversed(prefix[-20000:].split("\n")[:-1]):
        if not line.strip():
            continue
        width = _width(_indent(line))
        if width == 0:
            break
        floor = min(floor, width)
    return floor


def _unmatched(text: str) -> int:
    stack, excess = _scan(text)
    return len(stack) + len(excess)


REPEAT_MIN_CHARS = 4  # non-blank characters of the suffix repeated before that alone is evidence of an overrun


def cut_suffix_repeat(completion: str, prefix: str, suffix: str) -> str:
    """The completion cut where it starts writing the suffix again, or unchanged.

    A cut at ``p`` is considered when ``completion[p:]`` (trailing blanks aside) is the beginning of the suffix.
    The longest such repeat is cut when it is evidence of an overrun: it covers the whole first line of the
    suffix, at least ``REPEAT_MIN_CHARS`` non-blank characters or two with a closer (``isupper()`` before
    ``() else``), or the document has fewer unmatched brackets with the cut than without (``foo(x)`` before a
    suffix ``)``). A right answer rarely ends with the text that follows it, so the rule leaves right answers
    alone. Run again after the block-end rules: a model that finishes the line and goes on to a next
    definition leaves a repeat once that definition is cut."""
    if not suffix.strip():
        return completion
    first_line = suffix.split("\n", 1)[0]
    window_prefix, window_suffix = prefix[-2000:], suffix[:2000]
    whole = None
    for p in range(len(completion)):
        repeat = completion[p:].rstrip()
        if not repeat.strip() or not suffix.startswith(repeat):
            continue
        if len(repeat) >= len(first_line) and first_line.strip():
            return completion[:p]  # the whole rest of the cursor's line, or more
        visible = len("".join(repeat.split()))
        if visible >= REPEAT_MIN_CHARS or (visible >= 2 and any(c in CLOSERS for c in repeat)):
            return completion[:p]
        if any(c in CLOSERS for c in repeat):
            if whole is None:
                whole = _unmatched(window_prefix + completion + window_suffix)
            if _unmatched(window_prefix + completion[:p] + window_suffix) < whole:
                return completion[:p]
    return completion


def _scan(text: str) -> tuple[list[str], list[int]]:
    """Unclosed openers left in ``text`` and positions of closers that close nothing in ``text``.

    Quotes on one line are skipped, so brackets inside string literals do not count."""
    stack: list[str] = []
    excess: list[int] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote or ch == "\n":
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if stack and stack[-1] == CLOSERS[ch]:
                stack.pop()
            else:
                excess.append(i)
        i += 1
    return stack, excess


def _closes(suffix: str, needed: list[str]) -> bool:
    """Whether the closers in ``suffix`` that close nothing of its own begin with ``needed``, in order, and
    come before the suffix leaves the current statement (a blank line or a line at the left margin)."""
    block = suffix
    for marker in ("\n\n", "\n\r\n"):
        if marker in block:
            block = block[: block.index(marker)]
    text = block[:2000]
    _, excess = _scan(text)
    return [text[i] for i in excess[: len(needed)]] == needed


def trim_suffix_overlap(completion: str, suffix: str) -> str:
    """Drop the end of the completion that repeats what follows the cursor on its line.

    Closing brackets in the overlap are dropped only when they close something opened before the completion
    (the suffix's copy does that job); ``print(`` + ``foo()`` + ``)`` keeps ``foo()`` whole."""
    rest = suffix.split("\n", 1)[0].strip()
    if not rest:
        return completion
    body = completion.rstrip()
    _, excess = _scan(body)
    excess_set = set(excess)
    for k in range(min(len(rest), len(body)), 0, -1):
        piece = rest[:k]
        if not body.endswith(piece):
            continue
        start = len(body) - k
        if all(body[j] not in CLOSERS or j in excess_set for j in range(start, len(body))):
            if piece.strip() and (any(c in CLOSERS or c in ";,:" for c in piece) or k >= 3):
                return body[:start].rstrip(" \t") if body[:start].strip() else ""
    return completion


def balance_brackets(completion: str, suffix: str, multiline: bool) -> str:
    """Close what the completion opens: by the rest of the line when it has the closers, else appended
    (single line); a multi-line completion left open is cut back to its last line where all was closed."""
    stack, _ = _scan(completion)
    if not stack:
        return completion
    needed = [OPENERS[o] for o in reversed(stack)]
    if needed and _closes(suffix, needed):
        return completion  # the hole is inside an expression that the code after the cursor closes
    rest = suffix.split("\n", 1)[0].lstrip()
    supplied = 0
    for ch in rest:
        if supplied < len(needed) and ch == needed[supplied]:
            supplied += 1
        elif ch in " \t":
            continue
        else:
            break
    missing = "".join(needed[supplied:])
    if not missing:
        return completion
    if not multiline or "\n" not in completion.rstrip():
        return completion.rstrip() + missing
    lines = completion.split("\n")
    for end in range(len(lines) - 1, 0, -1):
        candidate = "\n".join(lines[:end])
        if not _scan(candidate)[0]:
            return candidate
    return ""
