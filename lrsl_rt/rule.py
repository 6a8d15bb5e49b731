"""The LRSL decision, written once: argmax, the gate, the fusion on the hard rows only.

Every part of the project that turns logits into LRSL labels calls :func:`decide`: the runtime
(``Reranker.predict``), dev calibration (:mod:`lrsl_rt.tuning`), the export's PyTorch reference
(:mod:`export.evaluate`), training's reports (:mod:`train.pipeline`) and the benchmarks. A change to
the rule is made here and nowhere else.

The similarities are asked for the hard rows only, so a caller that must run an embedder to get
them (the runtime, the export's reference) passes a function of the hard row indices; a caller that
already holds all of them (calibration on dev) passes the (n, L) array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .fusion import Fusion, fuse
from .gate import DEFAULT_MEASURE, is_unsure, sureness, topk_indices
from .prediction import Explanation

Similarities = np.ndarray | Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class Decision:
    """What :func:`decide` returns; all arrays are indexed like the input rows unless said otherwise.

    ``labels`` (n,): the final label ids (the fused argmax on hard rows, the classifier's elsewhere);
    ``classifier_labels`` (n,): the classifier's argmax; ``hard`` (n,) bool: the gate's verdict;
    ``sureness`` (n,): the measure the gate compared with the threshold (:func:`lrsl_rt.gate.sureness`;
    the top-k logit variance under the paper's measure, also readable as ``variance``);
    ``hard_idx`` (n_hard,): the indices of the hard rows, ascending; ``cos`` and ``fused``
    (n_hard, L): their label similarities and fused scores, row j belonging to ``hard_idx[j]``.
    """

    labels: np.ndarray
    classifier_labels: np.ndarray
    hard: np.ndarray
    sureness: np.ndarray
    hard_idx: np.ndarray
    cos: np.ndarray
    fused: np.ndarray

    @property
    def variance(self) -> np.ndarray:
        """The gate's sureness; its historical name, exact under the paper's ``variance`` measure."""
        return self.sureness


def decide(
    logits: np.ndarray,
    similarities: Similarities,
    threshold: float | None,
    fusion: Fusion,
    k: int,
    *,
    measure: str = DEFAULT_MEASURE,
    hard: np.ndarray | None = None,
    settled: np.ndarray | None = None,
) -> Decision:
    """LRSL labels of ``logits`` (n, L): rows whose ``measure`` is <= ``threshold`` are reranked.

    ``similarities``: the (n, L) cosine similarities, or a function that takes the hard row indices
    (int array, ascending) and returns their (n_hard, L) similarities; it is not called when no row
    is hard. ``hard``: a gate mask the caller already has (calibration measures every candidate
    fusion on one mask); it replaces the threshold, which may then be None. ``settled`` (n,) bool:
    rows already decided at an early exit (:mod:`lrsl_rt.exits`), sure there and so never hard.

    Worked example (k=2, threshold 0.5, fusion logits_cos p=2 scope all), two rows of 3 labels:

    - row 0, logits [3.0, 2.8, 0.1]: top-2 [3.0, 2.8], variance 0.1^2 = 0.01 <= 0.5: hard;
      cos [0.2, 0.9, 0.5] -> fused [3.0*0.04, 2.8*0.81, 0.1*0.25] = [0.12, 2.268, 0.025] -> label 1
      (the classifier said 0);
    - row 1, logits [4.0, 0.0, 0.5]: top-2 [4.0, 0.5], variance 1.75^2 = 3.0625 > 0.5: easy, keeps 0.

    >>> logits = np.array([[3.0, 2.8, 0.1], [4.0, 0.0, 0.5]])
    >>> d = decide(logits, lambda idx: np.array([[0.2, 0.9, 0.5]])[: len(idx)], 0.5, Fusion(), 2)
    >>> d.labels.tolist(), d.classifier_labels.tolist(), d.hard.tolist(), d.hard_idx.tolist()
    ([1, 0], [0, 0], [True, False], [0])
    >>> d.variance.round(4).tolist(), d.fused.round(3).tolist()
    ([0.01, 3.0625], [[0.12, 2.268, 0.025]])
    """
    logits = np.asarray(logits)
    sure = sureness(logits, measure, k)
    if hard is None:
        if threshold is None:
            raise ValueError("decide needs a threshold or a hard mask")
        hard = is_unsure(sure, threshold)
    hard = np.asarray(hard, dtype=bool)
    if settled is not None:
        hard = hard & ~np.asarray(settled, dtype=bool)
    if hard.shape != (len(logits),):
        raise ValueError(f"the hard mask has shape {hard.shape}, expected ({len(logits)},)")
    classifier_labels = np.argmax(logits, axis=1)
    labels = classifier_labels.copy()
    hard_idx = np.flatnonzero(hard)
    width = logits.shape[1]
    cos = fused = np.zeros((0, width), dtype=np.float64)
    if hard_idx.size:
        cos = similarities(hard_idx) if callable(similarities) else np.asarray(similarities)[hard_idx]
        fused = fuse(logits[hard_idx], cos, fusion, k)
        labels[hard_idx] = np.argmax(fused, axis=1)
    return Decision(labels, classifier_labels, hard, sure, hard_idx, cos, fused)


def explain_rows(
    logits: np.ndarray, d: Decision, labels: tuple[str, ...], k: int, threshold: float
) -> list[Explanation]:
    """One :class:`~lrsl_rt.prediction.Explanation` per row of ``logits`` decided as ``d``: the top-k
    labels before and, for a hard row, after the fusion, with their similarities."""
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
