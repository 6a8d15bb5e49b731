"""How rows sorted by length are cut into the batches of model runs.

A run's work grows with its rows times its longest row (every row is padded to it), plus a fixed cost
per run (launching the graph, the threads' hand-offs, padding in Python). Fixed-size batches of a
sorted list pay for padding wherever lengths jump inside a batch: a server batch of a few texts of
unlike lengths pays for the longest text in every row. :func:`length_batches` cuts the sorted rows
into consecutive batches of at most ``max_size`` rows that minimise the total of

    RUN_COST_TOKENS + rows x longest row          (per batch, in tokens)

by dynamic programming over the cut points (O(rows x max_size)). The cuts depend on the lengths
alone, so the same rows always give the same batches (docs/batching.md).

RUN_COST_TOKENS is the fixed cost of a run in tokens' worth of work: a run's time on the int8
MiniLM classifier grows by about one token's worth per padded token and starts from a couple of
tokens' worth, plus this module's Python per run; the benchmark that checks it is
``benchmarks.latency``. A larger value merges more, a smaller one splits more.
"""

from __future__ import annotations

RUN_COST_TOKENS = 4


def length_batches(
    lengths: list[int], max_size: int, run_cost: int = RUN_COST_TOKENS
) -> list[tuple[int, int]]:
    """(start, end) of each batch over ``lengths`` sorted ascending, covering them in order.

    >>> length_batches([3, 3, 3, 3], 8)            # equal lengths: one batch
    [(0, 4)]
    >>> length_batches([2, 2, 2, 20], 8)           # 4 + 6 + 4 + 20 = 34 < 4 + 4 * 20
    [(0, 3), (3, 4)]
    >>> length_batches([5, 6], 8)                  # 4 + 2 * 6 = 16 < 4 + 5 + 4 + 6
    [(0, 2)]
    >>> length_batches([1] * 5, 2)                 # never more than max_size rows
    [(0, 1), (1, 3), (3, 5)]
    """
    n = len(lengths)
    best = [0] * (n + 1)  # best[j]: the least cost of the first j rows
    cut = [0] * (n + 1)  # cut[j]: where the last batch of that best cost starts
    for j in range(1, n + 1):
        longest = lengths[j - 1]
        best[j], cut[j] = min(
            (best[i] + run_cost + (j - i) * longest, i) for i in range(max(0, j - max_size), j)
        )
    batches, j = [], n
    while j > 0:
        batches.append((cut[j], j))
        j = cut[j]
    return batches[::-1]
