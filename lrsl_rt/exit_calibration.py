"""Where rows may leave: the exit thresholds, chosen on dev within an accuracy budget.

The inputs are what the stage chain gives on dev when no row leaves: each exit head's logits and the
correctness of the no-exit path (the full classifier, the gate and the fusion: :func:`lrsl_rt.rule.decide`).
A row leaves at the first exit where its sureness (:func:`lrsl_rt.gate.sureness`, the bundle's
measure) is above that exit's threshold, and is then right when the exit head's argmax is its
label; the others keep the no-exit path's answer. Among the thresholds on a grid (quantiles of each
exit's dev sureness, plus "closed"), :func:`choose_exit_thresholds` keeps the combination that saves
the most encoder layers over dev while the path's accuracy stays at least the no-exit accuracy minus
``budget`` (a fraction: 0.002 is 0.2 points); ties go to the more accurate, then to the one that
lets fewer rows leave.

An exit that nobody leaves at on dev gets :data:`CLOSED` (a finite threshold no sureness reaches).

Worked example (one exit after layer 2 of 4, measure max_prob): dev sureness at the exit [0.99,
0.95, 0.6, 0.5], exit head right on rows 0, 1, 3, no-exit path right on all four. Threshold 0.9 lets
rows 0 and 1 leave, both right: accuracy 4/4, 2 x 2 layers saved. Threshold 0.55 also lets row 2
leave (the head is wrong there): 3/4, outside a 0.2-point budget. So 0.9 is kept.
"""

from __future__ import annotations

import itertools

import numpy as np

from .gate import sureness

CLOSED = 1e30  # an exit threshold that no sureness passes: nobody leaves there
GRID_QUANTILES = 40  # candidate thresholds per exit (quantiles of its dev sureness)
MAX_COMBINATIONS = 200_000


def path_outcome(sure: list[np.ndarray], exit_ok: list[np.ndarray], base_ok: np.ndarray, thresholds) -> tuple:
    """(correct (n,) bool, exit index per row (n,), -1 for rows that went all the way)."""
    correct, where = base_ok.copy(), np.full(len(base_ok), -1)
    open_rows = np.ones(len(base_ok), dtype=bool)
    for e, (s, ok, t) in enumerate(zip(sure, exit_ok, thresholds, strict=True)):
        leave = open_rows & (s > t)
        correct[leave], where[leave] = ok[leave], e
        open_rows &= ~leave
    return correct, where


def choose_exit_thresholds(
    exit_logits: list[np.ndarray],
    layers: list[int],
    depth: int,
    gold: np.ndarray,
    base_ok: np.ndarray,
    measure: str,
    k: int,
    budget: float,
) -> tuple[tuple[float, ...], dict]:
    """(threshold per exit, report) on dev; see the module docstring.

    ``exit_logits``: (n, L) per exit; ``base_ok``: (n,) bool, the no-exit path right or not.
    """
    gold, base_ok = np.asarray(gold), np.asarray(base_ok, dtype=bool)
    sure = [sureness(z, measure, k) for z in exit_logits]
    exit_ok = [np.argmax(z, axis=1) == gold for z in exit_logits]
    per_exit = max(4, int(round(MAX_COMBINATIONS ** (1 / max(len(layers), 1)))))
    grids = [_grid(s, min(GRID_QUANTILES, per_exit)) for s in sure]
    floor = base_ok.mean() - budget - 1e-12
    saved_per_exit = np.array([depth - layer for layer in layers], dtype=np.int64)
    best, best_key = tuple(CLOSED for _ in layers), (0, -1, 0)
    for combo in itertools.product(*grids):
        correct, where = path_outcome(sure, exit_ok, base_ok, combo)
        if correct.mean() < floor:
            continue
        saved = int(saved_per_exit[where[where >= 0]].sum())
        key = (saved, int(correct.sum()), -int((where >= 0).sum()))
        if key > best_key:
            best, best_key = combo, key
    _, where = path_outcome(sure, exit_ok, base_ok, best)
    best = tuple(t if (where == e).any() else CLOSED for e, t in enumerate(best))  # nobody left: closed
    return best, exit_report(sure, exit_ok, base_ok, best, layers, depth, budget)


def _grid(s: np.ndarray, n: int) -> list[float]:
    """Candidate thresholds of one exit: quantiles of its dev sureness, then closed."""
    if s.size == 0:
        return [CLOSED]
    q = np.unique(np.quantile(s, np.linspace(0.0, 1.0, n + 1)))
    return [*sorted(float(x) for x in q), CLOSED]


def exit_report(sure, exit_ok, base_ok, thresholds, layers, depth, budget) -> dict:
    """What the chosen thresholds do on dev (for the manifest's calibration)."""
    correct, where = path_outcome(sure, exit_ok, base_ok, thresholds)
    n = max(len(base_ok), 1)
    used = sum((depth - layers[e]) * int((where == e).sum()) for e in range(len(layers)))
    return {
        "budget": budget,
        "accuracy_no_exit": float(base_ok.mean()) if len(base_ok) else None,
        "accuracy_with_exits": float(correct.mean()) if len(base_ok) else None,
        "share": {str(layer): float((where == e).sum() / n) for e, layer in enumerate(layers)},
        "layers_saved_share": float(used / (n * depth)),
        "exit_head_accuracy": {
            str(layer): float(ok.mean()) for layer, ok in zip(layers, exit_ok, strict=True)
        },
    }
