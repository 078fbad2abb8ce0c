"""The decode loop: prefill, decode one token, speculative verify, over a KV cache kept between requests.

Written as a handful of plain functions in the style of gpt-fast rather than on top of
``model.generate``, because the three things inline completion needs do not compose there
(research §4a-4c): ``generate`` re-feeds the whole prompt on top of a pre-filled cache when prompt lookup or
an assistant model is on (wrong output), it cannot crop a rejected draft out of a cache we own, and its
streamer drops indentation. Here one model step (:class:`~codellama_lsp.engine.step.ModelStep`) holds the
cache *and the exact token ids it covers*:

* a new prompt shares a longest common prefix with those ids; the cache is cropped to it and only the rest
  is prefilled. The cache never covers the whole prompt (at most ``len(prompt) - 1``): the last prompt token
  must be fed to get the logits of the first new token, and a cache covering it gives silently wrong output.
* speculation proposes draft tokens (n-grams copied from the prompt itself, or a small draft model sharing
  the tokenizer), verifies them in one forward pass, keeps the longest prefix greedy decoding would have
  produced plus the model's own next token, and crops the rejected tail from the cache. Greedy output is
  therefore token-identical to plain decoding; with sampling, speculation is off (no rejection sampling).
  Prompt lookup proposes a *tree* (``draft_tree.py``): several earlier continuations of the last n-gram,
  and inside a partial word (token healing) the ways to spell the rest of it, all checked in the same pass;
  the accepted path's cache rows are gathered into place. Each row's token is chosen as the plain loop
  would choose it, healing mask included, so speculation also runs while the partial word is re-typed.

Invariant of the loop: the cache covers every token of ``prompt + generated`` except the last generated one,
which is fed by the next forward pass. The quantized transformers cache trades reuse and speculation for
memory (``step_transformers.py``).

The model itself is behind a runtime-neutral *model step* (``step.py``): transformers
(``step_transformers.py``) or llama.cpp (``step_llamacpp.py``). Everything here is written once above it and
never imports torch: logits rows come back in the step's own array type and are only argmax-ed, masked or
sampled through helpers that accept a torch tensor (left on its device) or a numpy array.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from .backend import CancelToken, GenerationParams, GenerationResult, GenerationStats, OnText, monotonic
from .draft_tree import DraftTree, chain
from .step import PREFILL_CHUNK, TREE_NODES, Cancelled, ModelStep, common_prefix_len  # noqa: F401 - re-exported

LOOKUP_MAX_NGRAM = 3
LOOKUP_MIN_NGRAM = 1
LOOKUP_NUM_TOKENS = 10
# A single repeated token ("_", "(", a name) is the weakest evidence: tried after the longer n-grams, and its
# continuation is kept short, so that a rejected guess costs a narrow verify (on a CPU a 5-token pass costs
# ~1.3 one-token steps, a 16-token one ~1.6: bench/results/verify_width_demo.md). Inside names it is what finds
# the rest of one already typed (``load_`` -> ``iterator)``, seen after ``list_``): bench/typing_replay.py.
LOOKUP_UNIGRAM_TOKENS = 4
LOOKUP_CANDIDATES = 3  # distinct continuations of the last n-gram put in one draft tree
DRAFT_NUM_TOKENS = 5


# (prompt + generated so far, max tokens) -> draft tokens, or a tree of them
Proposer = Callable[[list[int], int], "list[int] | DraftTree"]

_TRANSFORMERS_NAMES = ("KVState", "TransformersStep", "forward", "forward_tree", "new_cache", "model_device")


def __getattr__(name: str) -> Any:
    """The transformers step's names, imported on first use (so that the GGUF path never loads torch)."""
    if name in _TRANSFORMERS_NAMES:
        from . import step_transformers

        return getattr(step_transformers, name)
    raise AttributeError(name)


def prefill(state: ModelStep, ids: Sequence[int], check: Callable[[], None] = lambda: None) -> Any:
    """Feed ``ids`` through the step in chunks; the logits after the last one (None when ``ids`` is empty)."""
    return state.prefill(ids, check)


def decode_one(state: ModelStep, token: int) -> Any:
    """Feed the last generated token; return the logits of the next one."""
    return state.decode_one(token)


# ---------------------------------------------------------------------------------------------------------------
# drafts


def prompt_lookup_draft(seq: Sequence[int], **options: Any) -> list[int]:
    """The best single draft of :func:`prompt_lookup_candidates` (same options)."""
    found = prompt_lookup_candidates(seq, **options, limit=1)
    return found[0] if found else []


def prompt_lookup_candidates(
    seq: Sequence[int],
    *,
    history: Sequence[Sequence[int]] = (),
    max_ngram: int = LOOKUP_MAX_NGRAM,
    min_ngram: int = LOOKUP_MIN_NGRAM,
    num_tokens: int = LOOKUP_NUM_TOKENS,
    fits: Callable[[list[int]], bool] | None = None,
    limit: int = LOOKUP_CANDIDATES,
    index: Any = None,
) -> list[list[int]]:
    """Propose the tokens that followed the most recent earlier occurrences of the sequence's last n-gram
    (at most ``limit`` distinct continuations, best first).

    Longest n-gram first; a one-token match proposes at most ``LOOKUP_UNIGRAM_TOKENS``. Code repeats itself
    (names, argument lists, the line above), so this is the cheapest draft there is: no second model.
    ``history`` holds earlier token runs (the cursor context and answer of the last few requests), searched
    before ``seq`` for each n: while the user types, the model's next answer mostly continues its previous
    one. ``fits`` skips occurrences whose continuation cannot be the answer (under token healing: text that
    does not start with the partial word at the cursor), so that ``self.`` followed by ``ap`` drafts the
    earlier ``self.append(`` rather than the nearest ``self.x``.
    ``index``: a :class:`~codellama_lsp.engine.lookup_index.LookupIndex` covering ``seq``, answering for it
    without a scan (same answers)."""
    n_seq = len(seq)
    found: list[list[int]] = []
    if num_tokens <= 0 or limit <= 0:
        return found
    for n in range(min(max_ngram, n_seq - 1), min_ngram - 1, -1):
        tail, length = list(seq[n_seq - n :]), num_tokens if n > 1 else min(num_tokens, LOOKUP_UNIGRAM_TOKENS)
        indexed = index is not None and index.covers(n) and len(index.seq) == n_seq
        for run, last_start in [*((run, len(run) - n) for run in history), (seq, n_seq - n - 1)]:
            scan = index.follows if indexed and run is seq else lambda *a, run=run: _follows(run, *a)
            for follow in scan(tail, last_start, length):
                if follow not in found and (fits is None or fits(follow)):
                    found.append(follow)
                    if len(found) >= limit:
                        return found
    return found


def _follows(run: Sequence[int], tail: list[int], last_start: int, num_tokens: int):
    """The tokens after each occurrence of ``tail`` in ``run`` starting at or before ``last_start``, right
    to left (the nearest repetition is the most likely to continue the same way)."""
    n, first = len(tail), tail[0]
    for start in range(min(last_start, len(run) - n), -1, -1):
        if run[start] == first and list(run[start : start + n]) == tail:
            follow = list(run[start + n : start + n + num_tokens])
            if follow:
                yield follow


class DraftModel:
    """A small model sharing the tokenizer, with its own reusable cache, proposing greedy drafts."""

    def __init__(self, model: Any, num_tokens: int = DRAFT_NUM_TOKENS) -> None:
        from .step_transformers import TransformersStep

        self.state = TransformersStep(model)
        self.num_tokens = num_tokens
        self.forward_passes = 0

    def propose(self, seq: Sequence[int], limit: int, check: Callable[[], None]) -> list[int]:
        k = min(self.num_tokens, limit)
        if k <= 0:
            return []
        keep = self.state.sync(seq)
        logits = prefill(self.state, seq[keep:], check)
        self.forward_passes += 1
        out: list[int] = []
        while True:
            token = int(logits.argmax())
            out.append(token)
            if len(out) >= k:
                return out
            check()
            logits = decode_one(self.state, token)
            self.forward_passes += 1


# ---------------------------------------------------------------------------------------------------------------
# choosing a token


def _is_numpy(array: Any) -> bool:
    return type(array).__module__ == "numpy"


def sample(logits: Any, params: GenerationParams, generator: Any) -> int:
    """Greedy when temperature is 0, else temperature + nucleus (top-p) sampling from ``generator`` (the
    step's ``new_generator``: torch for a torch tensor, numpy for a numpy array)."""
    if params.temperature <= 0:
        return int(logits.argmax())
    if _is_numpy(logits):
        return _sample_numpy(logits, params, generator)
    import torch

    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs > params.top_p  # keep the smallest set reaching top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    choice = torch.multinomial(probs.cpu(), 1, generator=generator)
    return int(choice)


def _sample_numpy(logits: Any, params: GenerationParams, generator: Any) -> int:
    """:func:`sample` for a numpy row: the same temperature and top-p rule."""
    import numpy as np

    scaled = logits.astype(np.float64) / params.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        sorted_probs = probs[order]
        drop = np.cumsum(sorted_probs) - sorted_probs > params.top_p  # keep the smallest set reaching top_p
        sorted_probs[drop] = 0.0
        probs = np.zeros_like(probs)
        probs[order] = sorted_probs
        probs /= probs.sum()
    return int(generator.choice(len(probs), p=probs))


def _masked_copy(logits: Any, allowed: list[int], cache: dict[Any, Any], key: Any) -> Any:
    """``logits`` with every index outside ``allowed`` set to -inf, in the row's own array type (a torch
    tensor stays on its device). The index array is cached under ``key`` plus the row's kind and device."""
    if _is_numpy(logits):
        import numpy as np

        full_key = (*key, "numpy")
        index = cache.get(full_key)
        if index is None:
            index = cache[full_key] = np.asarray(allowed, dtype=np.int64)
        masked = np.full_like(logits, -np.inf)
    else:
        import torch

        full_key = (*key, str(logits.device))
        index = cache.get(full_key)
        if index is None:
            index = cache[full_key] = torch.tensor(allowed, dtype=torch.long, device=logits.device)
        masked = torch.full_like(logits, float("-inf"))
    masked[index] = logits[index]
    return masked


_SPELLINGS: dict[int, tuple[list[str], dict[str, list[int]]]] = {}


def ids_by_text(texts: list[str]) -> dict[str, list[int]]:
    """Token ids by their text (computed once per vocabulary list): spelling a healed word as tokens."""
    cached = _SPELLINGS.get(id(texts))
    if cached is None or cached[0] is not texts:
        index: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if t:
                index.setdefault(t, []).append(i)
        cached = _SPELLINGS[id(texts)] = (texts, index)
    return cached[1]


class Healer:
    """Token healing: the prompt ends before a partial word (``heal_prefix``) that the output must start with.

    SentencePiece tokenizes "foo" inside "x.foobar" differently from "foo" at a prompt's end; cutting the
    partial word from the prompt and constraining the first tokens to ones consistent with it lets the model
    pick the natural tokenization (Code Llama paper §3.2: the reason SPM lags on random-span infilling)."""

    def __init__(self, heal_prefix: str, vocab_texts: Callable[[], list[str]]) -> None:
        self.remaining = heal_prefix
        self._vocab_texts = vocab_texts
        self._allowed: dict[tuple[str, int], list[int]] = {}  # a verify pass masks several rows alike
        self._index: dict[Any, Any] = {}  # the same, as index arrays of the logits' kind

    @property
    def active(self) -> bool:
        return bool(self.remaining)

    def mask(self, logits: Any) -> Any:
        """``logits`` with every token inconsistent with the remaining prefix set to -inf (None: nothing fits)."""
        rem, size = self.remaining, logits.shape[-1]
        index = self._allowed.get((rem, size))
        if index is None:
            texts = self._vocab_texts()[:size]
            index = self._allowed[(rem, size)] = [i for i, t in enumerate(texts) if _consistent(t, rem)]
        if not len(index):
            return None
        return _masked_copy(logits, index, self._index, (rem, size))

    def advance(self, token: int) -> None:
        self.remaining = _after(self._vocab_texts()[token], self.remaining)

    def tokens_to_spend(self, tokens: Sequence[int]) -> int:
        """How many of ``tokens`` it takes to write the rest of the partial word (``len(tokens) + 1``: not
        within them). Fewer is likelier: a model mostly writes a word as its tokenizer does (``Iter|ator``),
        not a fragment at a time (``I|t|e|...``, which an earlier answer under the mask may have done)."""
        texts, rem = self._vocab_texts(), self.remaining
        for i, token in enumerate(tokens):
            if not rem:
                return i
            rem = _after(texts[token] if token < len(texts) else "", rem)
        return len(tokens) if not rem else len(tokens) + 1

    def fits(self, tokens: Sequence[int]) -> bool:
        """Whether ``tokens`` could be generated from here: each one passes the mask until the prefix is spent."""
        texts, rem = self._vocab_texts(), self.remaining
        for token in tokens:
            if not rem:
                return True
            text = texts[token] if token < len(texts) else ""
            if not _consistent(text, rem):
                return False
            rem = _after(text, rem)
        return True


def _consistent(text: str, remaining: str) -> bool:
    """A token's text may come next inside the partial word: it is a start of what remains, or covers it."""
    return bool(text) and (text.startswith(remaining) or remaining.startswith(text))


def _after(text: str, remaining: str) -> str:
    """What remains of the partial word after a token with this text."""
    return remaining[len(text) :] if remaining.startswith(text) else ""


# ---------------------------------------------------------------------------------------------------------------
# text: streaming, stop strings, healed prefix


class TextTracker:
    """Turns generated ids into the returned text and the streamed pieces, which always agree.

    Holds back text that could be the start of a stop string, and the healed prefix."""

    def __init__(self, detokenizer: Any, stop_strings: Sequence[str], skip: str, on_text: OnText | None) -> None:
        self.detok = detokenizer
        self.stops = [s for s in stop_strings if s]
        self.skip = len(skip)
        self.on_text = on_text
        self.raw = ""  # everything decoded, healed prefix included
        self.final: str | None = None  # set once a stop string ends the text
        self.emitted = 0  # characters of the body already passed to on_text

    @property
    def body(self) -> str:
        return self.raw[self.skip :]

    def push(self, token: int) -> bool:
        """Add a token; return True when a stop string ended the text."""
        self.raw += self.detok.push(token)
        return self._update(final=False)

    def finish(self) -> str:
        if self.final is None:
            self.raw += self.detok.flush()
            self._update(final=True)
        return self.final if self.final is not None else self.body

    def _update(self, final: bool) -> bool:
        body = self.body
        cut = min((i for i in (body.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.final = body[:cut]
            self._emit(self.final)
            return True
        if final:
            self.final = body
            self._emit(body)
            return False
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(body)), hold, -1):
                if body.endswith(stop[:k]):
                    hold = k
                    break
        self._emit(body[: len(body) - hold])
        return False

    def _emit(self, upto: str) -> None:
        if len(upto) > self.emitted:
            piece = upto[self.emitted :]
            self.emitted = len(upto)
            if self.on_text is not None:
                self.on_text(piece)


# ---------------------------------------------------------------------------------------------------------------
# the loop


def as_tree(proposal: "list[int] | DraftTree", room: int) -> DraftTree:
    """A proposer's answer as a tree (a list is a straight line, cut to ``room`` tokens)."""
    return proposal if isinstance(proposal, DraftTree) else chain(list(proposal)[:room])


class Generation:
    """One call of :func:`generate`: what it has produced so far and the rules it stops by.

    ``check`` (before a forward pass) raises :class:`Cancelled`; ``choose`` picks a token from a logits row
    the way plain decoding would (healing mask, then greedy or sampling); ``accept`` records a token and says
    whether it ends the answer."""

    def __init__(self, step: ModelStep, prompt: list[int], params: GenerationParams, *, eos_id: int | None,
                 detokenizer: Any, cancel: CancelToken | None, on_text: OnText | None,
                 vocab_texts: Callable[[], list[str]] | None) -> None:
        self.start = monotonic()
        self.step = step
        self.params = params
        self.prompt = prompt
        self.cancel = cancel
        self.eos_id = eos_id
        self.vocab_texts = vocab_texts
        self.stats = GenerationStats(prompt_tokens=len(prompt))
        self.deadline = self.start + params.time_budget_s if params.time_budget_s is not None else None
        self.healer = Healer(params.heal_prefix, vocab_texts or (lambda: []))
        self.text = TextTracker(detokenizer, params.stop_strings, params.heal_prefix, on_text)
        self.stop_ids = set(params.stop_token_ids)
        self.generator = None
        if params.temperature > 0:
            self.generator = step.new_generator(params.seed if params.seed is not None else random.getrandbits(63))
        self.generated: list[int] = []
        self.seq = list(prompt)  # prompt + generated, kept as one list: the proposer reads it at every step
        self.speculate = False  # set by start(): greedy, speculation on, a croppable cache
        self.trees = False  # and the step can verify trees (set once the cache exists; fixed for the call)
        self.sized = False  # the draft budget learns from this call's verify passes (lookup trees only)
        self.carried: int | None = None  # the next token when a verify pass already chose it (greedy, no healing)

    def check(self) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            raise Cancelled("cancelled")
        if self.deadline is not None and monotonic() >= self.deadline:
            raise Cancelled("time_budget")

    def choose(self, logits: Any) -> int | None:
        if self.healer.active:
            logits = self.healer.mask(logits)
            if logits is None:
                return None
        return sample(logits, self.params, self.generator)

    def accept(self, token: int) -> str:
        """Record one new token; return the stop reason it causes ('' to go on)."""
        if not self.generated:
            self.stats.time_to_first_token_s = monotonic() - self.start
        self.generated.append(token)
        self.seq.append(token)
        if token in self.stop_ids:
            return "eos" if token == self.eos_id else "eot"
        if self.healer.active:
            self.healer.advance(token)
        if self.text.push(token):
            return "stop_string"
        if len(self.generated) >= self.params.max_new_tokens:
            return "max_tokens"
        if self.cancel is not None and self.cancel.cancelled:
            return "cancelled"
        return ""


def lookup_tree(g: Generation, seq: list[int], room: int, *, history: Sequence[Sequence[int]] = (),
                spell: Callable[[str], list[int]] | None = None) -> DraftTree:
    """Prompt lookup: the nearest earlier continuation of the last n-gram first, then (tree permitting)
    other continuations; inside a partial word, also its spellings (the tokenizer's own first: a model
    mostly writes a word as the tokenizer does), since which one the model picks is unknown."""
    nodes = g.step.budget.nodes
    healer, trees = g.healer, g.trees
    tree = DraftTree(budget=nodes if trees else min(nodes, LOOKUP_NUM_TOKENS))
    fits = healer.fits if healer.active else None
    index = g.step.lookup
    if index is not None:
        index.extend(seq[len(index.seq) :])  # within one generation seq only grows
    limit = LOOKUP_CANDIDATES if trees else 1
    # inside a partial word, look a little further and put the naturally tokenized continuations first
    found = prompt_lookup_candidates(seq, history=history, num_tokens=min(LOOKUP_NUM_TOKENS, room, nodes),
                                     fits=fits, limit=2 * limit if healer.active else limit, index=index)
    if healer.active and g.vocab_texts is not None:
        # Inside a partial word which continuation the model takes is least certain: first each one's
        # way through the word and a token past it, naturally tokenized ones first (stable: nearest first
        # among equals), then whole paths, then the spellings of the word that occur nowhere before.
        found = sorted(found, key=healer.tokens_to_spend)[:limit]
        for other in found:
            tree.add_path(other[: healer.tokens_to_spend(other) + 1])
        if found:
            tree.add_path(found[0])
        texts = g.vocab_texts()
        # without trees (llama.cpp's default step) the draft must stay one straight line: the tokenizer's
        # spelling only when no earlier continuation was found (as a branch it would make the step refuse
        # the pass, and the request would end with no suggestion)
        if spell is not None and (trees or not len(tree)):
            tree.add_path([t for t in spell(healer.remaining) if t < len(texts)][:room])
        for other in found[1:]:
            tree.add_path(other)
        if trees:
            tree.add_spellings(healer.remaining, ids_by_text(texts))
        return tree
    if found:
        tree.add_path(found[0])
    for other in found[1:]:
        tree.add_path(other)
    return tree


def verify(g: Generation, last: int, tree: DraftTree, timed: bool = True) -> tuple[str, Any]:
    """One forward pass over ``last`` + the draft tree: accept the drafts greedy decoding agrees with.
    Returns (stop reason, logits the model's own next token is chosen from at the top of the loop).

    Each row's greedy token is chosen exactly as the plain loop would choose it, healing mask included
    (the healer advances as drafts are accepted), so speculation works inside a partial word too."""
    step = g.step
    base = len(step.ids)
    # inside a partial word rows are masked one by one on the host: a cost of its own, not of the draft's
    # width, so such passes do not size the budget (healing now covers whole tokens and blanks, more often)
    timed = timed and not g.healer.active
    began = monotonic()
    rows = step.forward([last, *tree.tokens], len(tree) + 1) if tree.is_chain else step.forward_tree(last, tree)
    # Greedy outside a partial word: every row's choice in one device-to-host transfer (one sync per pass, not
    # one per row), which also waits for the pass; under the healing mask, row by row as the plain loop does.
    picks = rows.argmax(-1).tolist() if g.params.temperature <= 0 and not g.healer.active else None
    if picks is None:
        step.settle()
    seconds = monotonic() - began
    g.stats.draft_tokens += len(tree)
    children = tree.rows_children()
    row, path, reason = 0, [], ""
    while not reason:
        nxt = children[row].get(picks[row] if picks is not None else g.choose(rows[row]))  # type: ignore[arg-type]
        if nxt is None:
            break
        g.stats.accepted_draft_tokens += 1
        path.append(nxt)
        row = nxt
        reason = g.accept(tree.tokens[nxt - 1])
    step.keep_rows(base, path)  # the rejected rows leave the cache
    if timed and g.sized:
        step.budget.verified(len(path) + 1, seconds)
    if picks is not None:
        g.carried = picks[row]  # the model's own next token, already on the host
    return reason, rows[row]


def start(g: Generation, proposer: Proposer | None) -> tuple[str, Any]:
    """Reuse the cache's common prefix with the prompt and prefill the rest. With speculation, the prefill's
    last pass verifies a draft too: with a reused cache it feeds a token or two, so the first forward pass
    can already yield several tokens instead of one. Returns (stop reason, logits of the next token)."""
    step, prompt, params = g.step, g.prompt, g.params
    keep = step.sync(prompt, reuse=params.reuse_cache)
    g.stats.reused_tokens = keep
    g.stats.prefill_tokens = len(prompt) - keep
    g.trees = g.speculate and step.tree_ready  # the cache object exists now and stays for the call
    rest = prompt[keep:]
    opening = DraftTree(budget=0)
    if g.speculate and proposer is not None and params.max_new_tokens > 1:
        opening = as_tree(proposer(prompt, params.max_new_tokens - 1), params.max_new_tokens - 1)
    if not len(opening):
        logits = step.prefill(rest, g.check)
        g.stats.forward_passes = 1
        return "", logits
    step.prefill(rest[:-1], g.check)
    g.check()
    g.stats.forward_passes = 1
    return verify(g, rest[-1], opening, timed=False)  # a prefill, not a decode step


def decode(g: Generation, logits: Any, proposer: Proposer | None) -> str:
    """Choose a token, then feed it (with a draft to verify when the proposer has one), until a stop rule."""
    step, params = g.step, g.params
    while True:
        if g.carried is not None:
            token, g.carried = g.carried, None
        else:
            token = g.choose(logits)
        if token is None:
            return "heal_failed"
        reason = g.accept(token)
        if reason:
            return reason
        if g.speculate and proposer is not None:
            room = params.max_new_tokens - len(g.generated) - 1  # the verify pass adds one token of its own
            proposal = as_tree(proposer(g.seq, room), room) if room > 0 else None
            if proposal is not None and len(proposal):
                g.check()
                g.stats.forward_passes += 1
                reason, logits = verify(g, token, proposal)
                if reason:
                    return reason
                continue
        g.check()
        g.stats.forward_passes += 1
        began = monotonic()
        logits = step.decode_one(token)
        step.settle()
        step.budget.plain(monotonic() - began)


def finish(g: Generation, stop_reason: str) -> GenerationResult:
    if stop_reason == "cancelled":
        g.text.on_text = None  # nothing more reaches the editor after a cancel
    completion = "" if stop_reason == "heal_failed" else g.text.finish()
    g.stats.stop_reason = stop_reason
    g.stats.generated_tokens = len(g.generated)
    g.stats.total_s = monotonic() - g.start
    return GenerationResult(text=completion, token_ids=g.generated, stats=g.stats)


def generate(
    state: ModelStep,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    *,
    detokenizer: Any,
    eos_id: int | None,
    cancel: CancelToken | None = None,
    on_text: OnText | None = None,
    vocab_texts: Callable[[], list[str]] | None = None,
    draft: DraftModel | None = None,
    proposer: Proposer | None = None,
    history: Sequence[Sequence[int]] = (),
    spell: Callable[[str], list[int]] | None = None,
) -> GenerationResult:
    """Generate a continuation of ``prompt_ids`` on top of the step's cache. Never raises on cancel or
    time budget: returns what was generated so far with the stop reason.

    Speculation (greedy only, croppable cache only): ``proposer(seq, room)`` proposes up to ``room`` tokens
    continuing ``seq``; by default prompt lookup (also over ``history``, earlier requests' token runs), or
    ``draft`` when ``params.speculation == "draft"``. ``spell(text)`` tokenizes text (no leading space):
    the draft for a healed partial word that does not occur earlier."""
    g = Generation(state, list(prompt_ids), params, eos_id=eos_id, detokenizer=detokenizer, cancel=cancel,
                   on_text=on_text, vocab_texts=vocab_texts)
    if params.max_new_tokens <= 0 or not g.prompt:
        return finish(g, "max_tokens")
    g.speculate = params.temperature <= 0 and params.speculation != "none" and state.croppable
    if g.speculate and proposer is None:
        if params.speculation == "draft" and draft is not None:
            proposer = lambda seq, room: draft.propose(seq, room, g.check)  # noqa: E731
        else:
            proposer = lambda seq, room: lookup_tree(g, seq, room, history=history, spell=spell)  # noqa: E731
            g.sized = True  # the budget sizes lookup trees only
            if state.lookup is None:
                from .lookup_index import LookupIndex

                state.lookup = LookupIndex(LOOKUP_MIN_NGRAM, LOOKUP_MAX_NGRAM)
            state.lookup.sync(g.prompt)  # a keystroke changes a few entries; a new document rebuilds it
    try:
        reason, logits = start(g, proposer)
        if not reason:
            reason = decode(g, logits, proposer)
    except Cancelled as stop:
        reason = stop.reason
    except BaseException:
        state.reset()  # a forward pass failed half-way (OOM, interrupt): the cache no longer matches its ids
        raise
    return finish(g, reason)
