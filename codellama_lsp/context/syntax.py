"""Tree-sitter for the buffers being edited: which language, where the cursor is, and whether a suggestion parses.

Grammars come from the per-language wheels (``tree_sitter_python`` …), loaded lazily and cached; a grammar that is
missing or fails to load only turns syntax decisions off for that language — completion still works.

Three things are decided here, because they need the syntax and nothing else:

* ``analyze`` — whether to complete at the cursor at all, single-line vs multi-line, and the stop strings.
* ``validate`` — a suggestion that makes ``prefix + suggestion + suffix`` gain parse errors is trimmed to its
  longest prefix that does not (whole lines first, then token by token), or dropped.
* ``DocumentTrees`` — one tree per open document, re-parsed incrementally on every change.

Completion policy (deliberate choices):

* Never in the middle of an identifier or right before one (``fo|o``, ``x = |foo``): the model would have to
  guess text that is already there.
* Inside comments and docstrings we *do* complete — continuing prose is useful — but single-line only.
  Inside other string literals, single-line too (finishing a string or a format spec is useful).
* Mid-line (something other than closing brackets/quotes/punctuation after the cursor) → rest of the line only.
* Multi-line when the line ends right after a block opener (``:`` in Python, ``{``, ``(``/``[`` at line end,
  ``then``/``do`` in shell) or when the cursor sits in an empty block body.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# canonical language name -> (wheel module, function returning the language pointer)
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "csharp": ("tree_sitter_c_sharp", "language"),
    "php": ("tree_sitter_php", "language_php"),
    "bash": ("tree_sitter_bash", "language"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
}

# LSP languageId -> canonical name (ids not listed map to themselves)
_LANGUAGE_IDS: dict[str, str] = {
    "javascriptreact": "javascript",
    "jsx": "javascript",
    "typescriptreact": "tsx",
    "c++": "cpp",
    "cuda-cpp": "cpp",
    "objective-cpp": "cpp",
    "c#": "csharp",
    "cs": "csharp",
    "shellscript": "bash",
    "sh": "bash",
    "zsh": "bash",
    "shell": "bash",
    "golang": "go",
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "ts": "typescript",
    "rs": "rust",
}

# Languages without a bundled grammar still get comment syntax and retrieval.
_EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".ino": "cpp", ".cu": "cpp",
    ".cs": "csharp",
    ".php": "php",
    ".sh": "bash", ".bash": "bash", ".zsh": "bash",
    ".go": "go",
    ".rs": "rust",
    ".rb": "ruby", ".lua": "lua", ".kt": "kotlin", ".kts": "kotlin", ".swift": "swift", ".scala": "scala",
    ".hs": "haskell", ".sql": "sql", ".r": "r", ".jl": "julia", ".pl": "perl", ".ex": "elixir", ".exs": "elixir",
    ".dart": "dart", ".m": "objective-c", ".mm": "objective-cpp", ".vue": "vue", ".svelte": "svelte",
    ".html": "html", ".css": "css", ".scss": "scss", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml",
    ".el": "elisp", ".vim": "vim", ".zig": "zig", ".nim": "nim", ".ml": "ocaml", ".fs": "fsharp",
    ".clj": "clojure", ".erl": "erlang", ".ps1": "powershell", ".tf": "terraform",
}
_FILENAMES = {"makefile": "make", "dockerfile": "dockerfile", "cmakelists.txt": "cmake", "rakefile": "ruby"}
_KNOWN = set(_EXTENSIONS.values()) | set(_GRAMMARS) | set(_FILENAMES.values())


def language_for(language_id: str | None, path: str | os.PathLike | None = None) -> str | None:
    """Canonical language name from the LSP ``languageId``, falling back to the file's extension."""
    if language_id:
        lid = language_id.strip().lower()
        lid = _LANGUAGE_IDS.get(lid, lid)
        if lid in _KNOWN:
            return lid
    if path:
        name = os.path.basename(os.fspath(path)).lower()
        if name in _FILENAMES:
            return _FILENAMES[name]
        return _EXTENSIONS.get(os.path.splitext(name)[1])
    return None


def has_grammar(language: str | None) -> bool:
    return get_language(language) is not None


@lru_cache(maxsize=None)
def get_language(language: str | None) -> Any | None:
    """The tree-sitter ``Language`` for a canonical name, or None when the grammar wheel is absent/broken."""
    if not language or language not in _GRAMMARS:
        return None
    module_name, func = _GRAMMARS[language]
    try:
        import tree_sitter

        module = importlib.import_module(module_name)
        return tree_sitter.Language(getattr(module, func)())
    except Exception:  # missing wheel, ABI mismatch: degrade, never crash
        return None


_parsers = threading.local()


def _parser(language: str) -> Any | None:
    """One parser per thread and language (tree-sitter parsers are not thread-safe)."""
    lang = get_language(language)
    if lang is None:
        return None
    cache = getattr(_parsers, "cache", None)
    if cache is None:
        cache = _parsers.cache = {}
    parser = cache.get(language)
    if parser is None:
        import tree_sitter

        parser = cache[language] = tree_sitter.Parser(lang)
    return parser


def parse(text: str, language: str | None, old_tree: Any = None) -> Any | None:
    parser = _parser(language) if language else None
    if parser is None:
        return None
    data = text.encode("utf-8", "surrogatepass")
    return parser.parse(data, old_tree) if old_tree is not None else parser.parse(data)


# ---------------------------------------------------------------- incremental trees per document


def _point(data: bytes, offset: int) -> tuple[int, int]:
    row = data.count(b"\n", 0, offset)
    col = offset - (data.rfind(b"\n", 0, offset) + 1)
    return row, col


def _common_prefix_len(a: bytes, b: bytes) -> int:
    """Length of the common prefix, by bisection on slice equality (C-speed comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix_len(a: bytes, b: bytes, limit: int) -> int:
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class _Doc:
    language: str | None
    data: bytes
    tree: Any


class DocumentTrees:
    """The syntax tree of every open document, kept current incrementally.

    Two ways to feed it, both re-using the old tree so only the edited region is re-parsed:

    * ``update(uri, text, language)`` with the full new text (didOpen, and didChange with full sync or after
      applying the change events yourself): the edit is found by diffing old and new bytes (common prefix and
      suffix), then ``tree.edit`` + ``parser.parse(new, old_tree)``.
    * ``apply_edit(uri, start_byte, old_end_byte, new_end_byte, start_point, old_end_point, new_end_point,
      new_text)`` when the caller already knows the edit in tree-sitter terms (UTF-8 byte offsets, (row, byte
      column) points); ``new_text`` is the full text after the edit.

    Thread-safe: one lock guards the map; parsing happens under it (parses are incremental and short).
    """

    def __init__(self) -> None:
        self._docs: dict[str, _Doc] = {}
        self._lock = threading.Lock()

    def update(self, uri: str, text: str, language: str | None) -> Any | None:
        data = text.encode("utf-8", "surrogatepass")
        with self._lock:
            doc = self._docs.get(uri)
            parser = _parser(language) if language else None
            if parser is None:
                self._docs[uri] = _Doc(language, data, None)
                return None
            if doc is None or doc.tree is None or doc.language != language:
                tree = parser.parse(data)
            elif doc.data == data:
                return doc.tree
            else:
                old = doc.data
                start = _common_prefix_len(old, data)
                tail = _common_suffix_len(old, data, min(len(old), len(data)) - start)
                old_end, new_end = len(old) - tail, len(data) - tail
                doc.tree.edit(
                    start_byte=start,
                    old_end_byte=old_end,
                    new_end_byte=new_end,
                    start_point=_point(old, start),
                    old_end_point=_point(old, old_end),
                    new_end_point=_point(data, new_end),
                )
                tree = parser.parse(data, doc.tree)
            self._docs[uri] = _Doc(language, data, tree)
            return tree

    def apply_edit(
        self,
        uri: str,
        start_byte: int,
        old_end_byte: int,
        new_end_byte: int,
        start_point: tuple[int, int],
        old_end_point: tuple[int, int],
        new_end_point: tuple[int, int],
        new_text: str,
    ) -> Any | None:
        data = new_text.encode("utf-8", "surrogatepass")
        with self._lock:
            doc = self._docs.get(uri)
            if doc is None or doc.tree is None:
                language = doc.language if doc else None
            else:
                language = doc.language
                doc.tree.edit(
                    start_byte=start_byte,
                    old_end_byte=old_end_byte,
                    new_end_byte=new_end_byte,
                    start_point=tuple(start_point),
                    old_end_point=tuple(old_end_point),
                    new_end_point=tuple(new_end_point),
                )
                parser = _parser(language)
                tree = parser.parse(data, doc.tree) if parser else None
                self._docs[uri] = _Doc(language, data, tree)
                return tree
        return self.update(uri, new_text, language)

    def tree(self, uri: str) -> Any | None:
        with self._lock:
            doc = self._docs.get(uri)
            return doc.tree if doc else None

    def tree_for(self, uri: str, text: str) -> Any | None:
        """The tree of ``uri`` only if it was parsed from exactly ``text`` (else None: parse it yourself)."""
        with self._lock:
            doc = self._docs.get(uri)
        if doc is None or doc.tree is None:
            return None
        return doc.tree if doc.data == text.encode("utf-8", "surrogatepass") else None

    def language(self, uri: str) -> str | None:
        with self._lock:
            doc = self._docs.get(uri)
            return doc.language if doc else None

    def close(self, uri: str) -> None:
        with self._lock:
            self._docs.pop(uri, None)

    def __contains__(self, uri: str) -> bool:
        with self._lock:
            return uri in self._docs


# ---------------------------------------------------------------- cursor decisions


@dataclass
class CursorDecision:
    complete: bool
    multiline: bool
    reason: str
    indent: str = ""  # leading whitespace of the cursor's line (the block the completion belongs to)
    stop_strings: list[str] = field(default_factory=list)


_IDENT = re.compile(r"[A-Za-z0-9_$]")
MAX_LINE_CHARS = 5_000  # longer lines are minified/generated: no suggestion there
_CLOSERS_ONLY = re.compile(r"""^[\s)\]}>"'`;,.:]*$""")
_BRACE_LANGS = {"javascript", "typescript", "tsx", "java", "c", "cpp", "csharp", "php", "go", "rust"}
_PY_CONTINUATION = ("else", "elif", "except", "finally", "case")


def _opener_at_line_end(line_prefix: str, language: str | None) -> bool:
    stripped = _strip_line_comment(line_prefix, language).rstrip()
    if not stripped:
        return False
    if stripped.endswith(("{", "(", "[")):
        return True
    if language == "python" and stripped.endswith(":"):
        return True
    if language in ("javascript", "typescript", "tsx") and stripped.endswith("=>"):
        return True
    if language == "bash" and re.search(r"(^|[;\s])(then|do|else)$", stripped):
        return True
    return False


def _strip_line_comment(line: str, language: str | None) -> str:
    marker = "#" if language in ("python", "bash") else "//" if language in _BRACE_LANGS else None
    if marker and marker in line:
        # cheap: ignore a marker inside quotes only when quotes are balanced before it
        idx = line.find(marker)
        before = line[:idx]
        if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
            return before
    return line


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _empty_block_body(prefix: str, suffix: str, language: str | None) -> bool:
    """The cursor is on a blank line that is the only content of a just-opened block."""
    before = prefix.rstrip()
    after = suffix.lstrip()
    if language == "python":
        header = before[before.rfind("\n") + 1 :]  # no split of the whole prefix: files can be megabytes
        if not _strip_line_comment(header, language).rstrip().endswith(":"):
            return False
        if suffix.split("\n", 1)[0].strip():
            return False
        nxt, pos = None, suffix.find("\n")
        while pos >= 0:  # the next non-blank line
            end = suffix.find("\n", pos + 1)
            line = suffix[pos + 1 : end if end >= 0 else len(suffix)]
            if line.strip():
                nxt = line
                break
            pos = end
        return nxt is None or len(_indent_of(nxt)) <= len(_indent_of(header))
    if language == "bash":
        return bool(re.search(r"(^|[;\s])(then|do|else|\{)$", before)) and bool(
            re.match(r"(?:fi|done|esac|else|elif)\b|\}", after) or not after
        )
    return before.endswith(("{", "(", "[")) and (after[:1] in ("}", ")", "]") or not after)


def _node_kind_at(tree: Any, offset_bytes: int) -> str:
    """'comment', 'docstring', 'string' or '' for the innermost node containing the cursor."""
    if tree is None:
        return ""
    root = tree.root_node
    node = root.descendant_for_byte_range(max(offset_bytes - 1, 0), max(offset_bytes - 1, 0))
    while node is not None:
        kind = node.type
        if "comment" in kind:
            if node.start_byte < offset_bytes <= node.end_byte:
                return "comment"
        if kind in ("string", "string_literal", "template_string", "raw_string_literal", "interpreted_string_literal",
                    "encapsed_string", "verbatim_string_literal"):
            if node.start_byte < offset_bytes < node.end_byte or (node.has_error and offset_bytes >= node.end_byte):
                parent = node.parent
                if parent is not None and parent.type == "expression_statement" and parent.named_child_count == 1:
                    return "docstring"
                return "string"
        node = node.parent
    return ""


def analyze(text: str, offset: int, language: str | None, tree: Any = None, *, force: bool = False) -> CursorDecision:
    """Decide whether and how to complete at ``offset`` (a str index into ``text``). ``force`` (the user
    asked explicitly) completes even inside or right before an identifier, and is never limited to one
    line: an explicit request may fill a hole inside a line that spans lines (the model ends it, and the
    clean-up cuts an overrun where it starts repeating the code after the cursor)."""
    decision = _analyze(text, offset, language, tree, force=force)
    if force and decision.complete and not decision.multiline:
        line_start = text.rfind("\n", 0, max(0, min(offset, len(text)))) + 1
        indent = decision.indent
        stops = _multiline_stops(language, indent) if text[line_start:offset].strip() else [*decision.stop_strings]
        stops = [s for s in stops if s != "\n"] or _multiline_stops(language, indent)
        return CursorDecision(True, True, decision.reason + " (invoked: may span lines)", indent, stops)
    return decision


def _analyze(text: str, offset: int, language: str | None, tree: Any = None, *, force: bool = False) -> CursorDecision:
    offset = max(0, min(offset, len(text)))
    prefix, suffix = text[:offset], text[offset:]
    line_start = prefix.rfind("\n") + 1
    line_prefix = prefix[line_start:]
    line_end = suffix.find("\n")
    line_suffix = suffix if line_end < 0 else suffix[:line_end]
    indent = _indent_of(line_prefix)
    before = prefix[-1:]
    after = suffix[:1]

    if len(line_prefix) + len(line_suffix) > MAX_LINE_CHARS:
        # minified or generated code: nothing useful to suggest, and every step after this scales with the line
        return CursorDecision(False, False, "line too long (minified or generated code)", indent)
    if after and _IDENT.match(after) and line_prefix and not force:
        if before and _IDENT.match(before):
            return CursorDecision(False, False, "inside an identifier", indent)
        return CursorDecision(False, False, "right before an identifier", indent)

    kind = ""
    if tree is not None:
        kind = _node_kind_at(tree, len(prefix.encode("utf-8", "surrogatepass")))
    elif language and has_grammar(language):
        # no tree from DocumentTrees: parse only the cursor's neighbourhood, cheap on big files
        win_prefix, win_suffix = _window(prefix, suffix, 60, 20)
        kind = _node_kind_at(parse(win_prefix + win_suffix, language), len(win_prefix.encode("utf-8", "surrogatepass")))
    single_stop = ["\n"]
    if kind in ("comment", "docstring", "string"):
        return CursorDecision(True, False, f"inside a {kind}: single line", indent, single_stop)

    rest = line_suffix.strip()
    if rest and not line_prefix.strip() and not _CLOSERS_ONLY.match(line_suffix):
        # at the start of a line that has code after the cursor: the suggestion is whole new line(s) above it,
        # ended by the model (FIM) where the existing code continues; postprocess keeps the line break
        return CursorDecision(True, True, "line start: new lines above the existing code", indent,
                              _multiline_stops(language, indent))
    if rest and not _CLOSERS_ONLY.match(line_suffix):
        return CursorDecision(True, False, "mid-line: rest of the line", indent, single_stop)

    if _opener_at_line_end(line_prefix, language) or _empty_block_body(prefix, suffix, language):
        header_indent = indent
        if not line_prefix.strip():  # blank line inside the block: the header is the previous non-blank line
            prev = prefix[:line_start].rstrip("\n").rsplit("\n", 1)[-1]
            header_indent = _indent_of(prev)
        return CursorDecision(True, True, "block opened: multi-line", indent, _multiline_stops(language, header_indent))
    if not line_prefix.strip():
        # a new statement on a blank line: the infilling model ends it (EOT); the block-end rule is the backstop
        return CursorDecision(True, True, "blank line: multi-line", indent, _multiline_stops(language, indent))
    return CursorDecision(True, False, "line end: single line", indent, single_stop)


def _multiline_stops(language: str | None, header_indent: str) -> list[str]:
    """Strings the decoder can stop at early; postprocess.clean still cuts at the block's end."""
    stops = ["\n\n\n"]
    if language == "python":
        stops += [f"\n{header_indent}{kw}" for kw in ("def ", "class ", "@", "if __name__")]
    return stops


# ---------------------------------------------------------------- candidate validation


def parse_errors(text: str, language: str | None) -> list[tuple[int, int, bool]] | None:
    """(start_byte, end_byte, is_missing) of every ERROR and MISSING node; None without a grammar."""
    tree = parse(text, language)
    if tree is None:
        return None
    root = tree.root_node
    if not root.has_error:
        return []
    out = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            out.append((node.start_byte, node.end_byte, node.is_missing))
            continue
        if node.has_error:
            stack.extend(node.children)
    return out


def error_count(text: str, language: str | None) -> int | None:
    """ERROR plus MISSING nodes in the parse of ``text``; None without a grammar."""
    errors = parse_errors(text, language)
    return None if errors is None else len(errors)


_TOKEN_CUTS = re.compile(r"[A-Za-z0-9_$]+|\s+|.", re.S)
_WINDOW_LINES_BEFORE, _WINDOW_LINES_AFTER = 150, 80


def _window(prefix: str, suffix: str, before: int = _WINDOW_LINES_BEFORE,
            after: int = _WINDOW_LINES_AFTER) -> tuple[str, str]:
    """Parse only the neighbourhood of the cursor: validation cost must not grow with the file."""
    if len(prefix) > before * 200:
        prefix = prefix[-before * 200:]
    if len(suffix) > after * 200:
        suffix = suffix[: after * 200]
    pre_lines = prefix.split("\n")
    if len(pre_lines) > before:
        # start the window at a line with no indentation so it begins at a statement boundary
        start = len(pre_lines) - before
        floor = max(0, start - before // 2)
        while start > floor and pre_lines[start][:1] in (" ", "\t", ""):
            start -= 1
        prefix = "\n".join(pre_lines[start:])
    suf_lines = suffix.split("\n")
    if len(suf_lines) > after:
        end = after
        ceiling = min(len(suf_lines), end + after // 2)
        while end < ceiling and suf_lines[end][:1] in (" ", "\t", ""):
            end += 1
        suffix = "\n".join(suf_lines[:end])
    return prefix, suffix


@lru_cache(maxsize=4)
def _errors_without(prefix: str, suffix: str, language: str | None) -> tuple[tuple[int, int, bool], ...] | None:
    """The parse errors of the window without a completion: the same for the first answer and every alternative
    of one request (and every cut tried), so parsed once."""
    errors = parse_errors(prefix + suffix, language)
    return None if errors is None else tuple(errors)


def validate(prefix: str, completion: str, suffix: str, language: str | None) -> str:
    """``completion`` trimmed to its longest prefix that adds no parse errors to ``prefix + … + suffix``, or "".

    Candidates are tried longest first: the whole text, then cuts at line ends, then, inside the first line
    that breaks the parse, cuts at token boundaries. Without a grammar the completion is returned unchanged.
    """
    if not completion:
        return ""
    if get_language(language) is None:
        return completion
    prefix, suffix = _window(prefix, suffix)
    base = _errors_without(prefix, suffix, language)
    if base is None:
        return completion
    start = len(prefix.encode("utf-8", "surrogatepass"))
    missing_at_cursor = any(missing and s == start for s, _, missing in base)

    # an unfinished construct before the cursor that swallows the rest of the text (``function f() {`` at the
    # end of a file) cannot be judged: errors spanning the completion from there are not held against it
    base_len = len((prefix + suffix).encode("utf-8", "surrogatepass"))
    open_to_end = any(s < start and e >= base_len - 1 for s, e, _ in base)

    def ok(candidate: str) -> bool:
        """No more errors than without it, none inside it, and no earlier error grown over it."""
        errors = parse_errors(prefix + candidate + suffix, language) or []
        if len(errors) > len(base):
            return False
        end = start + len(candidate.encode("utf-8", "surrogatepass"))
        for s, e, missing in errors:
            if start <= s < end or (missing and s == end and not missing_at_cursor):
                return False
            if s < start < e and not open_to_end:
                return False
        return True

    if ok(completion):
        return completion
    # line cuts, longest first
    ends = [i for i, ch in enumerate(completion) if ch == "\n"]
    good_line = ""
    for end in reversed(ends):
        cand = completion[:end].rstrip()
        if cand and ok(cand):
            good_line = cand
            break
    # token cuts inside the first line after the last good line cut
    good_end = len(good_line)
    nxt = completion.find("\n", good_end + 1)
    segment_end = len(completion) if nxt < 0 else nxt
    cuts = [m.end() for m in _TOKEN_CUTS.finditer(completion, good_end, segment_end)]
    for end in reversed(cuts[:-1] if segment_end == len(completion) else cuts):
        cand = completion[:end].rstrip()
        if len(cand) <= len(good_line):
            break
        if cand.strip() and ok(cand):
            return cand
    return good_line
