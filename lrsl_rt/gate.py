"""How sure the classifier is of a row: one notion of "sure" for the gate, the exits and abstaining.

A *measure* turns a row of logits into a **sureness**, larger when the classifier is surer:

- ``variance``: the population variance (ddof=0) of the top-k logits -- the paper's measure. Flat
  top-k logits mean the classifier hesitates between several labels.
- ``margin``: the softmax probability of the best label minus that of the second.
- ``max_prob``: the softmax probability of the best label.
- ``entropy``: minus the entropy of the softmax (so that, like the others, larger is surer).

Every decision compares a sureness with a threshold calibrated on dev, the same way round: a row is
*unsure* when its sureness is at or below the threshold. The gate calls an unsure row *hard* and
reranks it; an exit lets a row leave only when it is not unsure there (:mod:`lrsl_rt.exits`); the
abstain score (:mod:`lrsl_rt.abstain`) is a sureness too, and a row at or below its threshold gets
the fallback label.

Worked example (k=3): logits [2.0, 1.0, 0.5, -1.0] -> top-3 [2.0, 1.0, 0.5], mean 7/6,
variance ((5/6)^2 + (1/6)^2 + (2/3)^2) / 3 = 0.3889. With threshold 0.5 the sample is hard.
"""

from __future__ import annotations

import numpy as np

from .defaults import DEFAULT_MEASURE, MEASURES  # the names, defined once; the measures below


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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sureness(logits: np.ndarray, measure: str, k: int) -> np.ndarray:
    """The ``measure`` of each row (larger = surer); shape (n,).

    Worked example, logits [ln 6, ln 3, ln 1] -> probabilities [0.6, 0.3, 0.1]:
    margin 0.6 - 0.3 = 0.3, max_prob 0.6, entropy -(0.6 ln 0.6 + 0.3 ln 0.3 + 0.1 ln 0.1) = -0.8979.

    >>> x = np.log([[6.0, 3.0, 1.0]])
    >>> [round(float(sureness(x, m, 3)[0]), 4) for m in ("margin", "max_prob", "entropy")]
    [0.3, 0.6, -0.8979]
    """
    if measure == "variance":
        return topk_variance(logits, k)
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    p = softmax(logits)
    if measure == "entropy":
        return (p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
    top2 = -np.sort(-p, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1] if measure == "margin" else top2[:, 0]


def is_unsure(values: np.ndarray, threshold: float) -> np.ndarray:
    """The one comparison every decision makes: sureness at or below the threshold."""
    return np.asarray(values) <= threshold


def is_hard(logits: np.ndarray, k: int, threshold: float, measure: str = DEFAULT_MEASURE) -> np.ndarray:
    """Boolean mask of hard samples: their ``measure`` is at or below ``threshold``."""
    return is_unsure(sureness(logits, measure, k), threshold)
