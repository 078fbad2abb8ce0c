"""Packing one completion prompt: document prefix and suffix plus repository context, within a token budget.

Budgets are counted with the model's own tokenizer. The whole prompt gets ``settings.context_tokens`` (default
4096; up to the model's window, 16k or 100k for Code Llama): the suffix up to 1/8, repository context at least
3/8 when the file prefix needs the room (all that is left when the file is short), the prefix the rest.

Layout (Code Llama, SPM): ``<PRE><SUF>suffix<MID>`` + comment block of snippets + document prefix. Each snippet is
a comment block headed by its path and lines, in the language's comment syntax; families with a native
repository format (``template.repo_format``, e.g. Qwen2.5-Coder, StarCoder2) get the snippets as repository files
instead. The most relevant snippet is last — nearest the cursor — because Code Llama 7B loses facts placed at the
start of a long prompt (paper, Table 17), and the order is stable across keystrokes so the KV cache of the previous
request covers a long shared prefix.

Speed: a 16k-token prompt is ~50 KB of text; tokenizing it from scratch costs ~25 ms per keystroke. Budgets are
therefore counted per line with memoised counts, and the final encode relies on ``Tokenizer.encode``'s exact
per-line cache (Code Llama's vocabulary never merges across a newline), so a keystroke re-tokenizes one line.
For other vocabularies line sums are an estimate and the exact length of the final ids is checked and trimmed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from . import syntax
from .workspace import redact_secrets

SPECIAL_TOKENS_RESERVE = 8


@dataclass
class Snippet:
    """A piece of repository context; lines 1-based inclusive; ``tokens`` as rendered in the prompt."""

    path: str
    start_line: int
    end_line: int
    text: str
    reason: str
    tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "start_line": self.start_line, "end_line": self.end_line,
                "reason": self.reason, "tokens": self.tokens}


@dataclass
class PromptPlan:
    """Everything the decode loop and post-processing need for one completion request."""

    prompt_ids: list[int]
    prefix: str  # document text before the cursor that is in the prompt (after token healing)
    suffix: str  # document text after the cursor that is in the prompt
    fim_mode: str  # "psm" | "spm" | "none"
    snippets: list[Snippet]
    multiline: bool
    stop_strings: list[str]
    max_new_tokens: int
    heal_prefix: str  # partial word cut from the prefix; the generated text must start with it
    language: str | None
    prefix_tokens: int = 0
    suffix_tokens: int = 0
    context_tokens: int = 0
    budget: int = 0
    reason: str = ""
    context_text: str = ""  # the rendered snippet block (comment syntax) placed before the prefix
    tokenizer: Any = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": render_ids(self.tokenizer, self.prompt_ids) if self.tokenizer is not None else "",
            "prompt_ids": list(self.prompt_ids),
            "fim_mode": self.fim_mode,
            "snippets": [s.to_json() for s in self.snippets],
            "prefix_tokens": self.prefix_tokens,
            "suffix_tokens": self.suffix_tokens,
            "context_tokens": self.context_tokens,
            "total_tokens": len(self.prompt_ids),
            "budget": self.budget,
            "multiline": self.multiline,
            "stop_strings": list(self.stop_strings),
            "max_new_tokens": self.max_new_tokens,
            "heal_prefix": self.heal_prefix,
            "language": self.language,
            "reason": self.reason,
        }


def render_ids(tokenizer: Any, ids: list[int]) -> str:
    """Prompt ids as readable text: control tokens by their piece (``<PRE>``), text decoded exactly."""
    control = tokenizer.control_ids
    out, run = [], []
    for i in ids:
        if i in control:
            if run:
                out.append(tokenizer.decode(run))
                run = []
            piece = tokenizer.piece(i) if hasattr(tokenizer, "piece") else None
            out.append(piece if piece is not None else f"<{i}>")
        else:
            run.append(i)
    if run:
        out.append(tokenizer.decode(run))
    return "".join(out)


# ------------------------------------------------------------------ comment syntax

_LINE_COMMENT = {
    "python": "#", "bash": "#", "ruby": "#", "r": "#", "perl": "#", "yaml": "#", "toml": "#", "elixir": "#",
    "julia": "#", "make": "#", "dockerfile": "#", "cmake": "#", "powershell": "#", "terraform": "#", "nim": "#",
    "lua": "--", "haskell": "--", "sql": "--", "elisp": ";;", "clojure": ";;", "erlang": "%", "vim": '"',
}
_BLOCK_COMMENT = {"html": ("<!--", "-->"), "vue": ("<!--", "-->"), "svelte": ("<!--", "-->"),
                  "css": ("/*", "*/"), "scss": ("/*", "*/"), "ocaml": ("(*", "*)")}


def comment_lines(text: str, language: str | None) -> str:
    """``text`` commented out in the language's syntax (``//`` for C-family and unknown languages)."""
    if language in _BLOCK_COMMENT:
        start, end = _BLOCK_COMMENT[language]
        return f"{start}\n{text.replace(end, '')}\n{end}"
    marker = _LINE_COMMENT.get(language or "", "//")
    return "\n".join(f"{marker} {line}" if line else marker for line in text.split("\n"))


def render_snippet(snippet: Snippet, language: str | None) -> str:
    """One snippet as it appears in the prompt: a comment block headed by its path and lines."""
    head = f"{snippet.path}:{snippet.start_line}-{snippet.end_line}"  # the reason is in the JSON, not worth tokens
    return comment_lines(f"{head}\n{snippet.text}", language) + "\n\n"


# ------------------------------------------------------------------ packing


class _LineCounter:
    """Token counts of single lines, memoised: clipping a 16k-token prefix touches ~1,500 lines per keystroke,
    and between keystrokes all but one of them are unchanged."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self._counts = _COUNT_CACHES.setdefault(id(tokenizer), {})

    def line(self, line: str) -> int:
        n = self._counts.get(line)
        if n is None:
            if hasattr(self.tok, "count_line"):  # the model's tokenizer: shares its line cache with the final encode
                n = self.tok.count_line(line)
            else:
                n = len(self.tok.encode(line, leading_space=False)) if hasattr(self.tok, "encode") else self.tok.count(line)
            if len(self._counts) > 200_000:
                self._counts.clear()
            self._counts[line] = n
        return n


_COUNT_CACHES: dict[int, dict[str, int]] = {}


class _Tail:
    """Whole-line tails of a text by token budget; line counts computed once, lazily from the end.

    A tail that cannot hold the whole text starts on a line whose number in the document (``first_line``
    is the number of the text's first line) is a multiple of ``grid``. Without that, typing at the end of
    a file longer than the budget drops the top line every few keystrokes, which changes the prompt's
    first prefix tokens and costs a re-prefill of the whole prefix; snapped, the start moves ``grid``
    lines at a time, once per ``grid`` lines' worth of typing, for at most ``grid - 1`` lines of context."""

    def __init__(self, text: str, counter: _LineCounter, *, first_line: int = 0, grid: int = 1) -> None:
        self.lines = text.split("\n")
        self.counter = counter
        self.first_line = first_line
        self.grid = max(1, grid)
        last = self.lines[-1]
        self.cum = [counter.line(last) if last else 0]  # cum[k] = tokens of the last k+1 lines

    def take(self, budget: int) -> tuple[str, int]:
        """The longest tail made of whole lines (the partial last line always) within ``budget``."""
        n = len(self.lines)
        while self.cum[-1] <= budget and len(self.cum) < n:
            line = self.lines[n - 1 - len(self.cum)]
            self.cum.append(self.cum[-1] + self.counter.line(line + "\n"))
        import bisect

        keep = bisect.bisect_right(self.cum, max(budget, self.cum[0]))
        keep = max(keep, 1)
        start = self.first_line + n - keep
        if start > 0 and self.grid > 1:
            keep = max(1, keep - (-start) % self.grid)
        return "\n".join(self.lines[n - keep:]), self.cum[keep - 1]


def _take_tail(text: str, budget: int, counter: _LineCounter) -> tuple[str, int]:
    return _Tail(text, counter).take(budget)


def _take_head(text: str, budget: int, counter: _LineCounter) -> tuple[str, int]:
    """The longest head of ``text`` made of whole lines within ``budget`` (the cursor's line rest if it fits)."""
    lines = text.split("\n")
    out, used = [], 0
    for i, line in enumerate(lines):
        piece = line + "\n" if i < len(lines) - 1 else line
        n = counter.line(piece)
        if used + n > budget:
            break
        out.append(piece)
        used += n
    return "".join(out), used


def _clip_prefix(
    prefix: str, chars: int, max_chars: int, budget: int, counter: "_LineCounter", grid: int = 1
) -> tuple[str, "_Tail"]:
    """The prefix cut to a character window that holds every line the budget can take, with its line counter."""
    if len(prefix) <= chars:
        return prefix, _Tail(prefix, counter, grid=grid)
    start = prefix.find("\n", len(prefix) - chars) + 1
    window = prefix[start:] if start > 0 else prefix[-chars:]
    tail = _Tail(window, counter, first_line=prefix.count("\n", 0, len(prefix) - len(window)), grid=grid)
    taken, _ = tail.take(budget)
    if len(taken) < len(window) or chars >= max_chars:
        return window, tail  # the budget runs out inside the window: nothing before it could be used
    return _clip_prefix(prefix, max_chars, max_chars, budget, counter, grid)


# A clipped prefix starts on a line whose number is a multiple of (context tokens // this): ~1/10 of the
# budget at ~10 tokens a line, so a slide re-prefills the prefix once per ~that many tokens typed.
PREFIX_GRID_DIVISOR = 100

_PARTIAL_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}$")
_TRAILING_BLANKS = re.compile(r"[ \t]+$")
HEAL_EXTRA_TOKENS = 8  # how far past the text to cover healing may go back looking for a boundary
HEAL_WINDOW_CHARS = 4000  # byte-level vocabularies: how far back to look for a line that starts a pre-token


def heal_cover(prefix_doc: str, rest_of_line: str, mode: str) -> int:
    """How many characters at the end of the text before the cursor the model must re-write itself.

    * the partial word at the cursor (``already be|``, ``os.pa|``) and blanks typed after a word
      (``return |``), in the layouts where the model continues the prefix's own tokenization (SPM and
      left to right): there a prompt ending in ``▁`` or in half of ``▁be`` is one the model never saw;
    * the indentation of an empty line, in every layout (a prompt that ends in a run of spaces is rare in
      training, one that ends at a line start is the commonest there is).

    In PSM the prefix is a segment of its own, tokenized alone in training after a split at a random
    character, so ending it in the middle of a word is what the model saw: only the indentation is healed.
    """
    line_start = prefix_doc[prefix_doc.rfind("\n") + 1:]
    if line_start and not line_start.strip(" \t") and not rest_of_line.strip():
        return len(line_start)
    if mode not in ("spm", "none"):
        return 0
    word = _PARTIAL_WORD.search(prefix_doc[-32:])
    if word and not re.match(r"[A-Za-z0-9_]", rest_of_line[:1]):
        return len(word.group(0))
    blanks = _TRAILING_BLANKS.search(line_start)
    if blanks and line_start.strip():
        return len(blanks.group(0))
    return 0


def heal_length(tokenizer: Any, segment: str, cover: int) -> int:
    """How many characters to cut from the end of ``segment`` (the text a prompt encodes as its prefix, with
    the implicit leading space) so that the cut covers at least ``cover`` characters and the prompt's ids are
    exactly a prefix of the model's own encoding of the whole segment: the cut is whole tokens of that
    encoding (``already be|`` drops ``▁be``, not just ``be``, which would leave a lone ``▁``). The model then
    re-writes the cut text, constrained to it, and picks its own tokenization of the word (token healing).

    Only the segment's tail is encoded: its last line when no token crosses a newline (Llama-style
    vocabularies), else from the start of a line that begins with a non-blank character (a pre-token
    boundary of byte-level vocabularies). 0 when no boundary fits (the prompt is then the plain encoding)."""
    if cover <= 0 or not segment:
        return 0
    cover = min(cover, len(segment))
    limit = len(segment) - cover
    if tokenizer.newline_isolated:
        start = segment.rfind("\n", 0, limit) + 1
    else:
        start, floor = limit, max(0, limit - HEAL_WINDOW_CHARS)
        while True:
            start = segment.rfind("\n", floor, start)
            if start < 0:
                start = 0
                break
            if segment[start + 1 : start + 2].strip():
                start += 1
                break
        if start <= floor and floor > 0:
            start = 0
    window = segment[start:]
    lead = start == 0
    ids = tokenizer.encode(window, leading_space=lead)
    for k in range(1, min(len(ids), cover + HEAL_EXTRA_TOKENS) + 1):
        if k == len(ids):
            return len(window) if len(window) >= cover else 0
        rest = tokenizer.decode(ids[-k:])
        if len(rest) < cover or not window.endswith(rest):
            continue
        if tokenizer.encode(window[: len(window) - len(rest)], leading_space=lead) == ids[:-k]:
            return len(rest)
    return 0


def build_prompt(
    *,
    text: str,
    offset: int,
    path: str | None,
    language_id: str | None,
    template: Any,
    tokenizer: Any,
    settings: Any,
    retriever: Any = None,
    open_documents: dict[str, str] | None = None,
    recent_edits: Any = None,
    trees: Any = None,
    uri: str | None = None,
    invoked: bool = False,
) -> PromptPlan | None:
    """The prompt for a completion at ``offset`` (a str index into ``text``), or None when not to complete here.
    ``invoked``: the user asked for this completion explicitly, so only an impossible position refuses."""
    offset = max(0, min(int(offset), len(text)))
    language = syntax.language_for(language_id, path)
    tree = None
    if trees is not None and hasattr(trees, "tree_for"):
        keys = [uri] if uri else []
        if path and os.path.isabs(path):
            from pathlib import Path

            keys += [Path(path).as_uri(), path]
        for key in keys:
            try:
                tree = trees.tree_for(key, text)
            except Exception:
                tree = None
            if tree is not None:
                break
    decision = syntax.analyze(text, offset, language, tree, force=invoked)
    if not decision.complete:
        return None

    counter = _LineCounter(tokenizer)
    mode = template.resolve_mode(settings.fim_mode)
    total = max(int(getattr(settings, "context_tokens", 4096)), 64)
    available = total - SPECIAL_TOKENS_RESERVE

    prefix_doc, suffix_doc = text[:offset], text[offset:]
    eol = text.find("\n", offset)
    rest_of_line = text[offset : eol if eol >= 0 else len(text)]
    # what the model must re-write itself (token healing); cut at a token boundary once the prefix is final
    cover = heal_cover(prefix_doc, rest_of_line, mode)

    # A token covers at most ~16 characters, so this character window holds every line the budget can take;
    # it keeps the per-keystroke work independent of the file's size.
    # Code averages 3-4 characters a token, so 6 per token is generous; _clip_prefix widens to the worst case
    # (16 per token) only when the generous window turns out not to be enough.
    max_chars = total * 16
    grid = max(1, available // PREFIX_GRID_DIVISOR)
    prefix_doc, tail = _clip_prefix(prefix_doc, total * 6, max_chars, available, counter, grid)
    if len(suffix_doc) > max_chars // 4:
        end = suffix_doc.rfind("\n", 0, max_chars // 4)
        suffix_doc = suffix_doc[: end + 1] if end >= 0 else suffix_doc[: max_chars // 4]
    # never put secret values into a prompt; the cursor's own line is left as typed
    cut = prefix_doc.rfind("\n") + 1
    redacted = redact_secrets(prefix_doc[:cut]) + prefix_doc[cut:]
    if redacted != prefix_doc:
        prefix_doc, tail = redacted, _Tail(redacted, counter, first_line=tail.first_line, grid=grid)
    suffix_doc = redact_secrets(suffix_doc)

    suffix, suffix_used = ("", 0)
    if mode != "none":
        suffix, suffix_used = _take_head(suffix_doc, available // 8, counter)

    ctx_share = available * 3 // 8 if (retriever is not None and getattr(settings, "repo_context", True)) else 0
    prefix_room = available - suffix_used
    prefix_full, prefix_full_used = tail.take(prefix_room)
    ctx_budget = 0
    if ctx_share:
        ctx_budget = max(ctx_share, prefix_room - prefix_full_used) if prefix_full == prefix_doc else ctx_share
        ctx_budget = min(ctx_budget, prefix_room - min(prefix_full_used, 64))
    prefix, prefix_used = tail.take(prefix_room - ctx_budget)

    snippets: list[Snippet] = []
    if ctx_budget > 0:
        rel_path = _display(path, retriever)
        header_cost = counter.line(comment_lines(f"{rel_path}", language) + "\n") + 1 if rel_path else 0
        visible = (offset - len(prefix), offset + len(suffix))
        snippets = retriever.snippets(
            path, text, offset,
            open_documents=open_documents, recent_edits=recent_edits,
            budget_tokens=max(ctx_budget - header_cost, 0), count_tokens=tokenizer.count,
            visible=visible, render=lambda s: render_snippet(s, language), language=language,
        ) if not template.repo_format else retriever.snippets(
            path, text, offset,
            open_documents=open_documents, recent_edits=recent_edits,
            budget_tokens=ctx_budget, count_tokens=lambda t: tokenizer.count(t) + 4,
            visible=visible, language=language,
        )
    ctx_used = sum(s.tokens for s in snippets)

    # the prefix takes whatever the context did not use
    if ctx_used < ctx_budget:
        prefix, prefix_used = tail.take(prefix_room - ctx_used - (8 if snippets else 0))

    context_text = ""
    repo_files = None
    if snippets and template.repo_format:
        repo_files = [(s.path, s.text) for s in snippets]
    elif snippets:
        rel_path = _display(path, retriever)
        context_text = "".join(render_snippet(s, language) for s in snippets)
        if rel_path:
            context_text += comment_lines(rel_path, language) + "\n"

    heal = ""
    if cover:
        cut = heal_length(tokenizer, context_text + prefix, cover)
        heal = prefix[len(prefix) - cut:] if 0 < cut <= len(prefix) else ""
        prefix = prefix[: len(prefix) - len(heal)]
    ids = _assemble(template, mode, context_text + prefix, suffix, repo_files, path, retriever)
    # per-line counts are exact for Code Llama; for other vocabularies trim until the exact length fits
    while len(ids) > total and prefix:
        excess = len(ids) - total
        prefix, prefix_used = _take_tail(prefix, max(prefix_used - excess - 8, 0), counter)
        ids = _assemble(template, mode, context_text + prefix, suffix, repo_files, path, retriever)

    max_tokens = int(getattr(settings, "max_tokens", 128))
    return PromptPlan(
        prompt_ids=ids,
        prefix=prefix,
        suffix=suffix,
        fim_mode=mode,
        snippets=snippets,
        multiline=decision.multiline,
        stop_strings=decision.stop_strings,
        max_new_tokens=max_tokens if decision.multiline else min(max_tokens, 64),
        heal_prefix=heal,
        language=language,
        prefix_tokens=prefix_used,
        suffix_tokens=suffix_used,
        context_tokens=ctx_used,
        budget=total,
        reason=decision.reason,
        context_text=context_text,
        tokenizer=tokenizer,
    )


def _display(path: str | None, retriever: Any) -> str:
    if not path:
        return ""
    index = getattr(retriever, "index", None)
    root = index.root_of(path) if index is not None else None
    return os.path.relpath(os.path.realpath(path), root).replace(os.sep, "/") if root else os.path.basename(path)


def _assemble(template: Any, mode: str, prefix: str, suffix: str, repo_files: Any, path: str | None,
              retriever: Any) -> list[int]:
    if mode == "none":
        return list(template.prefix_ids(prefix))
    if repo_files:
        return list(template.fim_ids(prefix, suffix, mode, repo_files=repo_files, path=_display(path, retriever)))
    return list(template.fim_ids(prefix, suffix, mode))
