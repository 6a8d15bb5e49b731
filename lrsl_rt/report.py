"""Evaluation of a bundle on labelled texts, and the files of ``lrsl-rt eval --report DIR``.

:func:`evaluate` runs ``Reranker.predict`` on the whole list at once with the Reranker's batch size,
so it sees exactly the batches the export step saw when it evaluated the same file, and reports the
same hard set and accuracies (see :mod:`lrsl_rt.reranker` on deterministic batching). Accuracy
figures come from :func:`lrsl_rt.accuracy.lrsl_report`, shared with training and export.

``variance.png`` is a histogram of the top-k logit variance of the samples the classifier got right
and of those it got wrong, with the hard threshold marked: the threshold is the mean variance of the
wrong ones on the calibration set, so on held-out data most wrong samples should sit left of it.
matplotlib is optional (the ``plot`` extra) and imported only here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .accuracy import lrsl_report
from .defaults import install_hint
from .errors import UsageError


def evaluate(reranker, texts: list[str], gold: list[int], abstain: bool = False) -> dict:
    """Report dict plus per-sample arrays ``variance`` and ``correct`` (classifier alone).

    Gold ids of -1 mark out-of-scope texts: the LRSL report covers the others, and ``out_of_scope``
    holds the abstain decision's figures on both (:func:`out_of_scope_report`).
    """
    gold_all = np.asarray(gold, dtype=np.int64)
    preds_all = reranker.predict(texts, explain=True, abstain=abstain)
    extra = {}
    if (gold_all < 0).any():
        extra["out_of_scope"] = out_of_scope_report(gold_all, preds_all)
    preds = [p for p, g in zip(preds_all, gold_all, strict=True) if g >= 0]
    gold_a = gold_all[gold_all >= 0]
    base = np.array([p.classifier_label_id for p in preds], dtype=np.int64)
    lrsl = np.array([p.label_id for p in preds], dtype=np.int64)
    hard = np.array([p.hard for p in preds], dtype=bool)
    variance = np.array([p.explanation.variance for p in preds], dtype=np.float64)
    return {
        "report": lrsl_report(gold_a, base, lrsl, hard),
        "variance": variance,
        "correct": base == gold_a,
        **extra,
    }


def out_of_scope_report(gold: np.ndarray, preds) -> dict:
    """Out-of-scope recall, in-scope accuracy and abstained share, macro-F1 over the known labels
    plus one unknown class (gold -1; an abstained text predicts -1)."""
    from .abstain import macro_f1

    pred = np.array([-1 if p.out_of_scope else p.label_id for p in preds], dtype=np.int64)
    oos = gold < 0
    return {
        "n_out_of_scope": int(oos.sum()),
        "n_in_scope": int((~oos).sum()),
        "oos_recall": float(np.mean(pred[oos] == -1)),
        "inscope_accuracy": float(np.mean(pred[~oos] == gold[~oos])) if (~oos).any() else None,
        "inscope_abstained": float(np.mean(pred[~oos] == -1)) if (~oos).any() else None,
        "macro_f1": macro_f1(gold, pred),
    }


def format_out_of_scope(r: dict) -> str:
    """One human line for :func:`out_of_scope_report`."""

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    return (
        f"out of scope (n={r['n_out_of_scope']}): recall {pct(r['oos_recall'])}; in scope (n={r['n_in_scope']}): "
        f"accuracy {pct(r['inscope_accuracy'])}, abstained {pct(r['inscope_abstained'])}; macro-F1 {pct(r['macro_f1'])}"
    )


def require_matplotlib():
    """matplotlib's Figure class (no pyplot: no global backend or state is touched)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UsageError(
            "--report draws variance.png with matplotlib, which is not installed; "
            f"install the plot extra: {install_hint('plot')}"
        ) from e
    return Figure


def plot_variance(path: Path, variance: np.ndarray, correct: np.ndarray, threshold: float, k: int) -> Path:
    figure = require_matplotlib()
    fig = figure(figsize=(7, 4))
    ax = fig.subplots()
    hi = float(max(variance.max(initial=0.0), threshold)) * 1.05 or 1.0
    bins = np.linspace(0.0, hi, 41)
    ax.hist(variance[correct], bins=bins, alpha=0.6, label=f"classifier right (n={int(correct.sum())})")
    ax.hist(variance[~correct], bins=bins, alpha=0.6, label=f"classifier wrong (n={int((~correct).sum())})")
    ax.axvline(
        threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g} (hard at or below)"
    )
    ax.set_xlabel(f"variance of the top-{k} logits")
    ax.set_ylabel("samples")
    ax.set_title("Top-k logit variance: the hard-sample gate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_report(out_dir: Path, result: dict, reranker, input_path: str) -> list[Path]:
    """report.json and variance.png in ``out_dir`` (created); returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m = reranker.manifest
    doc = {
        "bundle": str(reranker.bundle_dir),
        "input": input_path,
        "precision": m.precision,
        "preset": m.preset,
        "k": m.k,
        "threshold": m.threshold,
        "fusion": m.fusion.to_dict(),
        "batch_size": reranker.batch_size,
        **result["report"],
        **({"out_of_scope": result["out_of_scope"]} if "out_of_scope" in result else {}),
        "bundle_metrics": m.metrics,
    }
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_path = plot_variance(
        out_dir / "variance.png", result["variance"], result["correct"], m.threshold, m.k
    )
    return [report_path, plot_path]
