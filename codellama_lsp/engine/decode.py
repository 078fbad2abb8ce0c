"""The decode loop: prefill, decode one token, speculative verify, over a KV cache kept between requests.

Written as a handful of plain functions in the style of gpt-fast rather than on top of
``model.generate``, because the three things inline completion needs do not compose there
(research §4a-4c): ``generate`` re-feeds the whole prompt on top of a pre-filled cache when prompt lookup or
an assistant model is on (wrong output), it cannot crop a rejected draft out of a cache we own, and its
streamer drops indentation. Here one :class:`KVState` holds the cache *and the exact token ids it covers*:

* a new prompt shares a longest common prefix with those ids; the cache is cropped to it
  (``crop(keep - cache.get_seq_length())``: transformers 5 takes a negative count) and only the rest is
  prefilled. The cache never covers the whole prompt (at most ``len(prompt) - 1``): the last prompt token
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
which is fed by the next forward pass.

Quantized KV cache (``kv_cache="quantized"``): transformers' ``QuantizedCache`` (fp8 backend: no extra
package) stores keys/values in 1 byte instead of 2 (fp16) or 4 (fp32) once they leave its 128-token
full-precision residual window. Measured on the fp32 test model (2 layers, 4 heads x 16 dims) with
``LocalBackend.kv.nbytes()``: 600 tokens dynamic 0.616 MiB vs fp8 0.154 MiB; 2,000 tokens 1.983 vs 0.496 MiB
(4x, i.e. 2x against an fp16 cache). It is lossy: at 2,000 tokens the 5th greedy token differed from the
dynamic cache's. The research notes measured fp8 2.2x slower per token on CPU. Its ``crop()`` raises, so reuse and
quantization are traded: with a quantized cache the cache is reused only when the new prompt *extends*
everything it holds (a warmed document, the next chat turn), otherwise it is rebuilt from scratch; and
speculation, which must crop rejected drafts, is off. Use it for long chat contexts, the dynamic cache for
keystroke completions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .backend import CancelToken, GenerationParams, GenerationResult, GenerationStats, OnText, monotonic
from .draft_tree import DraftTree, TreeBudget, chain

PREFILL_CHUNK = 512  # tokens per prefill forward: bounds activation memory and lets cancel act between chunks
LOOKUP_MAX_NGRAM = 3
LOOKUP_MIN_NGRAM = 2  # a single repeated token ("(" or "\n") predicts too little to be worth a wide verify
LOOKUP_NUM_TOKENS = 10
LOOKUP_CANDIDATES = 3  # distinct continuations of the last n-gram put in one draft tree
TREE_NODES = 16  # tokens fed per verify pass at most: a straight 10-token draft plus alternatives
DRAFT_NUM_TOKENS = 5


# (prompt + generated so far, max tokens) -> draft tokens, or a tree of them
Proposer = Callable[[list[int], int], "list[int] | DraftTree"]


class Cancelled(Exception):
    """Raised inside the loop when the cancel token or the time budget stops a forward pass."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------
# the cache and the ids it covers


def new_cache(model: Any, kv_cache: str = "dynamic") -> Any:
    from transformers.cache_utils import DynamicCache, QuantizedCache

    if kv_cache == "quantized":
        return QuantizedCache(backend="fp8", config=model.config)
    return DynamicCache(config=model.config)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class KVState:
    """A model's KV cache and the token ids it covers, kept between requests."""

    model: Any
    kv_cache: str = "dynamic"  # "dynamic" | "quantized"
    cache: Any = None
    ids: list[int] = field(default_factory=list)
    # draft tokens per verify pass on this machine (kept across requests and cache resets)
    budget: TreeBudget = field(default_factory=lambda: TreeBudget(most=TREE_NODES))
    # n-gram index of the last prompt + generated tokens, for prompt lookup (engine/lookup_index.py)
    lookup: Any = None

    @property
    def croppable(self) -> bool:
        return self.kv_cache != "quantized"

    def reset(self) -> None:
        self.cache = new_cache(self.model, self.kv_cache)
        self.ids = []

    def crop_to(self, keep: int) -> None:
        """Keep the first ``keep`` cached tokens."""
        if self.cache is None:
            self.reset()
            return
        keep = max(0, min(keep, len(self.ids)))
        if keep == len(self.ids):
            return
        if keep == 0 or not self.croppable:
            self.reset()
            return
        self.cache.crop(keep - self.cache.get_seq_length())  # negative count: transformers 5
        del self.ids[keep:]

    def keep_rows(self, base: int, rows: Sequence[int]) -> None:
        """After a verify pass fed at cache position ``base`` (row 0) and on: keep row 0 and ``rows`` (the
        accepted path, in order), drop every other row. A path that is a straight prefix is a crop; a path
        through a tree's side branch gathers its rows, which then sit where plain decoding puts them."""
        rows = list(rows)
        if rows == list(range(1, len(rows) + 1)):
            self.crop_to(base + 1 + len(rows))
            return
        index = torch.tensor([base + r for r in rows], dtype=torch.long)
        for layer in self.cache.layers:
            picked_k = layer.keys.index_select(-2, index.to(layer.keys.device))
            picked_v = layer.values.index_select(-2, index.to(layer.values.device))
            layer.keys = torch.cat([layer.keys[..., : base + 1, :], picked_k], dim=-2)
            layer.values = torch.cat([layer.values[..., : base + 1, :], picked_v], dim=-2)
        self.ids[base + 1 :] = [self.ids[base + r] for r in rows]

    @property
    def tree_ready(self) -> bool:
        """Whether draft trees can be verified: the attention takes an arbitrary mask (eager and SDPA do;
        flash attention would silently let branches see each other) and the cache's rows can be gathered
        (plain dynamic layers). Otherwise drafts stay straight lines."""
        from transformers.cache_utils import DynamicLayer

        attention = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        layers = getattr(self.cache, "layers", None)
        return (self.croppable and attention in ("eager", "sdpa") and bool(layers)
                and all(isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in layers))

    def sync(self, prompt: Sequence[int], *, reuse: bool = True, cover_all: bool = False) -> int:
        """Make the cache a prefix of ``prompt`` and return how many prompt tokens it already covers.

        At most ``len(prompt) - 1`` unless ``cover_all`` (warming, where no logits are needed)."""
        if self.cache is None or not reuse:
            self.reset()
            return 0
        limit = len(prompt) if cover_all else len(prompt) - 1
        keep = min(common_prefix_len(self.ids, prompt), max(limit, 0))
        if not self.croppable and keep < len(self.ids):
            keep = 0  # a quantized cache cannot be cropped: rebuild unless the prompt extends it
        self.crop_to(keep)
        return keep

    def nbytes(self) -> int:
        from .memory import cache_nbytes

        return cache_nbytes(self.cache) if self.cache is not None else 0


# ---------------------------------------------------------------------------------------------------------------
# forward passes


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def settle(state: KVState) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): timings read after it are the pass's own.
    The draft budget compares such timings; without this a verify pass would seem free on a GPU."""
    device = model_device(state.model)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def forward(state: KVState, ids: Sequence[int], logits_to_keep: int = 1, **tree: torch.Tensor) -> torch.Tensor:
    """Run ``ids`` through the model on top of the cache; return fp32 logits of the last ``logits_to_keep``
    positions, shape [logits_to_keep, vocab]. Appends ``ids`` to the cache and to ``state.ids``. ``tree``:
    an ``attention_mask`` and ``position_ids`` for a draft tree (see :func:`forward_tree`)."""
    run = getattr(state, "run", None)  # a state that runs the model itself (engine/static_cache.py)
    if run is not None:
        logits = run(ids, logits_to_keep, **tree)
        state.ids.extend(ids)
        return logits
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=model_device(state.model))
    out = state.model(input_ids=input_ids, past_key_values=state.cache, use_cache=True, logits_to_keep=logits_to_keep,
                      **tree)
    state.ids.extend(ids)
    return out.logits[0, -logits_to_keep:].float()


@torch.inference_mode()
def forward_tree(state: KVState, last: int, tree: DraftTree) -> torch.Tensor:
    """Feed ``last`` and the tree's nodes in one pass; each node sees the cache, ``last`` and its own
    ancestors, at the position its depth gives. Returns fp32 logits after every row, [len(tree) + 1, vocab].
    Every row enters the cache; :meth:`KVState.keep_rows` then keeps the accepted path only."""
    base = len(state.ids)
    device = model_device(state.model)
    dtype = state.model.get_input_embeddings().weight.dtype  # the compute dtype, also under 4-bit weights
    n = len(tree) + 1
    allowed = torch.ones(n, base + n, dtype=torch.bool, device=device)
    allowed[:, base:] = torch.tensor(tree.ancestor_mask(), dtype=torch.bool, device=device)
    mask = torch.zeros(1, 1, n, base + n, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    positions = torch.tensor([[base + d for d in tree.depths()]], dtype=torch.long, device=device)
    return forward(state, [last, *tree.tokens], n, attention_mask=mask, position_ids=positions)


def prefill(state: KVState, ids: Sequence[int], check: Callable[[], None] = lambda: None) -> torch.Tensor | None:
    """Feed ``ids`` in chunks; return the logits after the last one (None when ``ids`` is empty).

    ``check`` runs before every chunk and raises :class:`Cancelled` to stop."""
    logits = None
    for start in range(0, len(ids), PREFILL_CHUNK):
        check()
        logits = forward(state, ids[start : start + PREFILL_CHUNK], 1)[-1]
    return logits


def decode_one(state: KVState, token: int) -> torch.Tensor:
    """Feed the last generated token; return the logits of the next one."""
    return forward(state, [token], 1)[-1]


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

    Longest n-gram first. Code repeats itself (names, argument lists, the line above), so this is the
    cheapest draft there is: no second model. ``history`` holds earlier token runs (the cursor context and
    answer of the last few requests), searched before ``seq`` for each n: while the user types, the model's
    next answer mostly continues its previous one. ``fits`` skips occurrences whose continuation cannot be
    the answer (under token healing: text that does not start with the partial word at the cursor), so
    that ``self.`` followed by ``ap`` drafts the earlier ``self.append(`` rather than the nearest ``self.x``.
    ``index``: a :class:`~codellama_lsp.engine.lookup_index.LookupIndex` covering ``seq``, answering for it
    without a scan (same answers)."""
    n_seq = len(seq)
    found: list[list[int]] = []
    if num_tokens <= 0 or limit <= 0:
        return found
    for n in range(min(max_ngram, n_seq - 1), min_ngram - 1, -1):
        tail = list(seq[n_seq - n :])
        indexed = index is not None and index.covers(n) and len(index.seq) == n_seq
        for run, last_start in [*((run, len(run) - n) for run in history), (seq, n_seq - n - 1)]:
            scan = index.follows if indexed and run is seq else lambda *a, run=run: _follows(run, *a)
            for follow in scan(tail, last_start, num_tokens):
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
        self.state = KVState(model)
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


def sample(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator | None) -> int:
    """Greedy when temperature is 0, else temperature + nucleus (top-p) sampling from ``generator``."""
    if params.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs > params.top_p  # keep the smallest set reaching top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    choice = torch.multinomial(probs.cpu(), 1, generator=generator)
    return int(choice)


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
        self._allowed: dict[tuple[str, int, Any], torch.Tensor] = {}  # a verify pass masks several rows alike

    @property
    def active(self) -> bool:
        return bool(self.remaining)

    def mask(self, logits: torch.Tensor) -> torch.Tensor | None:
        """``logits`` with every token inconsistent with the remaining prefix set to -inf (None: nothing fits)."""
        rem, size = self.remaining, logits.shape[-1]
        index = self._allowed.get((rem, size, logits.device))  # kept on the logits' device: no copy per step
        if index is None:
            texts = self._vocab_texts()[:size]
            allowed = [i for i, t in enumerate(texts) if _consistent(t, rem)]
            index = torch.tensor(allowed, dtype=torch.long, device=logits.device)
            self._allowed[(rem, size, logits.device)] = index
        if not len(index):
            return None
        masked = torch.full_like(logits, float("-inf"))
        masked[index] = logits[index]
        return masked

    def advance(self, token: int) -> None:
        self.remaining = _after(self._vocab_texts()[token], self.remaining)

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


def generate(
    state: KVState,
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
    """Generate a continuation of ``prompt_ids`` on top of ``state``'s cache. Never raises on cancel or
    time budget: returns what was generated so far with the stop reason.

    Speculation (greedy only, croppable cache only): ``proposer(seq, room)`` proposes up to ``room`` tokens
    continuing ``seq``; by default prompt lookup (also over ``history``, earlier requests' token runs), or
    ``draft`` when ``params.speculation == "draft"``. ``spell(text)`` tokenizes text (no leading space):
    the draft for a healed partial word that does not occur earlier."""
    start = monotonic()
    prompt = list(prompt_ids)
    stats = GenerationStats(prompt_tokens=len(prompt))
    deadline = start + params.time_budget_s if params.time_budget_s is not None else None
    healer = Healer(params.heal_prefix, vocab_texts or (lambda: []))
    text = TextTracker(detokenizer, params.stop_strings, params.heal_prefix, on_text)
    stop_ids = set(params.stop_token_ids)
    generator = None
    if params.temperature > 0:
        generator = torch.Generator().manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
    generated: list[int] = []
    carried: list[int] = []  # the next token when a verify pass already chose it (greedy, no healing)
    seq = list(prompt)  # prompt + generated, kept as one list: the proposer reads it at every step

    def check() -> None:
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled")
        if deadline is not None and monotonic() >= deadline:
            raise Cancelled("time_budget")

    def choose(logits: torch.Tensor) -> int | None:
        if healer.active:
            logits = healer.mask(logits)
            if logits is None:
                return None
        return sample(logits, params, generator)

    def accept(token: int) -> str:
        """Record one new token; return the stop reason it causes ('' to go on)."""
        if not generated:
            stats.time_to_first_token_s = monotonic() - start
        generated.append(token)
        seq.append(token)
        if token in stop_ids:
            return "eos" if token == eos_id else "eot"
        if healer.active:
            healer.advance(token)
        if text.push(token):
            return "stop_string"
        if len(generated) >= params.max_new_tokens:
            return "max_tokens"
        if cancel is not None and cancel.cancelled:
            return "cancelled"
        return ""

    def lookup_tree(seq: list[int], room: int) -> DraftTree:
        """Prompt lookup: the nearest earlier continuation of the last n-gram first, then (tree permitting)
        other continuations; inside a partial word, also its spellings (the tokenizer's own first: a model
        mostly writes a word as the tokenizer does), since which one the model picks is unknown."""
        nodes = state.budget.nodes
        tree = DraftTree(budget=nodes if trees else min(nodes, LOOKUP_NUM_TOKENS))
        fits = healer.fits if healer.active else None
        index = state.lookup
        index.extend(seq[len(index.seq) :])  # within one generation seq only grows
        found = prompt_lookup_candidates(seq, history=history, num_tokens=min(LOOKUP_NUM_TOKENS, room, nodes),
                                         fits=fits, limit=LOOKUP_CANDIDATES if trees else 1, index=index)
        if found:
            tree.add_path(found[0])
        if healer.active and vocab_texts is not None:
            texts = vocab_texts()
            if spell is not None:
                tree.add_path([t for t in spell(healer.remaining) if t < len(texts)][:room])
            if trees:
                tree.add_spellings(healer.remaining, ids_by_text(texts))
        for other in found[1:]:
            tree.add_path(other)
        return tree

    def verify(last: int, tree: DraftTree, timed: bool = True) -> tuple[str, torch.Tensor]:
        """One forward pass over ``last`` + the draft tree: accept the drafts greedy decoding agrees with.
        Returns (stop reason, logits the model's own next token is chosen from at the top of the loop).

        Each row's greedy token is chosen exactly as the plain loop would choose it, healing mask included
        (the healer advances as drafts are accepted), so speculation works inside a partial word too."""
        base = len(state.ids)
        began = monotonic()
        if tree.is_chain:
            rows = forward(state, [last, *tree.tokens], len(tree) + 1)
        else:
            rows = forward_tree(state, last, tree)
        # Greedy outside a partial word: every row's choice in one device-to-host transfer (one sync per pass,
        # not one per row), which also waits for the pass; under the healing mask, row by row as before.
        picks = rows.argmax(-1).tolist() if params.temperature <= 0 and not healer.active else None
        if picks is None:
            settle(state)
        seconds = monotonic() - began
        stats.draft_tokens += len(tree)
        children = tree.rows_children()
        row, path, reason = 0, [], ""
        while not reason:
            nxt = children[row].get(picks[row] if picks is not None else choose(rows[row]))  # type: ignore[arg-type]
            if nxt is None:
                break
            stats.accepted_draft_tokens += 1
            path.append(nxt)
            row = nxt
            reason = accept(tree.tokens[nxt - 1])
        state.keep_rows(base, path)  # the rejected rows leave the cache
        if timed and proposer_sized:
            state.budget.verified(len(path) + 1, seconds)
        if picks is not None:
            carried.append(picks[row])  # the model's own next token, already on the host
        return reason, rows[row]

    stop_reason = ""
    if params.max_new_tokens <= 0 or not prompt:
        stats.stop_reason = "max_tokens"
        stats.total_s = monotonic() - start
        return GenerationResult(text="", token_ids=[], stats=stats)
    try:
        keep = state.sync(prompt, reuse=params.reuse_cache)
        stats.reused_tokens = keep
        stats.prefill_tokens = len(prompt) - keep
        speculate = params.temperature <= 0 and params.speculation != "none" and state.croppable
        trees = speculate and state.tree_ready  # fixed for this generation: the cache object stays the same
        if speculate and proposer is None:
            if params.speculation == "draft" and draft is not None:
                proposer = lambda seq, room: draft.propose(seq, room, check)  # noqa: E731
            else:
                proposer = lookup_tree
                if state.lookup is None:
                    from .lookup_index import LookupIndex

                    state.lookup = LookupIndex(LOOKUP_MIN_NGRAM, LOOKUP_MAX_NGRAM)
                state.lookup.sync(prompt)  # a keystroke changes a few entries; a new document rebuilds it
        proposer_sized = proposer is lookup_tree  # the budget sizes lookup trees only
        rest = prompt[keep:]
        opening = DraftTree(budget=0)
        if speculate and params.max_new_tokens > 1:
            opening = as_tree(proposer(prompt, params.max_new_tokens - 1), params.max_new_tokens - 1)
        if len(opening):
            # The prefill pass verifies a draft too: with a reused cache it feeds a token or two, so the
            # first forward pass can already yield several tokens instead of one.
            prefill(state, rest[:-1], check)
            check()
            stop_reason, logits = verify(rest[-1], opening, timed=False)  # a prefill, not a decode step
        else:
            logits = prefill(state, rest, check)
        stats.forward_passes = 1
        while not stop_reason:
            token = carried.pop() if carried else choose(logits)
            if token is None:
                stop_reason = "heal_failed"
                break
            stop_reason = accept(token)
            if stop_reason:
                break
            room = params.max_new_tokens - len(generated) - 1  # the verify pass adds one token of its own
            proposal = DraftTree(budget=0)
            if speculate and room > 0:
                proposal = as_tree(proposer(seq, room), room)
            check()
            stats.forward_passes += 1
            if not len(proposal):
                began = monotonic()
                logits = decode_one(state, token)
                settle(state)
                state.budget.plain(monotonic() - began)
                continue
            stop_reason, logits = verify(token, proposal)
    except Cancelled as stop:
        stop_reason = stop.reason
    except BaseException:
        state.reset()  # a forward pass failed half-way (OOM, interrupt): the cache no longer matches its ids
        raise
    if stop_reason == "cancelled":
        text.on_text = None  # nothing more reaches the editor after a cancel
    completion = "" if stop_reason == "heal_failed" else text.finish()
    stats.stop_reason = stop_reason
    stats.generated_tokens = len(generated)
    stats.total_s = monotonic() - start
    return GenerationResult(text=completion, token_ids=generated, stats=stats)
