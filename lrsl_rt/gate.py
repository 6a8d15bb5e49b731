"""The variance gate: which samples are hard.

A sample is *hard* when the population variance (ddof=0) of its top-k logits is at or below the
threshold ``sigma2_mis`` -- the mean top-k variance of the samples the classifier got wrong on dev.
Flat top-k logits mean the classifier hesitates between several labels.

Worked example (k=3): logits [2.0, 1.0, 0.5, -1.0] -> top-3 [2.0, 1.0, 0.5], mean 7/6,
variance ((5/6)^2 + (1/6)^2 + (2/3)^2) / 3 = 0.3889. With threshold 0.5 the sample is hard.
"""

from __future__ import annotations

import numpy as np


def topk_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest logits of each row, best first; shape (n, k).

    Ties are broken by the lower label index (stable), so results are reproducible.
    """
    logits = np.asarray(logits)
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")
    return order[:, :k]


def topk_variance(logits: np.ndarray, k: int) -> np.ndarray:
    """Population variance of each row's top-k logits; shape (n,).

    >>> topk_variance(np.array([[2.0, 1.0, 0.5, -1.0]]), 3).round(4)
    array([0.3889])
    """
    logits = np.asarray(logits, dtype=np.float64)
    top = np.take_along_axis(logits, topk_indices(logits, k), axis=1)
    return top.var(axis=1, ddof=0)


def is_hard(logits: np.ndarray, k: int, threshold: float) -> np.ndarray:
    """Boolean mask of hard samples: top-k variance <= threshold."""
    return topk_variance(logits, k) <= threshold
