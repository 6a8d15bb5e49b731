"""Dev-set calibration: the hard threshold sigma2_mis and the choice of fusion rule.

Used twice with the same code: by ``train`` on the PyTorch models and by ``export`` on the exported
(possibly quantized) ONNX models, whose logits differ slightly.
"""

from __future__ import annotations

import numpy as np

from .fusion import RULES, SCOPES, Fusion, rerank
from .gate import topk_variance

DEFAULT_P_GRID = (1, 2, 3, 4, 6, 8)
# The reference code's rules, reported unchanged next to the chosen one.
PAPER_RULES = (Fusion("logits_cos", 2, "all"), Fusion("softmax_cos", 2, "all"))


def sigma2_mis(logits: np.ndarray, gold: np.ndarray, k: int) -> float:
    """Mean top-k logit variance (ddof=0) over the misclassified samples.

    Raises ValueError when the classifier makes no mistake on these samples: the threshold is then
    undefined and the caller must say what to do (more dev data, or an explicit threshold).
    """
    logits, gold = np.asarray(logits), np.asarray(gold)
    wrong = np.argmax(logits, axis=1) != gold
    if not wrong.any():
        raise ValueError(
            f"the classifier is right on all {len(gold)} calibration samples, so sigma2_mis "
            "(mean top-k variance of its mistakes) is undefined; use a larger dev split"
        )
    return float(topk_variance(logits, k)[wrong].mean())


def candidate_fusions(p_grid=DEFAULT_P_GRID) -> list[Fusion]:
    return [Fusion(rule, int(p), scope) for rule in RULES for scope in SCOPES for p in p_grid]


def evaluate_fusions(
    logits: np.ndarray, cos: np.ndarray, gold: np.ndarray, hard: np.ndarray, k: int, fusions
) -> list[dict]:
    """Accuracy over all samples of each fusion applied to the hard samples only."""
    logits, cos, gold = np.asarray(logits), np.asarray(cos), np.asarray(gold)
    hard = np.asarray(hard, dtype=bool)
    base = np.argmax(logits, axis=1)
    rows = []
    for f in fusions:
        pred = base.copy()
        if hard.any():
            pred[hard] = rerank(logits[hard], cos[hard], f, k)
        rows.append(
            {
                "fusion": f.to_dict(),
                "name": f.name,
                "accuracy": float(np.mean(pred == gold)),
                "hard_accuracy": float(np.mean(pred[hard] == gold[hard])) if hard.any() else None,
            }
        )
    return rows


def choose_fusion(
    logits: np.ndarray, cos: np.ndarray, gold: np.ndarray, hard: np.ndarray, k: int, p_grid=DEFAULT_P_GRID
) -> tuple[Fusion, list[dict]]:
    """Best fusion on these samples (ties: the earlier, simpler candidate) and the full table."""
    fusions = candidate_fusions(p_grid)
    table = evaluate_fusions(logits, cos, gold, hard, k, fusions)
    best = max(range(len(table)), key=lambda i: (table[i]["accuracy"], -i))
    return fusions[best], table
