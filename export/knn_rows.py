"""The kNN abstain score's neighbour matrix, bounded: a seeded, class-stratified subsample of the training rows.

The knn score compares a text with every training embedding it ships (``train_embeddings.npy``), so
its cost and the bundle's size grow with the training set. ``--knn-max-rows N`` keeps at most N rows,
the same share of each class (at least one row per class), drawn with the export's seed, and the export
measures the score's AUROC at a few sizes (:func:`size_table`) so the page shows what a bound costs.

Worked example: labels a a a a b b, 3 rows kept -> 2 of a and 1 of b (each class keeps its share, at
least one), the same rows for the same seed.

>>> keep = stratified_rows(["a", "a", "a", "a", "b", "b"], 3, seed=0)
>>> sorted(["aaaabb"[i] for i in keep])
['a', 'a', 'b']
"""

from __future__ import annotations

import math
import random

from lrsl_rt.abstain import auroc, knn_score

SIZES = (500, 1000, 2000, 5000)  # subsample sizes measured beside the full matrix


def stratified_rows(labels: list[str], n: int, seed: int = 42) -> list[int]:
    """Indices (ascending) of ``n`` rows (one per class when there are more classes), each class keeping
    its share: its rounded-down quota, at least one, then one more for the largest remainders."""
    if n >= len(labels):
        return list(range(len(labels)))
    by_class: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    exact = {y: n * len(idx) / len(labels) for y, idx in by_class.items()}
    quota = {y: max(1, math.floor(x)) for y, x in exact.items()}
    left = n - sum(quota.values())
    for y in sorted(exact, key=lambda y: (math.floor(exact[y]) - exact[y], y)):
        if left <= 0:
            break
        if quota[y] < len(by_class[y]):
            quota[y], left = quota[y] + 1, left - 1
    rng = random.Random(seed)
    return sorted(i for y in sorted(by_class) for i in rng.sample(by_class[y], quota[y]))


def size_table(train_emb, train_labels, dev, test=None, seed: int = 42) -> list[dict]:
    """knn AUROC on every row of dev (and test) with the matrix cut to each of :data:`SIZES` rows.

    ``dev``/``test``: (in-scope embeddings, out-of-scope embeddings)."""
    rows = []
    for n in [s for s in SIZES if s < len(train_emb)] + [len(train_emb)]:
        sub = train_emb[stratified_rows(train_labels, n, seed)]
        row = {"rows": int(len(sub)), "dev_auroc": auroc(knn_score(dev[0], sub), knn_score(dev[1], sub))}
        if test is not None:
            row["test_auroc"] = auroc(knn_score(test[0], sub), knn_score(test[1], sub))
        rows.append(row)
    return rows
