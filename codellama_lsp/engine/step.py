"""What the decode loop asks of a model: the runtime-neutral model step.

The decode loop (``decode.py``: sampling, token healing, stop rules, prompt-lookup drafts, draft-tree
verification, cancel checks, stats) is written once. Under it, a *model step* owns one KV cache together with
the exact token ids it covers, and can only do a few things:

* ``forward(ids, logits_to_keep)``: feed ids at the next positions, return the logits of the last
  ``logits_to_keep`` of them, one row per position, in the runtime's own array type (a torch tensor, possibly
  on a GPU, or a numpy array); the loop touches rows only through ``argmax`` / masking / sampling helpers that
  work on both, so a GPU step keeps its logits on the device and the one host sync per step is the chosen id;
* ``crop_to(keep)``: keep the first ``keep`` cached tokens (reuse across requests, rejected drafts);
* ``prefill(ids, check)``: feed a long run, stoppable by ``check`` (which raises ``Cancelled``);
* ``forward_tree`` / ``keep_rows``: verify a draft tree in one pass and keep the accepted path's rows, when
  ``tree_ready`` says the runtime can (otherwise the loop proposes straight drafts only).

Implementations: ``step_transformers.TransformersStep`` (a ``DynamicCache``; trees through a 4-D attention
mask) and ``step_llamacpp.LlamaCppStep`` (a llama.cpp context through llama-cpp-python's low-level API).
Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .draft_tree import DraftTree, TreeBudget

PREFILL_CHUNK = 512  # tokens per prefill forward: bounds activation memory and lets cancel act between chunks
TREE_NODES = 16  # tokens fed per verify pass at most: a straight 10-token draft plus alternatives


class Cancelled(Exception):
    """Raised inside the loop when the cancel token or the time budget stops a forward pass."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ModelStep:
    """A model's KV cache and the token ids it covers, kept between requests (see the module docstring).

    Subclasses implement ``_new_cache``, ``_crop``, ``forward`` and, where trees work, ``forward_tree`` and
    ``_gather``; the bookkeeping of which ids the cache covers lives here, once."""

    runtime = "?"
    croppable = True  # False: the cache can only grow or be rebuilt (a quantized transformers cache)

    def __init__(self) -> None:
        self.cache: Any = None  # the runtime's cache object; None until first use or after reset_cache
        self.ids: list[int] = []
        # draft tokens per verify pass on this machine (kept across requests and cache resets)
        self.budget = TreeBudget(most=TREE_NODES)
        # n-gram index of the last prompt + generated tokens, for prompt lookup (engine/lookup_index.py)
        self.lookup: Any = None

    # -- to implement ---------------------------------------------------------------------------------------

    def _new_cache(self) -> Any:
        raise NotImplementedError

    def _crop(self, keep: int) -> None:
        """Drop cached positions ``keep`` and after (0 < keep < len(ids)); ``ids`` is cut by the caller."""
        raise NotImplementedError

    def forward(self, ids: Sequence[int], logits_to_keep: int = 1) -> Any:
        """Feed ``ids`` after the cached ones; return logits of the last ``logits_to_keep`` positions
        ([logits_to_keep, vocab]). Appends ``ids`` to ``self.ids``."""
        raise NotImplementedError

    def forward_tree(self, last: int, tree: DraftTree) -> Any:
        """Feed ``last`` and the tree's nodes in one pass (each node sees the cache, ``last`` and its own
        ancestors, at the position its depth gives); logits after every row, [len(tree) + 1, vocab]."""
        raise NotImplementedError

    def _gather(self, base: int, rows: list[int]) -> None:
        """Keep cache rows ``base`` (row 0) and ``base + r`` for ``r`` in ``rows``, in that order, as
        positions ``base .. base + len(rows)``; drop the rest."""
        raise NotImplementedError

    @property
    def tree_ready(self) -> bool:
        """Whether draft trees can be verified (else drafts stay straight lines)."""
        return False

    def nbytes(self) -> int:
        return 0

    def settle(self) -> None:
        """Wait for queued device work (CUDA runs asynchronously), so that a timing read after it is the
        pass's own: the draft budget compares such timings. Nothing to wait for on a synchronous runtime."""

    def new_generator(self, seed: int) -> Any:
        """A random generator for sampling, of the kind ``decode.sample`` takes for this runtime's arrays."""
        import numpy as np

        return np.random.default_rng(seed)

    def close(self) -> None:
        self.reset_cache()

    # -- shared bookkeeping ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """An empty cache (allocated anew)."""
        self.cache = self._new_cache()
        self.ids = []

    def reset_cache(self) -> None:
        """Forget the cache (freed; the next request starts from nothing)."""
        self.cache = None
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
        self._crop(keep)
        del self.ids[keep:]

    def keep_rows(self, base: int, rows: Sequence[int]) -> None:
        """After a verify pass fed at cache position ``base`` (row 0) and on: keep row 0 and ``rows`` (the
        accepted path, in order), drop every other row. A path that is a straight prefix is a crop; a path
        through a tree's side branch gathers its rows, which then sit where plain decoding puts them."""
        rows = list(rows)
        if rows == list(range(1, len(rows) + 1)):
            self.crop_to(base + 1 + len(rows))
            return
        self._gather(base, rows)
        self.ids[base + 1 :] = [self.ids[base + r] for r in rows]

    def sync(self, prompt: Sequence[int], *, reuse: bool = True, cover_all: bool = False) -> int:
        """Make the cache a prefix of ``prompt`` and return how many prompt tokens it already covers.

        At most ``len(prompt) - 1`` unless ``cover_all`` (warming, where no logits are needed): the last
        prompt token must be fed to get the logits of the first new token."""
        if self.cache is None or not reuse:
            self.reset()
            return 0
        limit = len(prompt) if cover_all else len(prompt) - 1
        keep = min(common_prefix_len(self.ids, prompt), max(limit, 0))
        if not self.croppable and keep < len(self.ids):
            keep = 0  # a cache that cannot be cropped is rebuilt unless the prompt extends it
        self.crop_to(keep)
        return keep

    def prefill(self, ids: Sequence[int], check: Callable[[], None] = lambda: None) -> Any:
        """Feed ``ids`` in chunks; return the logits after the last one (None when ``ids`` is empty).
        ``check`` runs before every chunk and raises :class:`Cancelled` to stop."""
        logits = None
        for start in range(0, len(ids), PREFILL_CHUNK):
            check()
            logits = self.forward(ids[start : start + PREFILL_CHUNK], 1)[-1]
        return logits

    def decode_one(self, token: int) -> Any:
        """Feed the last generated token; return the logits of the next one."""
        return self.forward([token], 1)[-1]
