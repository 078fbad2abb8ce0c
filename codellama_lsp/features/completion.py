"""One inline completion, from document text and cursor to the text an editor shows.

The orchestration lives here so the language server (``server.py``) and ``codellama-lsp complete``
(``commands/complete.py``) give the same answer for the same position: build the prompt (context
engine), generate on the engine's worker, clean the text (postprocess), and work out exactly which
characters the suggestion replaces. Everything is in character offsets into the document text;
converting to LSP positions is the server's job.

Two things make typing feel instant and are kept here because they need the last answer:
a *typing-along cache* (the user typed the first characters of the suggestion just shown: the rest
is answered without the model) and the *range rule* for auto-closed brackets (cursor in ``foo(|)``
and the completion ends with ``)``: the suggestion replaces that ``)`` instead of doubling it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..config import Settings
from ..engine.backend import CancelToken, EngineError, GenerationParams, GenerationResult, GenerationStats

log = logging.getLogger(__name__)

INVOKED = "invoked"
AUTOMATIC = "automatic"

# Sampling temperature of the alternatives an invoked request gets besides the (greedy) first suggestion.
ALTERNATIVE_TEMPERATURE = 0.7
# A first suggestion faster than this (the prompt was cached) counts as this long when bounding the alternatives.
ALTERNATIVES_MIN_FIRST_S = 0.5


def alternatives_window_s(first_s: float, factor: float) -> float | None:
    """How long after the first suggestion new alternatives may still be started: ``factor`` times its time
    (at least ``ALTERNATIVES_MIN_FIRST_S``), None for no bound (``factor`` 0). Why: each sample decodes a
    whole answer without speculation, so on a slow CPU ``2 * wanted`` of them reach the completion budget
    (10 s) before the user sees even the first suggestion; this keeps an invoked request within a few times
    an automatic one. Sampling goes on until there is one alternative, so "next" has something to offer."""
    if not factor or factor <= 0:
        return None
    return factor * max(first_s, ALTERNATIVES_MIN_FIRST_S)

# Characters an editor inserts on its own after the cursor (auto-pairs). A completion that ends
# with them replaces them instead of doubling them.
CLOSERS = frozenset(")]}\"'`>")


@dataclass(frozen=True)
class Selected:
    """The item selected in the editor's completion menu, in document offsets (LSP's
    ``selectedCompletionInfo``): complete as if ``text`` replaced ``[start, end)``."""

    start: int
    end: int
    text: str


def why_empty(stats: dict[str, Any], reason: str, device: str | None, timeout_s: float) -> str:
    """Why a request got no suggestion, in one line for a person (``complete`` prints it; the server shows the
    time-budget case once). An empty answer alone looks like a broken install, and the usual cause on a CPU, a
    long first prompt cut by ``completion_timeout_s``, has settings that fix it."""
    prompt, generated = stats.get("prompt_tokens", 0), stats.get("generated_tokens", 0)
    if stats.get("stop_reason") == "time_budget":
        where = (f"while reading the {prompt}-token prompt" if not generated
                 else f"after {generated} tokens of the answer (a cut answer is not offered)")
        return (f"completion_timeout_s ({timeout_s:g} s) ran out {where} on {device or 'this device'}; raise "
                "completion_timeout_s, or lower context_tokens (the next request goes on from what was read)")
    if reason == "no_prompt":
        return "this position takes no completion"
    if reason == "empty":
        if generated <= 1:
            return "the model ended its answer at once (it had nothing to add here)"
        return (f"the model's answer ({generated} tokens) was dropped by the clean-up (it repeated text around "
                "the cursor or would not fit the code)")
    return reason or "the model gave no answer"


@dataclass
class CompletionOutcome:
    """The answer for one request. ``text`` replaces ``[replace_start, replace_end)`` of the
    document; an empty ``text`` means "nothing to suggest" and ``reason`` says why."""

    text: str = ""
    replace_start: int = 0
    replace_end: int = 0
    plan: Any = None  # context.prompt.PromptPlan
    result: GenerationResult | None = None
    source: str = "none"  # "model" | "cache" | "none"
    reason: str = ""  # for an empty answer: not_ready, disabled_language, no_prompt, cancelled, superseded, empty, ...
    started: float = field(default_factory=time.perf_counter)
    finished: float = 0.0
    uri: str = ""
    error: str = ""  # the engine's one-line message when generation failed (e.g. the inference server is down)
    # further suggestions for an invoked request, best first: (text, replace_end); same replace_start
    alternatives: list[tuple[str, int]] = field(default_factory=list)
    alternative_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def stop_reason(self) -> str:
        if self.result is not None and self.result.stats.stop_reason:
            return self.result.stats.stop_reason
        return self.source if self.source == "cache" else self.reason

    def stats(self) -> dict[str, Any]:
        """The per-request numbers of ``codellama/status`` and ``complete --json``."""
        s = self.result.stats if self.result is not None else GenerationStats()
        total = (self.finished or time.perf_counter()) - self.started
        out = {**s.counts(), "total_ms": round(total * 1000, 1), "stop_reason": self.stop_reason, "source": self.source}
        if self.error:
            out["error"] = self.error
        if self.alternative_stats:
            out["alternatives"] = dict(self.alternative_stats)
        return out


@dataclass
class _Shown:
    """The last suggestion shown for a document, for the typing-along cache."""

    prefix: str  # document text before the cursor when it was shown
    suffix: str  # document text after the cursor
    completion: str  # the generated text (without a selected menu item's text)
    language: str
    alternatives: list[str] | None = None  # the other suggestions; None: an automatic request asked for none


def suggestion_edit(lead: str, completion: str, suffix: str, replace_end: int) -> tuple[str, int]:
    """The text and range end of a suggestion. Closers the completion ends with that already follow the
    cursor are replaced (the range grows over them); but with a menu item selected (``lead``), VS Code
    keeps that item's range and would insert them a second time, so they are left out of the text."""
    overlap = closer_overlap(completion, suffix)
    if lead and overlap:
        return lead + completion[:-overlap], replace_end
    return lead + completion, replace_end + overlap


def closer_overlap(completion: str, suffix: str) -> int:
    """How many characters right after the cursor the completion replaces: the longest run of
    auto-paired closers at the start of ``suffix`` (same line) that ``completion`` ends with."""
    run = 0
    while run < len(suffix) and suffix[run] in CLOSERS:
        run += 1
    for k in range(run, 0, -1):
        if completion.endswith(suffix[:k]):
            return k
    return 0


def typed_along(shown: _Shown, text: str, offset: int) -> str | None:
    """The rest of ``shown`` when the user has typed its first characters (and nothing else), else
    None. Auto-paired closers the editor added after the cursor while typing are allowed. Nothing
    typed at all gives the whole suggestion again: an editor asking twice for the same state (inline and
    completion requests, or a re-render) costs no second generation."""
    before = text[:offset]
    if len(before) < len(shown.prefix) or not before.startswith(shown.prefix):
        return None
    typed = before[len(shown.prefix) :]
    if len(typed) >= len(shown.completion) or not shown.completion.startswith(typed):
        return None
    after = text[offset:]
    if after != shown.suffix:
        added = len(after) - len(shown.suffix)
        if added <= 0 or not after.endswith(shown.suffix) or any(c not in CLOSERS for c in after[:added]):
            return None
    return shown.completion[len(typed) :]


class CompletionService:
    """Completes at a position. ``report`` (if set) receives every finished outcome — including a
    generation whose request was cancelled, once its decode has actually stopped — so the server can
    publish ``codellama/status`` from one place."""

    def __init__(self, engine, settings: Settings, *, retriever=None, trees=None) -> None:
        self.engine = engine
        self.settings = settings
        self.retriever = retriever
        self.trees = trees
        self.report: Callable[[CompletionOutcome], None] | None = None
        # Set by the server: waits (bounded) while the model loads, so a keystroke made meanwhile is answered.
        self.wait_ready: Callable[[], Awaitable[bool]] | None = None
        self._shown: dict[str, _Shown] = {}
        # Prompt building (tree-sitter, retrieval, tokenizing) takes tens of milliseconds on a big file:
        # it runs on a thread of its own so the event loop stays free, and in parallel with the model.
        self._context = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="codellama-context")

    def close(self) -> None:
        self._context.shutdown(wait=False, cancel_futures=True)

    async def off_loop(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the context thread (prompt building and clean-up are CPU work)."""
        return await asyncio.get_running_loop().run_in_executor(self._context, functools.partial(fn, *args, **kwargs))

    # -- state -----------------------------------------------------------------------------------

    def forget(self, uri: str | None = None) -> None:
        """Drop the typing-along cache (one document, or all after a model/settings change)."""
        if uri is None:
            self._shown.clear()
        else:
            self._shown.pop(uri, None)

    # -- the request -----------------------------------------------------------------------------

    async def complete(
        self,
        text: str,
        offset: int,
        *,
        uri: str = "",
        path: str | None = None,
        language_id: str = "",
        cancel: CancelToken | None = None,
        trigger: str = INVOKED,
        selected: Selected | None = None,
        open_documents: dict[str, str] | None = None,
        recent_edits: Any = None,
        use_cache: bool = True,
        alternatives: bool = True,
    ) -> CompletionOutcome:
        cancel = cancel or CancelToken()
        offset = max(0, min(offset, len(text)))
        outcome = CompletionOutcome(replace_start=offset, replace_end=offset, uri=uri)
        try:
            await self._complete(
                outcome, text, offset, uri=uri, path=path, language_id=language_id, cancel=cancel,
                trigger=trigger, selected=selected, open_documents=open_documents,
                recent_edits=recent_edits, use_cache=use_cache, alternatives=alternatives,
            )
        except asyncio.CancelledError:
            # $/cancelRequest: pygls cancelled this task. The worker thread keeps decoding unless
            # told, so tell it; the status is reported when the decode has really stopped.
            cancel.cancel("cancelled")
            raise
        outcome.finished = time.perf_counter()
        self._report(outcome)
        return outcome

    async def _complete(self, outcome: CompletionOutcome, text: str, offset: int, *, uri, path, language_id,
                        cancel, trigger, selected, open_documents, recent_edits, use_cache,
                        alternatives) -> None:
        settings = self.settings
        if trigger == AUTOMATIC and language_id and language_id in settings.disabled_languages:
            outcome.reason = "disabled_language"
            return

        # Complete as if the selected menu item were already inserted.
        virtual, voffset, lead = text, offset, ""
        if selected is not None and 0 <= selected.start <= offset <= len(text):
            end = max(selected.end, offset)
            virtual = text[: selected.start] + selected.text + text[end:]
            voffset = selected.start + len(selected.text)
            lead = selected.text
            outcome.replace_start, outcome.replace_end = selected.start, end

        wanted = int(getattr(settings, "alternatives", 1) or 1) - 1 if alternatives and trigger == INVOKED else 0
        shown = self._shown.get(uri) if use_cache and not lead else None
        # an invoked request ("next") where only one suggestion was made asks the model for the others
        if shown is not None and not (wanted and shown.alternatives is None):
            rest = typed_along(shown, text, offset)
            if rest is not None:
                outcome.text = rest
                outcome.replace_end = offset + closer_overlap(rest, text[offset:])
                outcome.source = "cache"
                if wanted:
                    for other in shown.alternatives or []:
                        more = typed_along(dataclasses.replace(shown, completion=other), text, offset)
                        if more and more.rstrip() != rest.rstrip():
                            outcome.alternatives.append((more, offset + closer_overlap(more, text[offset:])))
                return

        if not self.engine.ready and self.wait_ready is not None:
            log.debug("request for %s waits for the model to load", uri or "a document")
            await self.wait_ready()
            if cancel.cancelled:  # superseded by a newer keystroke, or the document changed meanwhile
                outcome.reason = cancel.reason or "cancelled"
                return
        if not self.engine.ready:
            outcome.reason = "not_ready"
            return
        if trigger == AUTOMATIC and settings.debounce_ms > 0:
            await asyncio.sleep(settings.debounce_ms / 1000)  # the feature itself, not synchronisation
        if cancel.cancelled:
            outcome.reason = cancel.reason or "cancelled"
            return

        plan = await self.off_loop(self.build_plan, virtual, voffset, uri=uri, path=path, language_id=language_id,
                                   open_documents=open_documents, recent_edits=recent_edits,
                                   invoked=trigger == INVOKED)
        outcome.plan = plan
        if plan is None:
            outcome.reason = "no_prompt"
            return

        try:
            def smaller() -> list[int] | None:  # after an out-of-memory: the same layout, half the tokens
                half = self.build_plan(virtual, voffset, uri=uri, path=path, language_id=language_id,
                                       open_documents=open_documents, recent_edits=recent_edits,
                                       invoked=trigger == INVOKED, context_tokens=max(64, len(plan.prompt_ids) // 2))
                return list(half.prompt_ids) if half is not None else None

            result = await self._generate(plan, cancel, outcome, smaller)
        except EngineError as exc:  # e.g. the model was being replaced: an empty answer, not an error
            log.warning("generation failed: %s", exc)
            outcome.reason = "engine_error"
            outcome.error = str(exc)
            return
        outcome.result = result
        if result.cancelled or cancel.cancelled:
            outcome.reason = cancel.reason or "cancelled"
            return
        completion = await self.off_loop(self.clean, result.text, virtual[:voffset], virtual[voffset:], plan)
        if not completion:
            outcome.reason = "empty"
            return
        suffix = virtual[voffset:]
        replace_end = outcome.replace_end
        outcome.text, outcome.replace_end = suggestion_edit(lead, completion, suffix, replace_end)
        outcome.source = "model"
        shown = _Shown(virtual[:voffset], suffix, completion, getattr(plan, "language", "") or "")
        if uri:
            self._shown[uri] = shown
        if wanted and not cancel.cancelled:
            others = await self._alternatives(plan, virtual[:voffset], suffix, completion, result.text, wanted,
                                              cancel, outcome)
            outcome.alternatives = [suggestion_edit(lead, text, suffix, replace_end) for text in others]
            shown.alternatives = others

    async def _alternatives(self, plan, prefix: str, suffix: str, first: str, first_raw: str, wanted: int,
                            cancel: CancelToken, outcome: CompletionOutcome) -> list[str]:
        """Up to ``wanted`` further suggestions, distinct from ``first`` and from each other after clean-up,
        ranked by how many samples gave them (then by when they came).

        Sampled (``ALTERNATIVE_TEMPERATURE``, seeds 1, 2, ...) on the same prompt right after the first answer,
        so the KV cache already holds the prompt: each sample prefills one token (the prompt's last, whose
        logits start the answer), never the prompt again; ``alternative_stats`` (in ``codellama/status``)
        counts it (``generation_ms``: the model's time on them). At most ``2 * wanted`` samples, within what is
        left of the completion time budget; once there is one alternative, new samples start only within
        :func:`alternatives_window_s` of the first answer (``stopped`` in the stats says what ended the sampling
        early). A sample cut by the time budget is not offered: it would be a suggestion cut mid-way."""
        settings = self.settings
        budget = settings.completion_timeout_s or None
        first_done = time.perf_counter()
        window = alternatives_window_s(first_done - outcome.started,
                                       float(getattr(settings, "alternatives_time_factor", 0) or 0))
        votes: dict[str, int] = {}
        cleaned = {first_raw: first}  # raw sample text -> its clean-up (the first answer's is known already)
        order: list[str] = []
        stats = outcome.alternative_stats = {"samples": 0, "prefill_tokens": 0, "reused_tokens": 0, "generation_ms": 0.0}
        seed = 0
        while seed < 2 * wanted and (seed < wanted or len(order) < wanted):
            seed += 1
            now = time.perf_counter()
            elapsed = now - outcome.started
            if cancel.cancelled:
                break
            if budget is not None and elapsed >= budget:
                stats["stopped"] = "completion_timeout"
                break
            if order and window is not None and now - first_done >= window:
                stats["stopped"] = "alternatives_time"
                break
            params = GenerationParams(
                max_new_tokens=int(getattr(plan, "max_new_tokens", 0) or settings.max_tokens),
                temperature=max(settings.temperature, ALTERNATIVE_TEMPERATURE), top_p=settings.top_p, seed=seed,
                stop_token_ids=list(self.engine.backend.template.fim_stop_ids),
                stop_strings=list(getattr(plan, "stop_strings", []) or []),
                time_budget_s=(budget - elapsed) if budget is not None else None,
                speculation="none", reuse_cache=getattr(settings, "reuse_cache", True),
                heal_prefix=getattr(plan, "heal_prefix", "") or "",
            )
            try:
                result = await self.engine.generate(plan.prompt_ids, params, cancel, None)
            except EngineError as exc:
                log.warning("alternative failed: %s", exc)
                break
            stats["samples"] += 1
            stats["prefill_tokens"] += result.stats.prefill_tokens
            stats["reused_tokens"] += result.stats.reused_tokens
            stats["generation_ms"] = round(stats["generation_ms"] + result.stats.total_s * 1000, 1)
            if result.cancelled:
                break
            if result.stats.stop_reason == "time_budget":  # cut mid-way: not a suggestion to offer
                stats["stopped"] = "completion_timeout"
                break
            text = cleaned.get(result.text)
            if text is None:  # samples often repeat one another and the first answer: each raw text is cleaned once
                text = cleaned[result.text] = await self.off_loop(self.clean, result.text, prefix, suffix, plan)
            if not text.strip() or text.rstrip() == first.rstrip():
                continue
            key = text.rstrip()
            if key not in votes:
                order.append(key)
                votes[key] = 0
            votes[key] += 1
        ranked = sorted(order, key=lambda k: (-votes[k], order.index(k)))[:wanted]
        stats["count"] = len(ranked)
        return ranked

    def _report(self, outcome: CompletionOutcome) -> None:
        if self.report is not None:
            try:
                self.report(outcome)
            except Exception:  # reporting must never break a completion
                log.exception("status report failed")

    async def _generate(self, plan, cancel: CancelToken, outcome: CompletionOutcome, smaller=None) -> GenerationResult:
        """Run the model on the worker. Shielded, so a cancelled request leaves the generation to
        finish its current token; that outcome is reported when it has (others by ``complete``)."""
        settings = self.settings
        backend = self.engine.backend
        params = GenerationParams(
            max_new_tokens=int(getattr(plan, "max_new_tokens", 0) or settings.max_tokens),
            temperature=settings.temperature,
            top_p=settings.top_p,
            stop_token_ids=list(backend.template.fim_stop_ids),
            stop_strings=list(getattr(plan, "stop_strings", []) or []),
            time_budget_s=settings.completion_timeout_s or None,
            speculation=settings.speculation,
            reuse_cache=getattr(settings, "reuse_cache", True),
            heal_prefix=getattr(plan, "heal_prefix", "") or "",
        )
        started = [False]

        def on_text(piece: str) -> None:  # worker thread
            if piece and not started[0]:
                started[0] = True
                log.debug("decoding started for %s", outcome.uri or "a document")

        task = asyncio.ensure_future(self.engine.generate(plan.prompt_ids, params, cancel, on_text, smaller))

        def finished(t: asyncio.Future) -> None:
            if outcome.finished or t.cancelled():
                return
            outcome.finished = time.perf_counter()
            if t.exception() is None:
                outcome.result = t.result()
                outcome.reason = outcome.reason or cancel.reason or "cancelled"
                self._report(outcome)

        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cancel.cancel("cancelled")
            task.add_done_callback(finished)
            raise

    # -- the pieces other modules own ------------------------------------------------------------

    def build_plan(self, text: str, offset: int, *, uri: str = "", path=None, language_id="", open_documents=None,
                   recent_edits=None, invoked: bool = True, context_tokens: int | None = None):
        """The prompt for this position (None = do not complete here); ``context_tokens`` overrides the
        setting (a smaller budget for the retry after an out-of-memory)."""
        backend = self.engine.backend
        settings = self.settings
        if context_tokens:
            settings = dataclasses.replace(settings, context_tokens=int(context_tokens))
        window = int(backend.info.context_length or 0)
        if window and settings.context_tokens > window:
            # never pack more than the model handles well: past its window it only gets slower and worse
            settings = dataclasses.replace(settings, context_tokens=window)
        from ..context.prompt import build_prompt

        kwargs = dict(
            text=text, offset=offset, path=path, language_id=language_id, template=backend.template,
            tokenizer=backend.tokenizer, settings=settings,
            retriever=self.retriever if settings.repo_context else None,
            open_documents=open_documents, recent_edits=recent_edits, trees=self.trees, uri=uri or None,
            invoked=invoked,
        )
        return build_prompt(**kwargs)

    @staticmethod
    def clean(completion: str, prefix: str, suffix: str, plan) -> str:
        from .postprocess import clean

        return clean(completion, prefix=prefix, suffix=suffix, language=getattr(plan, "language", "") or "",
                     multiline=bool(getattr(plan, "multiline", True)))

    # -- complete --show-prompt --json / codellama/prompt ----------------------------------------

    def describe(self, outcome: CompletionOutcome) -> dict[str, Any]:
        """The JSON of ``complete --show-prompt --json`` (also the ``codellama/prompt`` result)."""
        plan = outcome.plan
        data: dict[str, Any] = {}
        if plan is not None and hasattr(plan, "to_json"):
            data.update(plan.to_json())
        data.setdefault("prompt", None)
        data.setdefault("prompt_ids", [])
        data.setdefault("fim_mode", None)
        data.setdefault("snippets", [])
        info = self.engine.info
        data.update(
            completion=outcome.text,
            replace_start=outcome.replace_start,
            replace_end=outcome.replace_end,
            reason=outcome.reason,
            model=info.name if info else None,
            device=info.device if info else None,
            quantization=info.quantization if info else None,
            runtime=info.runtime if info else None,
            timings=outcome.stats(),
        )
        return data

    async def prompt(self, text: str, offset: int, **kwargs) -> dict[str, Any]:
        """Complete at ``offset`` (never from the typing-along cache) and describe what the model saw."""
        kwargs.setdefault("trigger", INVOKED)
        outcome = await self.complete(text, offset, use_cache=False, **kwargs)
        return self.describe(outcome)
