"""Repository context for one cursor: which snippets of other code the model should see, and why.

Candidates, strongest first:

1. **definition** — definitions of the names used near the cursor, resolved through the file's imports
   (``from .x import Y``, ``import a.b as c`` + ``c.attr``, JS/TS relative imports, Go/Java/Rust/C best effort),
   else through the workspace-wide definition table when the name is unambiguous;
2. **import** — definitions of everything else the file imports from workspace files (a module imported whole
   contributes an outline: the header line of each of its definitions);
3. **recent edit** — lines around the user's latest edits;
4. **open document** — the best matching windows of the other open documents (their unsaved text);
5. **similar code** — BM25 over sliding windows of every indexed file (20 lines, stride 10), queried with the
   lines just above the cursor: CrossCodeEval's retrieval baseline.

Every candidate is deduplicated against the text already in the prompt and against the other candidates, counted
with the model's tokenizer, and chosen greedily by relevance until the token budget is spent. The result is
returned in *prompt order*: least relevant first, the strongest nearest the cursor, and stable while the cursor
stays in the same scope (snippets kept from the previous request keep their place; new ones are appended), so
successive prompts share a long token prefix and the KV cache is reused.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
from array import array
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from . import syntax
from .prompt import Snippet
from .workspace import Definition, Import, WorkspaceIndex, import_lines, parse_imports, redact_secrets

log = logging.getLogger(__name__)

WINDOW_LINES = 20
WINDOW_STRIDE = 10
QUERY_LINES = 20
MAX_DEFINITION_LINES = 40
MAX_OUTLINE_MEMBERS = 16

# prompt order: lower tiers are placed first (farthest from the cursor)
TIERS = {"similar code": 0, "open document": 1, "recent edit": 2, "import": 3, "definition": 4}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATTR = re.compile(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_CALLED = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\(")
# names the file binds itself: assignment targets, loop/with/import aliases, its own definitions, parameters
_BOUND = re.compile(r"\b(?:def|class|function|func|fn|let|const|var|as|for)\s+([A-Za-z_]\w*)"
                    r"|^[ \t]*([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=(?!=)", re.M)
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z0-9])|[A-Z]?[a-z0-9]+|[A-Z]+")
_PARAMS = re.compile(r"\b(?:def|function|func|fn)\s+\w*\s*\(([^)]*)\)")
_PARAM_NAME = re.compile(r"(?:^|,)\s*\**([A-Za-z_]\w*)")


def bound_names(text: str) -> set[str]:
    names = {a or b for a, b in _BOUND.findall(text)}
    for params in _PARAMS.findall(text):
        names.update(_PARAM_NAME.findall(params))
    return names


_STOP = frozenset(
    "self cls def return if elif else for while in is not and or import from class as with try except finally "
    "raise pass none true false this const let var function new public private protected static void int str "
    "string bool boolean float double char long the of to a an be it func fn pub mut use struct impl package "
    "null nil undefined async await yield lambda break continue case switch default throw throws catch extends "
    "implements interface type enum include define echo then fi do done end".split()
)


def split_terms(text: str) -> list[str]:
    """BM25 terms: identifiers lower-cased, plus their snake/camel-case parts (``getUserName`` -> get, user, name)."""
    out: list[str] = []
    for ident in _IDENT.findall(text):
        low = ident.lower()
        if low in _STOP or len(low) < 2:
            continue
        out.append(low)
        parts = [p.lower() for chunk in ident.split("_") for p in _CAMEL.findall(chunk)]
        if len(parts) > 1:
            out.extend(p for p in parts if len(p) > 1 and p not in _STOP)
    return out


@dataclass(frozen=True)
class Window:
    path: str
    start_line: int  # 1-based, inclusive
    end_line: int


class BM25Windows:
    """BM25 (k1=1.2, b=0.75) over sliding line windows of many files, updatable one file at a time.

    Compact, because a big repository has millions of (term, window) postings: each term's postings are two
    typed arrays (window ids, term frequencies: 6 bytes a posting, where dicts of ints took ~100), window ids are
    never reused, and a removed window is only marked dead (its length 0) and dropped from a term's arrays the
    next time that term is scored. Scoring is vectorised: each query term's (window id, weight) arrays are cached
    as numpy arrays and summed with ``bincount``, so a query over ~50k windows takes about a millisecond.
    """

    def __init__(self, window_lines: int = WINDOW_LINES, stride: int = WINDOW_STRIDE) -> None:
        self.window_lines, self.stride = window_lines, stride
        self._lock = threading.RLock()
        self._windows: list[Window | None] = []
        self._lengths = array("I")
        # path -> (window ids, its distinct terms; None when loaded from the store)
        self._by_path: dict[str, tuple[array, tuple[str, ...] | None]] = {}
        self._postings: dict[str, tuple[array, array]] = {}  # term -> (window ids, term frequencies)
        self._arrays: dict[str, tuple[Any, Any]] = {}
        self._total_len = 0
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._by_path)

    def windows_of(self, text: str) -> list[tuple[int, int, Counter]]:
        lines = text.split("\n")
        line_terms = [split_terms(line) for line in lines]
        out = []
        n = len(lines)
        start = 0
        while True:
            end = min(start + self.window_lines, n)
            terms: Counter = Counter()
            for i in range(start, end):
                terms.update(line_terms[i])
            if terms:
                out.append((start + 1, end, terms))
            if end >= n:
                break
            start += self.stride
        return out

    def set_file(self, path: str, text: str | None) -> None:
        """Replace the windows of ``path`` (``text=None`` removes the file)."""
        windows = self.windows_of(text) if text else []
        with self._lock:
            self._remove(path)
            if not windows:
                return
            wids = array("I")
            distinct: set[str] = set()
            for start, end, terms in windows:
                wid = len(self._windows)
                length = sum(terms.values())
                self._windows.append(Window(path, start, end))
                self._lengths.append(length)
                self._total_len += length
                self._live += 1
                for term, tf in terms.items():
                    posting = self._postings.get(term)
                    if posting is None:
                        term = sys.intern(term)
                        posting = self._postings[term] = (array("I"), array("H"))
                    posting[0].append(wid)
                    posting[1].append(min(tf, 65535))
                distinct.update(terms)
                wids.append(wid)
            for term in distinct:
                self._arrays.pop(term, None)
            self._by_path[path] = (wids, tuple(sys.intern(t) for t in distinct))

    def _remove(self, path: str) -> None:
        item = self._by_path.pop(path, None)
        if item is None:
            return
        wids, terms = item
        for wid in wids:
            self._total_len -= self._lengths[wid]
            self._lengths[wid] = 0
            self._windows[wid] = None
            self._live -= 1
        if terms is None:  # loaded from the store, which keeps no per-file term list: drop every cached array
            self._arrays.clear()
            return
        for term in terms:
            self._arrays.pop(term, None)

    def export_state(self, keys: dict[str, Any]) -> dict[str, Any]:
        """The live windows of the files in ``keys`` (path -> what to store with it), compacted (dead windows
        and postings dropped, ids renumbered), as ``bm25_store`` writes it. Copies under the lock, works outside."""
        import numpy as np

        empty = array("I")
        with self._lock:
            paths = list(keys)  # files without any window too (their key says so)
            wid_lists = [self._by_path[p][0] if p in self._by_path else empty for p in paths]
            windows = list(self._windows)
            lengths = np.array(self._lengths, dtype=np.int64)
            terms = list(self._postings)
            counts = np.fromiter((len(self._postings[t][0]) for t in terms), dtype=np.int64, count=len(terms))
            ids, tfs = array("I"), array("H")
            for t in terms:
                ids.extend(self._postings[t][0])
                tfs.extend(self._postings[t][1])
        order = np.concatenate([np.frombuffer(w, dtype=np.uintc) for w in wid_lists]).astype(np.int64) \
            if wid_lists else np.zeros(0, dtype=np.int64)
        remap = np.full(len(windows), -1, dtype=np.int64)
        remap[order] = np.arange(len(order))
        old_ids = np.frombuffer(ids, dtype=np.uintc).astype(np.int64)
        new_ids = remap[old_ids] if len(old_ids) else old_ids
        keep = new_ids >= 0
        term_of = np.repeat(np.arange(len(terms)), counts)
        kept_counts = np.bincount(term_of[keep], minlength=len(terms))
        present = kept_counts > 0
        return {
            "window_lines": self.window_lines, "stride": self.stride,
            "paths": paths, "keys": [keys[p] for p in paths],
            "win_path": np.repeat(np.arange(len(paths)), [len(w) for w in wid_lists]),
            "win_start": np.array([windows[w].start_line for w in order], dtype=np.int64),
            "win_end": np.array([windows[w].end_line for w in order], dtype=np.int64),
            "win_len": lengths[order],
            "terms": [t for t, here in zip(terms, present) if here],
            "term_counts": kept_counts[present],
            "post_ids": new_ids[keep], "post_tfs": np.frombuffer(tfs, dtype=np.ushort)[keep],
        }

    def import_state(self, state: dict[str, Any]) -> bool:
        """Take the windows of a stored state (``export_state``'s, read back by ``bm25_store``); only into an
        empty instance with the same window shape. Returns whether it did."""
        if (state["window_lines"], state["stride"]) != (self.window_lines, self.stride):
            return False
        paths = [sys.intern(p) for p in state["paths"]]
        win_path = state["win_path"]
        windows = [Window(paths[p], s, e) for p, s, e in zip(win_path, state["win_start"], state["win_end"])]
        by_path: dict[str, tuple[array, tuple[str, ...] | None]] = {}
        first = 0
        for i, path in enumerate(paths):
            last = first
            while last < len(win_path) and win_path[last] == i:
                last += 1
            by_path[path] = (array("I", range(first, last)), None)
            first = last
        postings: dict[str, tuple[array, array]] = {}
        ids_view, tfs_view = memoryview(state["post_ids"]).cast("B"), memoryview(state["post_tfs"]).cast("B")
        pos = 0
        for term, n in zip(state["terms"], state["term_counts"]):
            ids, tfs = array("I"), array("H")
            ids.frombytes(ids_view[pos * 4:(pos + n) * 4])
            tfs.frombytes(tfs_view[pos * 2:(pos + n) * 2])
            postings[sys.intern(term)] = (ids, tfs)
            pos += n
        lengths = array("I", state["win_len"])
        with self._lock:
            if self._by_path or self._windows:
                return False
            self._windows, self._lengths, self._by_path, self._postings = windows, lengths, by_path, postings
            self._arrays = {}
            self._total_len = sum(lengths)
            self._live = len(windows)
        return True

    def _term_arrays(self, term: str) -> tuple[Any, Any] | None:
        import numpy as np

        cached = self._arrays.get(term)
        if cached is not None:
            return cached
        posting = self._postings.get(term)
        if not posting:
            return None
        ids = np.array(posting[0], dtype=np.int64)
        tfs = np.array(posting[1], dtype=np.float64)
        lengths = np.frombuffer(self._lengths, dtype=np.uintc)[ids].astype(np.float64)
        alive = lengths > 0
        if not alive.all():
            ids, tfs, lengths = ids[alive], tfs[alive], lengths[alive]
            if not len(ids):
                del self._postings[term]
                return None
            if 2 * len(ids) < len(posting[0]):  # mostly dead: drop the dead postings for good
                self._postings[term] = (array("I", ids.astype(np.uintc).tobytes()),
                                        array("H", tfs.astype(np.ushort).tobytes()))
        n = max(self._live, 1)
        avgdl = self._total_len / n if self._total_len else 1.0
        df = len(ids)
        idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        k1, b = 1.2, 0.75
        weights = idf * tfs * (k1 + 1) / (tfs + k1 * (1 - b + b * lengths / avgdl))
        self._arrays[term] = (ids, weights)
        return ids, weights

    def search(self, query_terms: Iterable[str], k: int = 20,
               exclude: Callable[[Window], bool] | None = None) -> list[tuple[float, Window]]:
        import numpy as np

        with self._lock:
            if not self._live:
                return []
            parts = [self._term_arrays(t) for t in set(query_terms)]
            parts = [p for p in parts if p is not None]
            if not parts:
                return []
            ids = np.concatenate([p[0] for p in parts])
            weights = np.concatenate([p[1] for p in parts])
            scores = np.bincount(ids, weights=weights, minlength=len(self._windows))
            want = min(len(scores), k * 3 + 8)
            top = np.argpartition(-scores, want - 1)[:want] if want < len(scores) else np.arange(len(scores))
            top = top[np.argsort(-scores[top], kind="stable")]
            out = []
            for wid in top:
                score = float(scores[wid])
                window = self._windows[int(wid)]
                if score <= 0 or window is None:
                    continue
                if exclude is not None and exclude(window):
                    continue
                out.append((score, window))
                if len(out) >= k:
                    break
            return out


Part = tuple[int, tuple[int, ...], str]  # (first line, lines shown, text) of one definition's signature


@dataclass
class _Candidate:
    path: str
    start_line: int
    end_line: int
    text: str
    reason: str
    tier: str
    weight: float
    shown: tuple[int, ...] | None = None  # the lines displayed when not the whole range (outlines, signatures)
    parts: tuple[Part, ...] | None = None  # a signature group's pieces, most wanted first (may be dropped)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path, self.start_line, self.end_line)

    def lines_shown(self) -> set[int]:
        return set(self.shown) if self.shown is not None else set(range(self.start_line, self.end_line + 1))


class _TextCache:
    """Recently read files, keyed by path and validated by mtime: snippet extraction must not re-read disk."""

    def __init__(self, index: WorkspaceIndex | None, size: int = 256) -> None:
        self.index = index
        self.size = size
        self._items: OrderedDict[str, tuple[int, list[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def lines(self, path: str) -> list[str] | None:
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return None
        with self._lock:
            item = self._items.get(path)
            if item is not None and item[0] == mtime:
                self._items.move_to_end(path)
                return item[1]
        text = self.index.read_text(path) if self.index is not None else None
        if text is None:
            return None
        lines = text.split("\n")
        with self._lock:
            self._items[path] = (mtime, lines)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return lines


def _resolve_python(spec: str, name: str | None, path: str, index: WorkspaceIndex) -> list[str]:
    """Workspace files a Python import refers to (the module, or the submodule when ``name`` is one)."""
    dots = len(spec) - len(spec.lstrip("."))
    rest = spec[dots:]
    candidates: list[str] = []
    if dots:
        base = os.path.dirname(path)
        for _ in range(dots - 1):
            base = os.path.dirname(base)
        stem = os.path.join(base, *rest.split(".")) if rest else base
        for target in ([os.path.join(stem, name)] if name else []) + [stem]:
            candidates += [target + ".py", os.path.join(target, "__init__.py")]
        return [c for c in candidates if index.entry(c) is not None]
    table = index.module_files()
    found: list[str] = []
    parts = rest.split(".")
    # the workspace root may be the package itself (``import pkg.x`` with root .../pkg): then "pkg" is the root
    attempts = [parts]
    root_dir = index.root_of(path)
    if root_dir and parts[0] == os.path.basename(root_dir):
        attempts.append(parts[1:])
    for attempt in attempts:
        dotted = ".".join(attempt)  # "" for the root package itself (the root's own __init__.py)
        if name:
            found += table.get(f"{dotted}.{name}" if dotted else name, [])
        found += table.get(dotted, [])
        if found:
            break
    root = index.root_of(path)
    same_root = [f for f in found if index.root_of(f) == root]
    return same_root or found


_JS_EXTS = ("", ".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", "/index.ts", "/index.tsx", "/index.js")


def resolve_import(imp: Import, path: str, language: str | None, index: WorkspaceIndex,
                   name: str | None = None) -> list[str]:
    """Workspace files an import statement refers to; [] when it is external or unresolvable."""
    if language == "python":
        return _resolve_python(imp.module, name, path, index)
    if language in ("javascript", "typescript", "tsx"):
        base = os.path.normpath(os.path.join(os.path.dirname(path), imp.module))
        stem = re.sub(r"\.(js|jsx|mjs|cjs)$", "", base)
        return [c for c in dict.fromkeys([base + e for e in _JS_EXTS] + [stem + e for e in _JS_EXTS])
                if index.entry(c) is not None][:1]
    table = index.module_files()
    if language == "go":
        parts = imp.module.split("/")
        for i in range(len(parts)):
            suffix = os.sep.join(parts[i:]) + os.sep
            hits = [f for f in index.files() if os.path.dirname(f).endswith(os.sep + suffix.rstrip(os.sep))]
            if hits:
                return hits
        return []
    if language in ("java", "csharp"):
        return table.get(imp.module, [])
    if language == "rust":
        dotted = imp.module.replace("::", ".")
        while dotted:
            if dotted in table:
                return table[dotted]
            dotted = dotted.rpartition(".")[0]
        return []
    if language in ("c", "cpp"):
        target = os.path.normpath(os.path.join(os.path.dirname(path), imp.module))
        if index.entry(target) is not None:
            return [target]
        tail = os.sep + imp.module.replace("/", os.sep)
        return [f for f in index.files() if f.endswith(tail)][:1]
    return []


def _scope_key(lines: Sequence[str], cursor_line: int) -> tuple[int, str]:
    """The enclosing top-level construct: the last unindented, non-closing line at or above the cursor."""
    for i in range(min(cursor_line, len(lines) - 1), max(-1, cursor_line - 600), -1):
        line = lines[i]
        if line and not line[0].isspace() and line[0] not in "})]#/*":
            return i, line[:80]
    return -1, ""


class Retriever:
    """Ranks repository context for a cursor; one per workspace index (state: BM25 windows, last selection)."""

    def __init__(self, index: WorkspaceIndex | None = None) -> None:
        self.index = index
        self._bm25 = BM25Windows()
        self._open_bm25 = BM25Windows()
        self._open_texts: dict[str, int] = {}
        # An index still empty (the server's, about to fill in the background) feeds the BM25 windows through its
        # notifications from the start; a built one is read whole by ``warm()``.
        self._built = index is None or index.count() == 0
        self._build_lock = threading.RLock()
        self._texts = _TextCache(index)
        self._token_counts: OrderedDict[str, int] = OrderedDict()
        self._last: tuple[Any, list[tuple[str, int, int]]] | None = None
        self._resolved: dict[tuple, list[str]] = {}
        self._import_cache: dict[tuple, list[Import]] = {}
        self._import_bucket: tuple[Any, list[Import]] = (None, [])
        self._usage: Counter = Counter()
        self._usage_key: tuple | None = None
        self._usage_cache: tuple[Counter, Counter, set[str]] = (Counter(), Counter(), set())
        # The persisted windows (bm25_store): path -> (mtime_ns, size) of the text its windows came from; paths
        # loaded from the store stay "unconfirmed" until the index reports the same key (else they are re-read).
        self._keys: dict[str, tuple[int, int]] = {}
        self._unconfirmed: set[str] = set()
        self._store = index.bm25_store_path() if index is not None and index.persist else None
        self._store_checked = False
        self._dirty = False
        # bounded on disk by about the index's memory budget (the windows are part of what that budget estimates)
        self.store_limit_bytes = max(64 * 2**20, int(index.memory_budget)) if index is not None else 0
        self.stats = {"read": 0, "from_store": 0}
        if index is not None:
            index.add_listener(self._on_change)
            index.add_persister(self._persist)

    # -------------------------------------------------------------- index upkeep

    def warm(self) -> "Retriever":
        """Build the BM25 windows of every indexed file now (otherwise done on the first request); files whose
        stored windows are still current come from the store."""
        with self._build_lock:
            if self._built or self.index is None:
                self._built = True
                return self
            self._load_store()
            for path in self.index.files():
                self._update(path)
            self._drop_unconfirmed()
            self._built = True
        return self

    def _load_store(self) -> None:
        """Load the persisted windows once, into the still empty BM25 index; a store that cannot be used is
        logged in one line and the windows are built from the files (a cold start)."""
        with self._build_lock:
            if self._store_checked or self._store is None:
                return
            self._store_checked = True
            from . import bm25_store

            try:
                state = bm25_store.load(self._store)
                if state is None or not self._bm25.import_state(state):
                    return
            except Exception as exc:  # StoreError, or a store that decodes but does not fit: a cold start
                log.warning("BM25 store %s unusable (%s): re-reading the indexed files", self._store, exc)
                self._bm25 = BM25Windows(self._bm25.window_lines, self._bm25.stride)
                return
            self._keys = {p: (int(k[0]), int(k[1])) for p, k in zip(state["paths"], state["keys"])}
            self._unconfirmed = set(self._keys)

    def _update(self, path: str) -> None:
        """Bring ``path``'s windows in line with the index: removed, kept from the store, or re-read."""
        entry = self.index.entry(path) if self.index is not None else None
        if entry is None:
            if path in self._keys or path in self._unconfirmed:
                self._keys.pop(path, None)
                self._unconfirmed.discard(path)
                self._dirty = True
            self._bm25.set_file(path, None)
            return
        if path in self._unconfirmed:
            self._unconfirmed.discard(path)
            if self._keys.get(path) == (entry.mtime_ns, entry.size):
                self.stats["from_store"] += 1
                return
        text, key = self._read_indexed(path)
        self._bm25.set_file(path, text)
        self.stats["read"] += 1
        self._dirty = True
        if key is None:
            self._keys.pop(path, None)
        else:
            self._keys[path] = key

    def _drop_unconfirmed(self) -> None:
        """After a full build: stored windows of files the index no longer has (or that changed) go."""
        for path in list(self._unconfirmed):
            self._update(path)

    def _read_indexed(self, path: str) -> tuple[str | None, tuple[int, int] | None]:
        """The redacted text of ``path`` and the (mtime_ns, size) of what was read."""
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                return redact_secrets(fh.read().decode("utf-8", "replace")), (st.st_mtime_ns, st.st_size)
        except OSError:
            return None, None

    def _on_change(self, paths: list[str]) -> None:
        if not self._built or self.index is None:
            return
        self._load_store()
        for path in paths:  # on the indexing thread: keystrokes go first
            self.index.yield_to_requests()
            self._update(path)

    def _persist(self, complete: bool) -> None:
        """Called by the index when it saves its own cache (``complete``: a full build just ended)."""
        if self._store is None or not self._built:
            return
        if complete:
            self._drop_unconfirmed()
        if not self._dirty:
            return
        from . import bm25_store

        limit = self.store_limit_bytes
        try:
            size = bm25_store.save(self._store, self._bm25.export_state(dict(self._keys)), limit)
        except (OSError, ValueError) as exc:
            log.warning("BM25 store %s not written (%s)", self._store, exc)
            return
        self._dirty = False
        if size < 0:
            log.info("BM25 store not written: larger than %.0f MB (index_memory_mb); restarts re-read the files",
                     limit / 2**20)

    def close(self) -> None:
        if self.index is not None:
            self.index.remove_listener(self._on_change)

    # -------------------------------------------------------------- main entry

    def snippets(
        self,
        path: str | None,
        text: str,
        offset: int,
        *,
        open_documents: dict[str, str] | None = None,
        recent_edits: Iterable[tuple[str, int, int]] | None = None,
        budget_tokens: int,
        count_tokens: Callable[[str], int],
        visible: tuple[int, int] | None = None,
        render: Callable[[Snippet], str] | None = None,
        language: str | None = None,
    ) -> list[Snippet]:
        """Snippets for the cursor at ``offset`` in ``text`` (the unsaved buffer of ``path``), in prompt order.

        ``visible`` is the character range of ``text`` already in the prompt (default: all of it); nothing in it
        is repeated. ``recent_edits`` are ``(path, start_line, end_line)`` with 0-based lines as LSP gives them,
        most recent last. ``render`` gives the exact text a snippet will occupy in the prompt, so ``tokens``
        (and the budget) include its comment markers and header. Never raises on odd input: returns [].
        """
        if budget_tokens <= 0:
            return []
        try:
            return self._snippets(path, text, offset, open_documents or {}, list(recent_edits or ()),
                                  budget_tokens, count_tokens, visible, render, language)
        except (OSError, ValueError, IndexError, KeyError, RecursionError):
            return []

    def _snippets(self, path, text, offset, open_documents, recent_edits, budget, count_tokens, visible, render,
                  language):
        path = os.path.realpath(path) if path else None
        open_documents = {os.path.realpath(p): t for p, t in open_documents.items()}
        offset = max(0, min(offset, len(text)))
        language = language or syntax.language_for(None, path)
        # only the neighbourhood of the cursor is split into lines: files can be megabytes, this runs per keystroke
        start = text.rfind("\n", 0, max(0, offset - 30_000)) + 1 if offset > 30_000 else 0
        end = text.find("\n", offset + 8_000) if len(text) > offset + 8_000 else -1
        lines = (text[start:] if end < 0 else text[start:end]).split("\n")
        first_line = text.count("\n", 0, start)
        cursor_line = text.count("\n", start, offset)  # 0-based, within ``lines``
        if visible is None:
            visible = (0, len(text))
        vis_first = text.count("\n", 0, visible[0]) + 1  # 1-based visible line range of the current file
        vis_last = text.count("\n", 0, max(visible[1] - 1, 0)) + 1
        if self.index is not None and not self._built:
            self.warm()

        cands: list[_Candidate] = []
        if self.index is not None:
            cands += self._definition_candidates(path, text, lines, cursor_line, language)
        cands += self._recent_edit_candidates(recent_edits, open_documents)
        query = split_terms("\n".join(lines[max(0, cursor_line - QUERY_LINES + 1): cursor_line + 1]))
        cands += self._open_document_candidates(path, open_documents, query)
        if self.index is not None and query:
            cands += self._similar_candidates(path, open_documents, query)

        scope_line, scope_text = _scope_key(lines, cursor_line)
        # Files the background indexer adds do not change the scope: the selection (and so the prompt prefix and
        # its KV cache) stays stable while the index fills; edits to indexed files do.
        scope = (path, (scope_line + first_line, scope_text), self.index.edits if self.index else 0)
        previous = set(self._last[1]) if self._last and self._last[0] == scope else set()
        for c in cands:
            if c.key in previous:
                c.weight *= 1.5  # hysteresis: keep the set stable while the cursor stays in this scope

        # value per token: a 1,000-token class must be worth more than four 250-token snippets to win
        # value per token: a 1,000-token class must be worth more than four 250-token snippets to win (a
        # signature group can shrink to fit, so only its first part's worth of size counts against it)
        cands.sort(key=lambda c: (-c.weight / (1.0 + (min(len(c.text), 600) if c.parts else len(c.text)) / 1500.0),
                                  TIERS[c.tier], c.path, c.start_line))
        chosen: list[tuple[_Candidate, Snippet]] = []
        taken: dict[str, set[int]] = {}
        used = 0
        for c in cands:
            if c.path == path and not (c.end_line < vis_first or c.start_line > vis_last):
                continue  # already in the prompt around the cursor
            shown_before = taken.get(c.path)
            if shown_before and c.lines_shown() & shown_before:
                if c.parts is None:
                    continue
                c = _without_lines(c, shown_before)  # a signature group keeps the signatures not yet shown
                if c is None:
                    continue
            if not c.text.strip():
                continue
            snippet = Snippet(self._display_path(c.path), c.start_line, c.end_line, c.text, c.reason, 0)
            tokens = self._count(render(snippet) if render else c.text, count_tokens)
            room = min(budget - used, max(budget // 4, 150)) if c.parts else budget - used
            while tokens > room and c.parts and len(c.parts) > 1:
                # a signature group too big for what is left (or for a quarter of the budget: one module's
                # outline must not crowd out everything else) keeps its most wanted signatures
                keep = max(1, min(len(c.parts) - 1, int(len(c.parts) * room / tokens)))
                c = _group(c.path, c.parts[:keep], c.reason, c.tier, c.weight)
                snippet = Snippet(self._display_path(c.path), c.start_line, c.end_line, c.text, c.reason, 0)
                tokens = self._count(render(snippet) if render else c.text, count_tokens)
            if used + tokens > budget:
                continue
            snippet.tokens = tokens
            used += tokens
            chosen.append((c, snippet))
            taken.setdefault(c.path, set()).update(c.lines_shown())
            if budget - used < 16:
                break

        ordered = self._prompt_order(chosen, scope)
        self._last = (scope, [c.key for c, _ in ordered])
        return [s for _, s in ordered]

    def _prompt_order(self, chosen, scope):
        """Least relevant tier first; within a tier by path and line; previous order kept in the same scope."""
        fresh = sorted(chosen, key=lambda cs: (TIERS[cs[0].tier], cs[0].path, cs[0].start_line))
        if not self._last or self._last[0] != scope:
            return fresh
        rank = {key: i for i, key in enumerate(self._last[1])}
        kept = sorted((cs for cs in fresh if cs[0].key in rank), key=lambda cs: rank[cs[0].key])
        return kept + [cs for cs in fresh if cs[0].key not in rank]

    def _display_path(self, path: str) -> str:
        root = self.index.root_of(path) if self.index else None
        return os.path.relpath(path, root).replace(os.sep, "/") if root else path

    def _count(self, text: str, count_tokens: Callable[[str], int]) -> int:
        n = self._token_counts.get(text)
        if n is None:
            n = int(count_tokens(text))
            self._token_counts[text] = n
            if len(self._token_counts) > 4096:
                self._token_counts.popitem(last=False)
        return n

    # -------------------------------------------------------------- candidate sources

    def _usage_counts(self, path: str | None, text: str) -> tuple[Counter, Counter, set[str]]:
        """How often each name (and ``module.attr`` pair) occurs in the file, and the names it binds itself.
        Scanning a large file costs a few milliseconds, so the result is reused while the file's size stays in
        the same 4 KB bucket: a few typed characters do not change a ranking."""
        key = (path, len(text) >> 12) if len(text) > 20_000 else None
        if key is not None and self._usage_key == key:
            return self._usage_cache
        result = (Counter(_IDENT.findall(text)), Counter(_ATTR.findall(text)), bound_names(text))
        if key is not None:
            self._usage_key, self._usage_cache = key, result
        return result

    def _imports(self, text: str, language: str | None) -> list[Import]:
        # finding the import lines scans the whole file: reuse it while the file stays in the same 4 KB bucket
        bucket = (language, len(text) >> 12) if len(text) > 20_000 else None
        if bucket is not None and self._import_bucket[0] == bucket:
            return self._import_bucket[1]
        key = (language, import_lines(text))
        hit = self._import_cache.get(key)
        if hit is None:
            hit = parse_imports(key[1], language)
            if len(self._import_cache) > 256:
                self._import_cache.clear()
            self._import_cache[key] = hit
        if bucket is not None:
            self._import_bucket = (bucket, hit)
        return hit

    def _definition_text(self, d: Definition, lines: list[str]) -> tuple[int, int, str, tuple[int, ...] | None]:
        """The definition's lines; a long one as an outline: its signature and its members' signatures."""
        start, end = d.start_line, min(d.end_line, len(lines))
        if end - start + 1 <= MAX_DEFINITION_LINES:
            return start, end, "\n".join(lines[start - 1:end]), None
        keep = list(_signature_lines(lines, start))
        members = [m for m in self.index.definitions_in(d.path)
                   if start < m.start_line <= end and m.kind in ("method", "function", "constant", "class", "type")]
        usage = self._usage
        members.sort(key=lambda m: (-usage.get(m.name, 0), m.start_line))
        for m in members[:MAX_OUTLINE_MEMBERS]:
            keep += _signature_lines(lines, m.start_line)
        keep = sorted(set(keep))
        out, last = [], None
        for ln in keep:
            if last is not None and ln > last + 1:
                out.append(syntax_indent(lines[ln - 1]) + "...")
            out.append(lines[ln - 1])
            last = ln
        return start, end, "\n".join(out), tuple(keep)

    def _outline(self, file: str, reason: str, weight: float, usage: dict[str, int] | None = None) -> _Candidate | None:
        """A module imported whole: the signatures of its top-level definitions, those this file uses first."""
        lines = self._texts.lines(file)
        defs = [d for d in self.index.definitions_in(file) if d.kind != "method"] if lines else []
        usage = usage or {}
        defs.sort(key=lambda d: (-usage.get(d.name, 0), d.start_line))
        used = sum(1 for d in defs if usage.get(d.name, 0))
        return self._signature_group(file, lines, defs[: used + 40], reason, weight)

    def _signature_group(self, file: str, lines: list[str] | None, defs: list[Definition], reason: str,
                         weight: float) -> _Candidate | None:
        """Signatures of ``defs`` (given most wanted first) from one file, as one snippet that may shrink."""
        if not lines or not defs:
            return None
        parts: list[Part] = []
        seen: set[int] = set()
        for d in defs:
            if d.start_line in seen or d.start_line > len(lines):
                continue
            seen.add(d.start_line)
            shown = tuple(_signature_lines(lines, d.start_line))
            parts.append((d.start_line, shown, "\n".join(lines[ln - 1] for ln in shown)))
        return _group(file, tuple(parts), reason, "import", weight)

    def _definition_candidates(self, path, text, lines, cursor_line, language) -> list[_Candidate]:
        index = self.index
        near_lo, near_hi = max(0, cursor_line - 40), min(len(lines), cursor_line + 6)
        weights: dict[str, float] = {}
        attrs: dict[tuple[str, str], float] = {}
        for i in range(near_lo, near_hi):
            w = 1.0 / (1.0 + abs(cursor_line - i) / 6.0)
            line = lines[i]
            for m in re.finditer(r"([A-Za-z_][\w]*)(?:\s*\.\s*([A-Za-z_]\w*))?", line):
                name = m.group(1)
                weights[name] = max(weights.get(name, 0.0), w)
                if m.group(2):
                    attrs[(name, m.group(2))] = max(attrs.get((name, m.group(2)), 0.0), w)
        # how often each name is used (around the cursor in big files: this runs on every keystroke)
        if len(text) > _BIG_TEXT:
            # a whole-file scan of a 20 MB file takes seconds: count in the lines around the cursor instead
            counts, pair_counts, bound = self._usage_counts(None, "\n".join(lines))
        else:
            counts, pair_counts, bound = self._usage_counts(path, text)
        self._usage = counts

        def usage_of(alias: str) -> dict[str, int]:
            return {attr: n for (mod, attr), n in pair_counts.items() if mod == alias}

        # imports sit at the top: a big file's first 256 KB hold them
        imports = self._imports(text if len(text) <= _BIG_TEXT else text[:262_144], language) if path else []
        imported: dict[str, tuple[Import, str]] = {}
        modules: dict[str, Import] = {}
        for imp in imports:
            for local, original in imp.names:
                imported[local] = (imp, original)
            if imp.alias:
                modules[imp.alias] = imp
        out: list[_Candidate] = []

        def files_for(imp: Import, name: str | None) -> list[str]:
            key = (path, imp.module, name, index.generation)
            hit = self._resolved.get(key)
            if hit is None:
                hit = resolve_import(imp, path, language, index, name) if path else []
                if len(self._resolved) > 20_000:
                    self._resolved.clear()
                self._resolved[key] = hit
            return hit

        def add_defs(defs: list[Definition], reason: str, tier: str, weight: float) -> None:
            for d in defs[:3]:
                if d.path == path:
                    continue
                flines = self._texts.lines(d.path)
                if not flines:
                    continue
                start, end, body, shown = self._definition_text(d, flines)
                out.append(_Candidate(d.path, start, end, body, reason, tier, weight, shown))

        def defs_in(files: list[str], name: str) -> list[Definition]:
            found = [d for f in files for d in index.definitions_in(f) if d.name == name]
            found = [d for d in found if d.kind != "method"] or found
            # several in one file (typing overloads, redefinitions): the last one is the implementation
            last: dict[str, Definition] = {}
            for d in found:
                last[d.path] = d
            return list(last.values())

        near_text = "\n".join(lines[near_lo:near_hi])
        called = set(_CALLED.findall(near_text))
        local_names = set(bound)
        entry = index.entry(path) if path else None
        if entry is not None:
            local_names.update(d.name for d in entry.definitions)
        handled: set[str] = set()
        for name, w in sorted(weights.items(), key=lambda kv: -kv[1]):
            if name in imported:
                imp, original = imported[name]
                files = files_for(imp, original)
                defs = defs_in(files, original)
                if not defs and files:
                    # re-exported (``from .core import X`` in a package ``__init__``): follow the name
                    defs = [d for d in index.definitions(original) if index.root_of(d.path) == index.root_of(path)]
                    defs = [d for d in defs if d.kind != "method"][:2]
                if defs:  # else it is a module (``from . import nodes``): its outline comes below
                    add_defs(defs, f"definition of {name} (imported from {imp.module})", "definition", 3.0 * w)
                    handled.add(name)
            elif name in modules:
                continue
            elif name not in local_names and (name in called or name[:1].isupper()):
                # not imported: a name the workspace defines once or twice, used like a global (called, or a
                # class/constant); locals, parameters and the file's own definitions are not looked up
                defs = [d for d in index.definitions(name) if d.path != path and d.kind != "method"]
                if 1 <= len(defs) <= 2:
                    add_defs(defs, f"definition of {name}", "definition", 1.5 * w)
        for (mod, attr), w in attrs.items():
            imp = modules.get(mod)
            if imp is None and mod in imported:
                imp0, original = imported[mod]
                files = files_for(imp0, original)
                sub = [f for f in files if os.path.splitext(os.path.basename(f))[0] in (original, "__init__")]
                if sub:
                    add_defs(defs_in(sub, attr), f"definition of {mod}.{attr}", "definition", 2.5 * w)
                continue
            if imp is not None:
                add_defs(defs_in(files_for(imp, None), attr), f"definition of {mod}.{attr}", "definition", 2.5 * w)
        # everything else the file imports: signatures grouped per file, weighted by how much the file uses them
        groups: dict[str, list[tuple[Definition, str]]] = {}
        for local, (imp, original) in imported.items():
            if local in handled:
                continue
            files = files_for(imp, original)
            defs = defs_in(files, original)
            if not defs and files:
                defs = [d for d in index.definitions(original) if index.root_of(d.path) == index.root_of(path)
                        and d.kind != "method"][:1]
            if defs:
                for d in defs[:1]:
                    if d.path != path:
                        groups.setdefault(d.path, []).append((d, local))
                continue
            sub = [f for f in files if os.path.splitext(os.path.basename(f))[0] == original]
            for f in sub[:1]:
                cand = self._outline(f, f"outline of imported module {local}",
                                     0.35 + 0.1 * min(counts.get(local, 0), 10), usage_of(local))
                if cand:
                    out.append(cand)
        for file, items in groups.items():
            use = max(counts.get(local, 0) for _, local in items)
            names = ", ".join(sorted({local for _, local in items}))
            items.sort(key=lambda item: -counts.get(item[1], 0))
            cand = self._signature_group(file, self._texts.lines(file), [d for d, _ in items],
                                         f"signatures imported: {names}", 0.45 + 0.1 * min(use, 10))
            if cand:
                out.append(cand)
        for alias, imp in modules.items():
            for f in files_for(imp, None)[:1]:
                use = counts.get(alias.split(".")[0], 0)
                cand = self._outline(f, f"outline of imported module {alias}", 0.35 + 0.1 * min(use, 10),
                                     usage_of(alias))
                if cand:
                    out.append(cand)
        return out

    def _recent_edit_candidates(self, recent_edits, open_documents) -> list[_Candidate]:
        out = []
        n = len(recent_edits)
        for i, item in enumerate(recent_edits):
            try:
                epath, first, last = item
                epath = os.path.realpath(epath)
            except (TypeError, ValueError):
                continue
            allowed = self.index.is_path_allowed(epath) if self.index is not None else not _is_secret(epath)
            if not allowed:
                continue
            text = open_documents.get(epath)
            if text is not None and len(text) > _BIG_TEXT and "PRIVATE KEY-----" not in text:
                # a big open file (the one being typed in): cut the edited lines out first, so this costs
                # the same at 20 MB as at 20 KB (redacting and splitting all of it did not)
                start, end, body = _edited_lines(text, int(first), int(last))
                out.append(_Candidate(epath, start, end, redact_secrets(body), "recent edit", "recent edit",
                                      0.9 + 0.3 * (i + 1) / n))
                continue
            lines = redact_secrets(text).split("\n") if text is not None else self._texts.lines(epath)
            if not lines:
                continue
            start = max(1, int(first) + 1 - 3)
            end = min(len(lines), max(int(last), int(first)) + 1 + 3, start + 29)
            body = "\n".join(lines[start - 1:end])
            out.append(_Candidate(epath, start, end, body, "recent edit", "recent edit", 0.9 + 0.3 * (i + 1) / n))
        return out

    def _open_document_candidates(self, path, open_documents, query) -> list[_Candidate]:
        others = {p: t for p, t in open_documents.items() if p != path and isinstance(t, str) and
                  (self.index.is_path_allowed(p) if self.index is not None else not _is_secret(p))}
        for p in list(self._open_texts):
            if p not in others:
                self._open_bm25.set_file(p, None)
                del self._open_texts[p]
        for p, t in others.items():
            if self._open_texts.get(p) != hash(t):
                self._open_bm25.set_file(p, redact_secrets(t))
                self._open_texts[p] = hash(t)
        if not query or not others:
            return []
        out = []
        per_doc: Counter = Counter()
        hits = self._open_bm25.search(query, k=12)
        top = hits[0][0] if hits else 1.0
        for score, w in hits:
            if per_doc[w.path] >= 2:
                continue
            per_doc[w.path] += 1
            lines = redact_secrets(others[w.path]).split("\n")
            body = "\n".join(lines[w.start_line - 1:w.end_line])
            out.append(_Candidate(w.path, w.start_line, w.end_line, body, "open document", "open document",
                                  0.5 + 0.4 * score / top))
        return out

    def _similar_candidates(self, path, open_documents, query) -> list[_Candidate]:
        skip = set(open_documents) | ({path} if path else set())
        hits = self._bm25.search(query, k=16, exclude=lambda w: w.path in skip)
        out = []
        top = hits[0][0] if hits else 1.0
        for score, w in hits:
            lines = self._texts.lines(w.path)
            if not lines:
                continue
            body = "\n".join(lines[w.start_line - 1:w.end_line])
            out.append(_Candidate(w.path, w.start_line, w.end_line, body, "similar code", "similar code",
                                  0.3 + 0.5 * score / top))
        return out


_BIG_TEXT = 1_000_000


def _edited_lines(text: str, first: int, last: int) -> tuple[int, int, str]:
    """(start, end, body): 1-based lines ``first``+1-3 .. ``last``+1+3 (at most 30) of ``text``, as the
    small-file path cuts them, but found with the text's line index (shared with the server, so it is
    usually there already) instead of splitting the whole text."""
    if "\r" in text:  # LSP lines also end at a lone \r; keep the exact "\n" split there (rare)
        lines = text.split("\n")
        start = max(1, first + 1 - 3)
        end = min(len(lines), max(last, first) + 1 + 3, start + 29)
        return start, end, "\n".join(lines[start - 1:end])
    from ..positions import LineIndex

    starts = LineIndex.of(text).starts
    count = len(starts)
    start = max(1, first + 1 - 3)
    end = min(count, max(last, first) + 1 + 3, start + 29)
    lo = int(starts[start - 1])
    hi = int(starts[end]) - 1 if end < count else len(text)
    return start, end, text[lo:hi]


def _signature_lines(lines: list[str], start: int, limit: int = 6) -> list[int]:
    """Line numbers of the signature starting at ``start``: up to the line that opens the body."""
    out = []
    depth = 0
    for ln in range(start, min(start + limit, len(lines) + 1)):
        text = lines[ln - 1]
        out.append(ln)
        depth += sum(text.count(c) for c in "([") - sum(text.count(c) for c in ")]")
        stripped = text.rstrip()
        if depth <= 0 and (stripped.endswith((":", "{", ";", "=>", "}")) or "=" in stripped or ln == start and
                           not stripped.endswith(("(", "[", ",", "\\"))):
            break
    return out


def _group(path: str, parts: tuple[Part, ...], reason: str, tier: str, weight: float) -> _Candidate | None:
    if not parts:
        return None
    ordered = sorted(parts)
    shown = tuple(ln for part in ordered for ln in part[1])
    return _Candidate(path, shown[0], shown[-1], "\n".join(part[2] for part in ordered), reason, tier, weight,
                      shown, parts)


def _without_lines(c: _Candidate, shown: set[int]) -> _Candidate | None:
    return _group(c.path, tuple(p for p in c.parts or () if not shown.intersection(p[1])), c.reason, c.tier,
                  c.weight)


def _is_secret(path: str) -> bool:
    from .workspace import is_secret_path

    return is_secret_path(path)


def syntax_indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]
