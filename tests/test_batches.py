"""Cutting length-sorted rows into model runs (lrsl_rt.batches): hand-worked cases and optimality."""

from __future__ import annotations

import doctest
import itertools
import random

from lrsl_rt import batches
from lrsl_rt.batches import RUN_COST_TOKENS, length_batches


def _cost(lengths, cuts, run_cost=RUN_COST_TOKENS):
    return sum(run_cost + (e - s) * lengths[e - 1] for s, e in cuts)


def _partitions(n, max_size):
    """Every way to cut n rows into consecutive batches of at most max_size."""
    for mask in itertools.product((0, 1), repeat=n - 1):
        bounds = [0] + [i + 1 for i, m in enumerate(mask) if m] + [n]
        cuts = list(itertools.pairwise(bounds))
        if all(e - s <= max_size for s, e in cuts):
            yield cuts


def test_doctests():
    assert doctest.testmod(batches).failed == 0


def test_cuts_cover_the_rows_in_order_within_the_size():
    rnd = random.Random(0)
    for _ in range(200):
        lengths = sorted(rnd.randint(1, 64) for _ in range(rnd.randint(1, 40)))
        size = rnd.randint(1, 16)
        cuts = length_batches(lengths, size)
        assert [s for s, _ in cuts] == [0] + [e for _, e in cuts[:-1]] and cuts[-1][1] == len(lengths)
        assert all(0 < e - s <= size for s, e in cuts)


def test_cuts_cost_the_least_of_every_partition():
    rnd = random.Random(1)
    for _ in range(100):
        lengths = sorted(rnd.randint(1, 30) for _ in range(rnd.randint(1, 10)))
        size = rnd.randint(1, 5)
        best = min(_cost(lengths, p) for p in _partitions(len(lengths), size))
        assert _cost(lengths, length_batches(lengths, size)) == best


def test_no_rows_no_batches():
    assert length_batches([], 8) == []
