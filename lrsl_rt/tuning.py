"""Dev-set calibration: the hard threshold sigma2_mis and the choice of fusion rule.

Used twice with the same code: by ``train`` on the PyTorch models and by ``export`` on the exported
(possibly quantized) ONNX models, whose logits differ slightly. The fusion is chosen against an
incumbent with a significance test (:func:`choose_fusion`), because a dev split has few hard samples.
"""

from __future__ import annotations

import numpy as np

from .fusion import RULES, SCOPES, Fusion
from .gate import DEFAULT_MEASURE, sureness, topk_variance
from .rule import decide

DEFAULT_P_GRID = (1, 2, 3, 4, 6, 8)
# The reference code's rules, reported unchanged next to the chosen one.
PAPER_RULES = (Fusion("logits_cos", 2, "all"), Fusion("softmax_cos", 2, "all"))
# The incumbent of the dev choice per kind of classifier: the reference's encoder (BERT) path fuses
# raw logits, its LLM path (a decoder-only classifier fine-tuned with LoRA) softmax probabilities.
REFERENCE_RULES = {"encoder": PAPER_RULES[0], "decoder": PAPER_RULES[1]}
# How much better on dev (McNemar z against the incumbent rule) a candidate must be to replace it.
MIN_Z = 2.0


def sigma2_mis(logits: np.ndarray, gold: np.ndarray, k: int) -> float:
    """Mean top-k logit variance (ddof=0) over the misclassified samples.

    Raises ValueError when the classifier makes no mistake on these samples: the threshold is then
    undefined and the caller must say what to do (more dev data, or an explicit threshold).
    """
    return _mean_over_mistakes(
        topk_variance, logits, gold, k, "sigma2_mis (mean top-k variance of its mistakes)"
    )


def mistakes_sureness(logits: np.ndarray, gold: np.ndarray, k: int, measure: str = DEFAULT_MEASURE) -> float:
    """The paper's sigma2_mis rule under any measure (:mod:`lrsl_rt.gate`): the mean sureness of the
    misclassified samples, so a row at or below it is as unsure as a typical mistake. Equal to
    :func:`sigma2_mis` under ``variance``; ValueError when there is no mistake.

    >>> round(mistakes_sureness(np.log([[6.0, 3.0, 1.0], [1.0, 8.0, 1.0]]), np.array([1, 1]), 3, "max_prob"), 4)
    0.6
    """
    if measure == "variance":
        return sigma2_mis(logits, gold, k)
    return _mean_over_mistakes(
        lambda x, k: sureness(x, measure, k), logits, gold, k, f"the mean {measure} of its mistakes"
    )


def _mean_over_mistakes(score, logits, gold, k: int, what: str) -> float:
    """``score(logits, k)`` averaged over the rows the classifier gets wrong; ValueError naming
    ``what`` when it gets none wrong."""
    logits, gold = np.asarray(logits), np.asarray(gold)
    wrong = np.argmax(logits, axis=1) != gold
    if not wrong.any():
        raise ValueError(
            f"the classifier is right on all {len(gold)} calibration samples, so {what} is undefined; "
            "use a larger dev split"
        )
    return float(score(logits, k)[wrong].mean())


def candidate_fusions(p_grid=DEFAULT_P_GRID) -> list[Fusion]:
    return [Fusion(rule, int(p), scope) for rule in RULES for scope in SCOPES for p in p_grid]


def _correct(logits, cos, gold, hard, k, fusion) -> np.ndarray:
    """Per-sample correctness (bool, n) of LRSL with ``fusion`` applied to the hard samples only."""
    return decide(logits, cos, None, fusion, k, hard=hard).labels == gold


def evaluate_fusions(
    logits: np.ndarray, cos: np.ndarray, gold: np.ndarray, hard: np.ndarray, k: int, fusions
) -> list[dict]:
    """Accuracy over all samples of each fusion applied to the hard samples only."""
    return _fusion_table(logits, cos, gold, hard, k, fusions)[0]


def _fusion_table(logits, cos, gold, hard, k, fusions) -> tuple[list[dict], list[np.ndarray]]:
    """evaluate_fusions' rows and each fusion's per-sample correctness."""
    logits, cos, gold = np.asarray(logits), np.asarray(cos), np.asarray(gold)
    hard = np.asarray(hard, dtype=bool)
    rows, correct = [], []
    for f in fusions:
        ok = _correct(logits, cos, gold, hard, k, f)
        correct.append(ok)
        rows.append(
            {
                "fusion": f.to_dict(),
                "name": f.name,
                "accuracy": float(np.mean(ok)),
                "hard_accuracy": float(np.mean(ok[hard])) if hard.any() else None,
            }
        )
    return rows, correct


def mcnemar(ok: np.ndarray, base_ok: np.ndarray) -> dict:
    """Paired comparison of a candidate with an incumbent on the same samples (per-sample correctness).

    ``gain`` = b - w and ``discordant`` = b + w, where b samples only the candidate gets right and w
    only the incumbent; ``z = (b - w) / sqrt(b + w)`` (0 when they never differ). A candidate replaces
    the incumbent when ``z >= MIN_Z``.

    >>> mcnemar(np.array([1, 1, 1, 0], bool), np.array([0, 0, 1, 1], bool))
    {'gain': 1, 'discordant': 3, 'z': 0.5773502691896258}
    """
    ok, base_ok = np.asarray(ok, dtype=bool), np.asarray(base_ok, dtype=bool)
    b, w = int(np.sum(ok & ~base_ok)), int(np.sum(~ok & base_ok))
    return {"gain": b - w, "discordant": b + w, "z": float((b - w) / np.sqrt(b + w)) if b + w else 0.0}


def choose_fusion(
    logits: np.ndarray,
    cos: np.ndarray,
    gold: np.ndarray,
    hard: np.ndarray,
    k: int,
    p_grid=DEFAULT_P_GRID,
    fixed: Fusion | None = None,
    incumbent: Fusion = PAPER_RULES[0],
    min_z: float = MIN_Z,
) -> tuple[Fusion, list[dict]]:
    """The fusion to ship, and the table of every candidate on these samples.

    A dev split has few hard samples, and among 24 candidates the best one on dev is often best by
    luck (a dev ranking need not predict the test ranking; docs/results/).
    So ``incumbent`` (in training the reference's rule for the classifier's kind,
    :data:`REFERENCE_RULES`; in export the PyTorch choice) stays
    unless a candidate beats it significantly: paired on the same samples, with ``b`` samples only
    the candidate gets right and ``w`` only the incumbent gets right, McNemar's
    ``z = (b - w) / sqrt(b + w)`` must reach ``min_z`` (default 2). Among the candidates that do, the
    most accurate wins (ties: the earlier, simpler one). Each table row carries ``gain`` (b - w),
    ``discordant`` (b + w) and ``z`` against the incumbent.

    ``fixed``: the user's rule, returned as is; the table is still measured (and includes it).
    """
    fusions = candidate_fusions(p_grid)
    for extra in (incumbent, fixed):
        if extra is not None and extra not in fusions:
            fusions.append(extra)
    table, correct = _fusion_table(logits, cos, gold, hard, k, fusions)
    base = correct[fusions.index(incumbent)]
    for row, ok in zip(table, correct, strict=True):
        row.update(mcnemar(ok, base))
    if fixed is not None:
        return fixed, table
    winners = [i for i, row in enumerate(table) if row["z"] >= min_z]
    if not winners:
        return incumbent, table
    best = max(winners, key=lambda i: (table[i]["accuracy"], -i))
    return fusions[best], table


def fusion_reason(chosen: Fusion, table: list[dict], fixed: Fusion | None, incumbent: Fusion) -> str:
    """Why :func:`choose_fusion` returned ``chosen``, in words for logs."""
    if fixed is not None:
        return "fixed by the user"
    if chosen == incumbent:
        best = max(table, key=lambda row: row["z"])
        return (
            f"kept {incumbent.name}: no candidate beat it with McNemar z >= {MIN_Z:g} on dev "
            f"(best z {best['z']:.2f}, {best['name']})"
        )
    row = next(row for row in table if row["name"] == chosen.name)
    return f"beat {incumbent.name} on dev by {row['gain']} of {row['discordant']} differing samples, z {row['z']:.2f}"
