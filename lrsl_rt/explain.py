"""The ``--explain`` view of a decision: each row's top-k before and after the rerank.

For a hard row: the classifier's top-k logits, its top-k fused scores and the label similarities
of the classifier's top-k; for an easy row, the top-k logits alone (it was not reranked).
"""

from __future__ import annotations

import numpy as np

from .gate import topk_indices
from .prediction import Explanation
from .rule import Decision


def explain_rows(logits: np.ndarray, d: Decision, labels, threshold: float, k: int) -> list[Explanation]:
    """One :class:`~lrsl_rt.prediction.Explanation` per row of ``logits`` under decision ``d``."""
    top = topk_indices(logits, k)
    after: dict[int, tuple] = {}
    sims: dict[int, tuple] = {}
    top_fused = topk_indices(d.fused, k)
    for j, i in enumerate(d.hard_idx):
        after[i] = tuple((labels[c], float(d.fused[j, c])) for c in top_fused[j])
        sims[i] = tuple((labels[c], float(d.cos[j, c])) for c in top[i])
    return [
        Explanation(
            variance=float(d.variance[i]),
            threshold=threshold,
            k=k,
            topk_before=tuple((labels[c], float(logits[i, c])) for c in top[i]),
            topk_after=after.get(i),
            similarities=sims.get(i),
        )
        for i in range(len(logits))
    ]
