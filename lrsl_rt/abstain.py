"""Abstaining: a text that fits none of the labels gets the fallback label instead of a wrong one.

An abstain *score* is a sureness that the text belongs to one of the labels (larger = surer, as
every measure of :mod:`lrsl_rt.gate`); the text is out of scope when its score is at or below the
bundle's threshold (:func:`lrsl_rt.gate.is_unsure`, the comparison the gate and the exits make).

The scores (``ABSTAIN_SCORES`` in :mod:`lrsl_rt.manifest`), from what the rule already has:

- from the logits: ``max_prob`` (the maximum softmax probability, the standard baseline),
  ``margin``, ``variance``, ``entropy`` (the gate's measures) and ``energy`` (logsumexp of the logits);
- ``fused``: the record's ``score``, the softmax of the final scores (fused for hard texts);
- from the embedder: ``max_cos`` (the best cosine to a label text) and ``knn`` (the mean cosine to
  the ``KNN_NEIGHBOURS`` nearest training texts; the bundle then carries their embeddings);
- ``gated_cos``: LRSL's two signals together -- a text the gate calls easy is in scope (the
  classifier is sure of it), a hard one is in scope when the embedder puts it near a label
  (``max_cos``). It costs nothing beyond the rule: the embedder already runs on the hard texts.

- from the classifier's own features: ``mahalanobis`` (minus the smallest squared Mahalanobis
  distance of the classifier's feature vector to a class mean, shared covariance, after Podolskiy et
  al. 2021); the classifier graph then has a second output ``features`` and the bundle carries the
  whitening matrix and the whitened class means. It costs one small matrix product per text.

``max_cos`` and ``knn`` need the embedder on rows the gate calls easy. The **cascade** keeps that
cost down: a row the classifier is sure of (its ``cascade.measure``, a free score of
:data:`CASCADE_MEASURES`, above ``cascade.bound``) is in scope without the score; only the others pay
for it, and rows the gate already sends to the embedder reuse its output. The bound is set on dev (:func:`cascade_bound`) so that at most a set
share of the out-of-scope dev texts that the score catches escape it. The export measures every
score on dev, keeps the best by AUROC among those whose cost fits its budget, and sets the
threshold by :func:`choose_threshold`.
"""

from __future__ import annotations

import numpy as np

from .gate import is_unsure, sureness
from .rule import Decision

LOGIT_SCORES = ("max_prob", "margin", "variance", "entropy", "energy")
EMBEDDER_SCORES = ("max_cos", "knn")  # need the embedder on the rows they score
ALL_ROW_SCORES = EMBEDDER_SCORES  # the name older callers import
FEATURE_SCORES = ("mahalanobis",)  # need the classifier graph's ``features`` output
# What the cascade may compare with its bound: free scores of the classifier (the export keeps the
# one that lets the fewest in-scope dev texts through to the embedder)
CASCADE_MEASURES = ("max_prob", "energy", "mahalanobis")
DEFAULT_CASCADE_LOSS = 0.0  # share of the caught dev out-of-scope texts the cascade may let escape
DEFAULT_BUDGET = 0.10  # share of texts beyond the gate's hard ones the abstain score may embed
KNN_NEIGHBOURS = 10
EASY = np.inf  # gated_cos of an easy row: the classifier is sure, never out of scope
DEFAULT_FALLBACK = "out_of_scope"
DEFAULT_RULE = "drop:1"  # at most 1 point of in-scope accuracy lost on dev


def logit_score(logits: np.ndarray, score: str, k: int) -> np.ndarray:
    """A score computed from the logits alone.

    >>> logit_score(np.log([[6.0, 3.0, 1.0]]), "energy", 3).round(4)  # logsumexp = ln 10
    array([2.3026])
    """
    if score == "energy":
        z = np.asarray(logits, dtype=np.float64)
        top = z.max(axis=1)
        return top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return sureness(logits, score, k)


def knn_score(embeddings: np.ndarray, train_embeddings: np.ndarray, n: int = KNN_NEIGHBOURS) -> np.ndarray:
    """Mean cosine of each row (unit embeddings) to its ``n`` nearest training texts (unit rows).

    >>> train = np.eye(3, dtype=np.float32)
    >>> knn_score(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), train, n=2).round(3)
    array([0.5])
    """
    sims = np.asarray(embeddings, dtype=np.float32) @ np.asarray(train_embeddings, dtype=np.float32).T
    n = min(n, sims.shape[1])
    if not len(sims):
        return np.zeros(0)
    # the n largest by partial selection (linear in the training rows), not a full sort of each row
    top = np.partition(sims, sims.shape[1] - n, axis=1)[:, -n:]
    return top.astype(np.float64).mean(axis=1)


def mahalanobis_score(features: np.ndarray, whitener: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Minus the smallest squared Mahalanobis distance of each row to a class mean.

    ``whitener`` W (h, h) with W W^T the inverse of the shared covariance, ``means`` (L, h) the class
    means already whitened (mu W); the distance to class c is ||f W - mu_c W||^2. Larger is surer.

    Worked example, W the identity, means (0, 0) and (3, 0): the row (1, 0) is 1 from the first
    mean and 4 from the second: score -1.

    >>> mahalanobis_score(np.array([[1.0, 0.0]]), np.eye(2), np.array([[0.0, 0.0], [3.0, 0.0]]))
    array([-1.])
    """
    # float32 like the arrays it gets: a float64 copy of the whitener would cost more than the product
    z = np.asarray(features, dtype=np.float32) @ np.asarray(whitener, dtype=np.float32)
    mu = np.asarray(means, dtype=np.float32)
    d = (z * z).sum(axis=1)[:, None] - 2 * z @ mu.T + (mu * mu).sum(axis=1)[None, :]
    return -np.maximum(d.min(axis=1), 0.0).astype(np.float64) if len(z) else np.zeros(0)


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray, n_labels: int, ridge: float = 1e-6):
    """(whitener W, whitened class means) of training features: shared (tied) covariance, as LDA.

    The covariance is the mean outer product of each row's deviation from its class mean, with
    ``ridge`` times its mean diagonal added so it can be inverted; W is the inverse of its Cholesky
    factor, transposed, so ||(f - mu) W||^2 is the Mahalanobis distance.
    """
    f, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    means = np.zeros((n_labels, f.shape[1]))
    for c in range(n_labels):
        if np.any(y == c):
            means[c] = f[y == c].mean(axis=0)
    dev = f - means[y]
    cov = dev.T @ dev / max(len(f) - 1, 1)
    cov += ridge * max(float(np.mean(np.diag(cov))), 1e-12) * np.eye(len(cov))
    w = np.linalg.inv(np.linalg.cholesky(cov)).T
    return w.astype(np.float32), (means @ w).astype(np.float32)


def cascade_skips(sure: np.ndarray, bound: float) -> np.ndarray:
    """Rows the cascade settles as in scope without the score: their cascade measure above ``bound``.

    >>> cascade_skips(np.array([0.8, 0.5, 0.4]), 0.5).tolist()
    [True, False, False]
    """
    return ~is_unsure(sure, bound)


def cascade_bound(sure_oos, caught_oos, max_loss: float = DEFAULT_CASCADE_LOSS) -> float:
    """The lowest bound that lets at most ``max_loss`` of the out-of-scope dev texts escape.

    ``sure_oos``: the cascade measure of each out-of-scope dev text; ``caught_oos``: whether the
    full score catches it (score at or below its threshold). A text escapes when it is caught but
    its sureness is above the bound (the cascade then never scores it), so recall on dev falls by
    at most ``max_loss``. Rows at the bound are scored (the skip is strictly above).

    Worked example: four out-of-scope texts, sureness [0.2, 0.5, 0.9, 0.95], the first, second and
    fourth caught; ``max_loss`` 0.25 lets one escape: the bound is the second-highest caught
    sureness, 0.5 (above it: 0.9, not caught anyway, and 0.95, the one escape).

    >>> cascade_bound([0.2, 0.5, 0.9, 0.95], [True, True, False, True], 0.25)
    0.5
    """
    sure, caught = np.asarray(sure_oos, np.float64), np.asarray(caught_oos, bool)
    allowed = int(np.floor(max_loss * len(sure) + 1e-9))
    ranked = np.sort(sure[caught])[::-1]
    if allowed >= len(ranked):  # every caught text may escape: a bound below every dev text
        return float(sure.min() - 1.0) if sure.size else 0.0
    return float(ranked[allowed])


def scores_of(
    score: str,
    logits: np.ndarray,
    d: Decision,
    k: int,
    *,
    final_confidence: np.ndarray | None = None,
    cos: np.ndarray | None = None,
    knn: np.ndarray | None = None,
    maha: np.ndarray | None = None,
) -> np.ndarray:
    """The ``score`` of every row of one decision.

    ``final_confidence``: the records' ``score`` (for ``fused``); ``cos`` (n, L): every row's label
    similarities (for ``max_cos``); ``knn`` (n,): :func:`knn_score` of every row; ``maha`` (n,):
    :func:`mahalanobis_score` of every row. ``gated_cos`` uses
    the similarities the decision computed for its hard rows.

    Worked example: two rows, the first hard with best label cosine 0.3, the second easy:
    ``gated_cos`` = [0.3, inf]; with threshold 0.4 the first is out of scope.
    """
    if score in LOGIT_SCORES:
        return logit_score(logits, score, k)
    if score == "fused":
        return np.asarray(final_confidence, dtype=np.float64)
    if score == "max_cos":
        return np.asarray(cos, dtype=np.float64).max(axis=1)
    if score == "knn":
        return np.asarray(knn, dtype=np.float64)
    if score == "mahalanobis":
        return np.asarray(maha, dtype=np.float64)
    if score == "gated_cos":
        out = np.full(len(logits), EASY)
        if d.hard_idx.size:
            out[d.hard_idx] = np.asarray(d.cos, dtype=np.float64).max(axis=1)
        return out
    raise ValueError(f"unknown abstain score {score!r}")


# ---- evaluation and the threshold ------------------------------------------------------------------
def auroc(in_scope: np.ndarray, out_of_scope: np.ndarray) -> float:
    """Probability that an out-of-scope text scores below an in-scope one (ties count half).

    >>> auroc(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.4]))
    0.9166666666666666
    """
    a, b = np.asarray(in_scope, np.float64), np.asarray(out_of_scope, np.float64)
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for v in np.unique(both):  # average ranks of ties (inf included)
        tie = both == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    rank_in = ranks[: len(a)].sum()
    return float((rank_in - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))


def operating_point(s_in, correct_in, s_oos, threshold: float) -> dict:
    """Out-of-scope recall and in-scope accuracy (an abstained in-scope text counts as wrong)."""
    s_in, s_oos = np.asarray(s_in), np.asarray(s_oos)
    kept = s_in > threshold
    return {
        "threshold": float(threshold),
        "oos_recall": float(np.mean(s_oos <= threshold)) if len(s_oos) else None,
        "inscope_accuracy": float(np.mean(np.asarray(correct_in) & kept)),
        "inscope_abstained": float(np.mean(~kept)),
    }


def parse_rule(rule: str) -> tuple[str, float]:
    """``drop:P`` (points of in-scope accuracy), ``recall:R`` (out-of-scope recall in (0, 1]) or a number.

    >>> parse_rule("drop:1"), parse_rule("recall:0.8"), parse_rule("0.42")
    (('drop', 1.0), ('recall', 0.8), ('fixed', 0.42))
    """
    kind, _, value = str(rule).partition(":")
    try:
        if not value:
            return "fixed", float(kind)
        x = float(value)
    except ValueError:
        x = None
    if kind == "drop" and x is not None and 0 <= x <= 100:
        return "drop", x
    if kind == "recall" and x is not None and 0 < x <= 1:
        return "recall", x
    raise ValueError(
        f"abstain threshold rule {rule!r}: expected drop:P (0-100 points), recall:R (0-1) or a number"
    )


def choose_threshold(s_in, correct_in, s_oos, rule: str = DEFAULT_RULE) -> float:
    """The threshold the rule asks for, among the dev scores.

    ``drop:P``: the largest threshold whose in-scope accuracy is at most P points below abstaining
    on nothing (the most out-of-scope texts caught for that price); ``recall:R``: the smallest
    threshold that catches a share R of the out-of-scope dev texts; a number: that threshold.

    Worked example (``drop:50``): in-scope scores [0.9, 0.8, 0.4], all correct (accuracy 1.0); a
    threshold of 0.4 abstains on the third (accuracy 2/3, 33 points lost <= 50), 0.8 on two (67 > 50).

    >>> choose_threshold([0.9, 0.8, 0.4], [True, True, True], [0.1, 0.4], "drop:50")
    0.4
    """
    kind, x = parse_rule(rule)
    if kind == "fixed":
        return x
    s_in, s_oos = np.asarray(s_in, np.float64), np.asarray(s_oos, np.float64)
    finite = np.concatenate([s_in, s_oos])
    candidates = np.unique(finite[np.isfinite(finite)])
    below_all = float(candidates[0] - 1.0) if candidates.size else 0.0  # abstains on nothing
    if kind == "recall":
        for t in candidates:
            if np.mean(s_oos <= t) >= x:
                return float(t)
        return float(candidates[-1]) if candidates.size else below_all
    base = np.mean(correct_in)
    best = below_all
    for t in candidates:
        if operating_point(s_in, correct_in, s_oos, t)["inscope_accuracy"] >= base - x / 100 - 1e-12:
            best = float(t)
    return best


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``gold`` or ``pred`` (the unknown class is one of them).

    >>> macro_f1(np.array([0, 0, 1, -1]), np.array([0, 1, 1, -1]))
    0.7777777777777777
    """
    gold, pred = np.asarray(gold), np.asarray(pred)
    f1 = []
    for c in np.union1d(gold, pred):
        tp = np.sum((pred == c) & (gold == c))
        p, r = np.sum(pred == c), np.sum(gold == c)
        f1.append(0.0 if tp == 0 else 2 * tp / (p + r))
    return float(np.mean(f1))
