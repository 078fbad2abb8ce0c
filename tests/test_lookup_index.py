"""The incremental n-gram index answers prompt lookup exactly as the scan does, across edits and growth."""

from __future__ import annotations

import random

from codellama_lsp.engine import decode as D
from codellama_lsp.engine.lookup_index import LookupIndex


def test_index_answers_like_the_scan_through_edits_and_growth():
    rng = random.Random(4)
    index = LookupIndex(2, 3)
    seq = [rng.randrange(6) for _ in range(200)]  # a small alphabet: many repeats, many candidates
    history = [[rng.randrange(6) for _ in range(12)]]
    checked = 0
    for step in range(300):
        action = rng.random()
        if action < 0.5:
            seq = seq + [rng.randrange(6) for _ in range(rng.randint(1, 3))]  # generation / typing at the end
        elif action < 0.8:
            cut = rng.randrange(len(seq) - 20, len(seq))  # a deletion, then typing
            seq = seq[:cut] + [rng.randrange(6) for _ in range(rng.randint(0, 4))]
        else:
            cut = rng.randrange(1, len(seq))  # a jump: the prompt changes far back
            seq = seq[:cut] + [rng.randrange(6) for _ in range(rng.randint(20, 60))]
        if step % 2:
            index.sync(seq)
        else:
            index.extend(seq[len(index.seq) :]) if seq[: len(index.seq)] == index.seq else index.sync(seq)
        assert index.seq == seq
        for options in ({}, {"num_tokens": 4, "limit": 5}, {"history": history, "limit": 3},
                        {"fits": lambda d: d[0] % 2 == 0, "limit": 2}):
            assert D.prompt_lookup_candidates(seq, index=index, **options) == D.prompt_lookup_candidates(seq, **options)
            checked += 1
    # every entry is a real n-gram start, and every n-gram start is an entry
    expected = {}
    for n in (2, 3):
        for start in range(len(seq) - n + 1):
            expected.setdefault(tuple(seq[start : start + n]), []).append(start)
    assert index.starts == expected and checked == 1200


def test_an_index_that_does_not_cover_the_sequence_is_not_used():
    index = LookupIndex(2, 3)
    index.sync([9, 9, 9, 9])
    seq = [1, 2, 3, 7, 7, 1, 2, 3]
    assert D.prompt_lookup_candidates(seq, index=index, limit=1) == [[7, 7, 1, 2, 3]]
    assert D.prompt_lookup_candidates(seq, index=index, min_ngram=1, max_ngram=1, limit=1) == [[7, 7, 1, 2]]
