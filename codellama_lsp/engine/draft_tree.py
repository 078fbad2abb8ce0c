"""Draft trees: several guesses for the next tokens, checked in one forward pass.

A single line of draft tokens is rejected at its first wrong token. Code often offers several plausible
continuations at once (the same ``register(`` was followed by three different names above), and inside a
partial word the model may spell the rest of it in several ways ("longrange" as ``long|range`` or
``l|on|g|range``). A tree holds all of them under one token budget: shared beginnings are stored once, and
one forward pass over the tree (each node attending to its ancestors only, at the position its depth gives)
yields the model's next-token logits after every node. Following the model's own greedy choices down the
tree accepts exactly the tokens plain decoding would have produced.

The budget is a number of nodes, i.e. tokens fed in the verify pass: the same cost as a straight draft of
that length, spent on alternatives instead of on one long guess.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class DraftTree:
    """Draft tokens and their parents (-1: the token fed before the tree, which is row 0 of the verify
    pass; node ``k`` is row ``k + 1``)."""

    budget: int
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    _index: dict[tuple[int, int], int] = field(default_factory=dict)  # (parent, token) -> node

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def full(self) -> bool:
        return len(self.tokens) >= self.budget

    @property
    def is_chain(self) -> bool:
        return all(p == k - 1 for k, p in enumerate(self.parents))

    def child(self, parent: int, token: int) -> int | None:
        """The node for ``token`` under ``parent`` (added if new); None when the budget is spent."""
        node = self._index.get((parent, token))
        if node is None:
            if self.full:
                return None
            node = len(self.tokens)
            self.tokens.append(token)
            self.parents.append(parent)
            self._index[(parent, token)] = node
        return node

    def add_path(self, path: Sequence[int], parent: int = -1) -> None:
        """Add a line of tokens below ``parent``, sharing the nodes already there, as far as the budget goes."""
        for token in path:
            node = self.child(parent, token)
            if node is None:
                return
            parent = node

    def add_spellings(self, text: str, ids_by_text: dict[str, list[int]], parent: int = -1) -> None:
        """Add the ways to write ``text`` as a sequence of whole tokens, breadth first (shorter spellings'
        first tokens before longer spellings' later ones) until the budget is spent."""
        queue = [(parent, text)]
        for node, rest in queue:
            for end in range(1, len(rest) + 1):
                for token in ids_by_text.get(rest[:end], ()):
                    child = self.child(node, token)
                    if child is None:
                        return
                    if end < len(rest):
                        queue.append((child, rest[end:]))

    def rows_children(self) -> list[dict[int, int]]:
        """For each verify row (0: the fed token, k + 1: node k), its children's tokens -> their rows."""
        kids: list[dict[int, int]] = [{} for _ in range(len(self.tokens) + 1)]
        for node, (token, parent) in enumerate(zip(self.tokens, self.parents)):
            kids[parent + 1][token] = node + 1
        return kids

    def depths(self) -> list[int]:
        """Depth of each verify row (row 0 is depth 0)."""
        depth = [0]
        for parent in self.parents:
            depth.append(depth[parent + 1] + 1)
        return depth

    def ancestor_mask(self) -> list[list[bool]]:
        """``mask[i][j]``: row ``i`` may attend to row ``j`` (itself and its ancestors)."""
        n = len(self.tokens) + 1
        mask = [[False] * n for _ in range(n)]
        mask[0][0] = True
        for node, parent in enumerate(self.parents):
            row = node + 1
            mask[row] = list(mask[parent + 1])
            mask[row][row] = True
        return mask


def chain(tokens: Sequence[int]) -> DraftTree:
    tree = DraftTree(budget=len(tokens))
    tree.add_path(tokens)
    return tree


class TreeBudget:
    """How many draft tokens a verify pass may feed on this machine, learned from the passes themselves.

    On a GPU a pass over 16 tokens costs about what one token costs. On a CPU it can cost twice as much or
    more (``bench/verify_width.py``: 1.75x for the demo model, 2.2x for a 0.5 B model on two cores), and
    then a wide draft pays only when most of it is accepted. The decode loop reports the time of plain
    one-token steps and of verify passes with the tokens each yielded; every ``window`` verify passes the
    budget halves when verifying delivered fewer tokens per second than plain steps, and doubles (up to
    ``most``) when it delivered clearly more. Outputs never depend on it, only speed."""

    def __init__(self, most: int, least: int = 2, window: int = 16) -> None:
        self.most, self.least, self.window = most, least, window
        self.nodes = most
        self._plain: deque[float] = deque(maxlen=32)
        self._tokens = 0
        self._seconds = 0.0
        self._passes = 0

    def plain(self, seconds: float) -> None:
        self._plain.append(seconds)

    def verified(self, tokens: int, seconds: float) -> None:
        self._tokens += tokens
        self._seconds += seconds
        self._passes += 1
        if self._passes < self.window or len(self._plain) < 4 or self._seconds <= 0:
            return
        plain_rate = 1.0 / max(statistics.median(self._plain), 1e-9)
        rate = self._tokens / self._seconds
        if rate < 0.9 * plain_rate:
            self.nodes = max(self.least, self.nodes // 2)
        elif rate > 1.25 * plain_rate:
            self.nodes = min(self.most, self.nodes * 2)
        self._tokens, self._seconds, self._passes = 0, 0.0, 0
