"""Prompt lookup without rescanning the context at every step: an n-gram index kept up to date incrementally.

``decode.prompt_lookup_candidates`` finds the earlier occurrences of the sequence's last n tokens by scanning
the whole sequence right to left, at every decode step: at 16k tokens of context that is a few milliseconds of
Python per token, as much as a GPU forward pass. This index maps each n-gram (n in ``MIN_N..MAX_N``) to the
positions where it starts, in ascending order. It is kept between requests: a new prompt is compared with the
sequence the index covers, the entries past their common prefix are removed (the n-grams that overlap the
removed tail, popped from the ends of their lists) and the new tokens added, so a keystroke costs a few entries
and a decode step one per n. The answers are exactly the scan's (tests/test_lookup_index.py).
"""

from __future__ import annotations

from typing import Iterator, Sequence

MIN_N = 2
MAX_N = 3


class LookupIndex:
    """Start positions of every n-gram of ``seq`` for n in ``[min_n, max_n]``."""

    def __init__(self, min_n: int = MIN_N, max_n: int = MAX_N) -> None:
        self.min_n, self.max_n = min_n, max_n
        self.seq: list[int] = []
        self.starts: dict[tuple[int, ...], list[int]] = {}

    def covers(self, n: int) -> bool:
        return self.min_n <= n <= self.max_n

    def sync(self, seq: Sequence[int]) -> None:
        """Make the index cover ``seq``: keep the common prefix, drop the rest, add what is new."""
        old = self.seq
        limit = min(len(old), len(seq))
        keep = 0
        while keep < limit and old[keep] == seq[keep]:
            keep += 1
        self.truncate(keep)
        self.extend(seq[keep:])

    def truncate(self, keep: int) -> None:
        """Cover only the first ``keep`` tokens."""
        seq = self.seq
        if keep >= len(seq):
            return
        for n in range(self.min_n, self.max_n + 1):
            # starts whose n-gram reaches past keep, highest first: each is the last entry of its list
            for start in range(len(seq) - n, max(keep - n + 1, 0) - 1, -1):
                key = tuple(seq[start : start + n])
                positions = self.starts[key]
                positions.pop()
                if not positions:
                    del self.starts[key]
        del seq[keep:]

    def extend(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` (the sequence grew by them)."""
        seq = self.seq
        before = len(seq)
        seq.extend(tokens)
        for n in range(self.min_n, self.max_n + 1):
            for start in range(max(before - n + 1, 0), len(seq) - n + 1):
                self.starts.setdefault(tuple(seq[start : start + n]), []).append(start)

    def follows(self, tail: Sequence[int], last_start: int, num_tokens: int) -> Iterator[list[int]]:
        """What ``decode._follows(self.seq, tail, last_start, num_tokens)`` yields: the tokens after each
        occurrence of ``tail`` starting at or before ``last_start``, right to left."""
        n = len(tail)
        positions = self.starts.get(tuple(tail), ())
        seq = self.seq
        for start in reversed(positions):
            if start > last_start or start > len(seq) - n:
                continue
            follow = seq[start + n : start + n + num_tokens]
            if follow:
                yield follow
