"""Accuracy of the classifier alone and with LRSL, on all samples and on the hard subset.

One function shared by training (dev/test reports), export (the accuracy gate) and ``lrsl-rt eval``,
so the three report the same numbers for the same arrays.
"""

from __future__ import annotations

import numpy as np


def _acc(pred: np.ndarray, gold: np.ndarray) -> float | None:
    return float(np.mean(pred == gold)) if len(gold) else None


def lrsl_report(gold: np.ndarray, base_pred: np.ndarray, lrsl_pred: np.ndarray, hard: np.ndarray) -> dict:
    """Summary of a run: accuracies (fractions in [0, 1]), hard share, fixed and broken counts.

    ``fixed`` counts hard samples the classifier got wrong and LRSL got right; ``broken`` the reverse.

    >>> r = lrsl_report(np.array([0, 1, 2]), np.array([0, 2, 2]), np.array([0, 1, 2]), np.array([0, 1, 0], bool))
    >>> r["accuracy_classifier"], r["accuracy_lrsl"], r["fixed"], r["broken"]
    (0.6666666666666666, 1.0, 1, 0)
    """
    gold, base_pred, lrsl_pred = (np.asarray(a) for a in (gold, base_pred, lrsl_pred))
    hard = np.asarray(hard, dtype=bool)
    if not (len(gold) == len(base_pred) == len(lrsl_pred) == len(hard)):
        raise ValueError("gold, base_pred, lrsl_pred and hard must have the same length")
    base_ok, lrsl_ok = base_pred == gold, lrsl_pred == gold
    return {
        "n": int(len(gold)),
        "accuracy_classifier": _acc(base_pred, gold),
        "accuracy_lrsl": _acc(lrsl_pred, gold),
        "n_hard": int(hard.sum()),
        "hard_share": float(hard.mean()) if len(hard) else None,
        "hard_accuracy_classifier": _acc(base_pred[hard], gold[hard]),
        "hard_accuracy_lrsl": _acc(lrsl_pred[hard], gold[hard]),
        "fixed": int(np.sum(hard & ~base_ok & lrsl_ok)),
        "broken": int(np.sum(hard & base_ok & ~lrsl_ok)),
    }


def format_report(r: dict) -> str:
    """Two human lines for a report from :func:`lrsl_report`."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    return (
        f"all  (n={r['n']}): classifier {pct(r['accuracy_classifier'])} -> LRSL {pct(r['accuracy_lrsl'])}\n"
        f"hard (n={r['n_hard']}, {pct(r['hard_share'])}): classifier {pct(r['hard_accuracy_classifier'])}"
        f" -> LRSL {pct(r['hard_accuracy_lrsl'])}; fixed {r['fixed']}, broken {r['broken']}"
    )
