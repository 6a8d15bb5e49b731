"""The export's measurements: parity, re-calibration and the accuracy gate, as plain numpy functions.

Three comparisons, each on the dev split (and test when the checkpoint has one):

1. PyTorch vs ONNX fp32 -- the same encodings through the traced module and through the fp32
   (optimised) graph; max abs difference of logits and of embeddings against an explicit ``atol``.
   Exceeding it raises :class:`ParityError`: the export itself is wrong, no precision choice helps.
2. shipped precision vs ONNX fp32 -- top-1 agreement of the classifiers and cosine of the
   embeddings (mean and min): how much int8/fp16 moves the models.
3. bundle vs PyTorch -- LRSL accuracy of the finished bundle (through ``Reranker.predict``, exactly
   what ``lrsl-rt eval`` computes) against the PyTorch models with the training calibration of
   ``lrsl.json``. A drop larger than ``max_accuracy_drop`` raises :class:`AccuracyGateError`.

Worked example of the gate: PyTorch LRSL 0.9200, bundle 0.9150, max_accuracy_drop 0.005 -> drop
0.0050 <= 0.005 passes; a bundle at 0.9140 (drop 0.0060) is refused.
"""

from __future__ import annotations

import numpy as np

from lrsl_rt.accuracy import lrsl_report
from lrsl_rt.fusion import Fusion
from lrsl_rt.gate import is_hard
from lrsl_rt.rule import decide
from lrsl_rt.tuning import choose_fusion, mistakes_sureness

from .errors import AccuracyGateError, ParityError

PARITY_ATOL = {"logits": 1e-3, "embeddings": 1e-4}  # PyTorch vs ONNX fp32, absolute, elementwise


def check_parity(reference: np.ndarray, exported: np.ndarray, atol: float, what: str) -> float:
    """Max abs difference of two float arrays; ParityError when it exceeds ``atol`` (or shapes differ)."""
    if reference.shape != exported.shape:
        raise ParityError(f"{what}: PyTorch gives shape {reference.shape}, ONNX fp32 gives {exported.shape}")
    diff = float(np.max(np.abs(reference.astype(np.float64) - exported.astype(np.float64)), initial=0.0))
    if not diff <= atol:  # also catches NaN
        raise ParityError(
            f"{what}: ONNX fp32 differs from PyTorch by up to {diff:.3g} (allowed {atol:g}); the exported "
            "graph is wrong -- try --no-optimize to rule out the transformer optimizer, and report the model type"
        )
    return diff


def lrsl_reference(
    logits: np.ndarray,
    gold: np.ndarray,
    k: int,
    threshold: float,
    fusion: Fusion,
    cos_of,
    measure: str = "variance",
) -> dict:
    """lrsl_report of :func:`lrsl_rt.rule.decide` on precomputed logits, as the Reranker decides.

    ``cos_of(indices)`` returns the (len(indices), L) label similarities of those rows: only the hard
    samples need the embedder.
    """
    d = decide(logits, cos_of, threshold, fusion, k, measure=measure)
    return lrsl_report(gold, d.classifier_labels, d.labels, d.hard)


def calibrate(
    logits: np.ndarray,
    cos: np.ndarray,
    gold: np.ndarray,
    k: int,
    fallback_threshold: float,
    fixed: Fusion | None = None,
    incumbent: Fusion | None = None,
    measure: str = "variance",
) -> tuple[float, Fusion, list[dict], str | None]:
    """sigma2_mis, the best fusion, the fusion table and a note, measured on these (exported) dev arrays.

    When the exported classifier makes no mistake on dev, sigma2_mis is undefined: the PyTorch
    threshold ``fallback_threshold`` is kept and the note says so (the fusion is still chosen here).
    ``fixed``: a fusion the user set; it is kept (only the threshold is re-calibrated).
    ``incumbent``: the rule a candidate must beat significantly (the PyTorch choice; see
    :func:`lrsl_rt.tuning.choose_fusion`); None: the paper's ``logits*cos^2``. ``measure``: the
    gate's sureness measure; the threshold is the mean sureness of the dev mistakes under it.
    """
    note = None
    try:
        threshold = mistakes_sureness(logits, gold, k, measure)
    except ValueError as e:
        threshold = fallback_threshold
        note = f"{e}; kept the PyTorch threshold {fallback_threshold:.6g}"
    kw = {"incumbent": incumbent} if incumbent is not None else {}
    fusion, table = choose_fusion(
        logits, cos, gold, is_hard(logits, k, threshold, measure), k, fixed=fixed, **kw
    )
    return threshold, fusion, table, note


def predictions_report(predictions, gold: np.ndarray) -> dict:
    """lrsl_report of a list of ``lrsl_rt.Prediction`` -- the numbers ``lrsl-rt eval`` prints."""
    base = np.array([p.classifier_label_id for p in predictions], dtype=np.int64)
    pred = np.array([p.label_id for p in predictions], dtype=np.int64)
    hard = np.array([p.hard for p in predictions], dtype=bool)
    return lrsl_report(gold, base, pred, hard)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows with the same label: ``a`` and ``b`` are label ids or logits (argmax taken)."""
    a, b = (np.argmax(x, axis=1) if x.ndim == 2 else x for x in (np.asarray(a), np.asarray(b)))
    return float(np.mean(a == b))


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean and min row-wise cosine of two embedding matrices."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"mean": float(cos.mean()), "min": float(cos.min())}


def check_gate(pytorch_accuracy: float, bundle_accuracy: float, max_drop: float, split: str, n: int) -> dict:
    """The accuracy gate (fractions); the returned dict goes to manifest.metrics["gate"]."""
    drop = pytorch_accuracy - bundle_accuracy
    gate = {
        "split": split,
        "n": n,
        "pytorch_accuracy_lrsl": pytorch_accuracy,
        "bundle_accuracy_lrsl": bundle_accuracy,
        "drop": drop,
        "max_accuracy_drop": max_drop,
        "passed": bool(drop <= max_drop + 1e-12),
    }
    if not gate["passed"]:
        need = max(drop, 0.0)
        raise AccuracyGateError(
            f"the bundle's LRSL accuracy on {split} (n={n}) is {100 * bundle_accuracy:.2f}%, "
            f"{100 * drop:.2f} points below PyTorch's {100 * pytorch_accuracy:.2f}% "
            f"(allowed drop: {100 * max_drop:.2f} points); no bundle was written. To accept it, pass "
            f"--max-accuracy-drop {100 * need + 0.01:.2f} (points; max_accuracy_drop={need + 1e-4:.4f} "
            "in build_bundle), or try --precision fp32 or another --preset"
        )
    return gate
