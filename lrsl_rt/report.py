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
from .errors import UsageError


def evaluate(reranker, texts: list[str], gold: list[int]) -> dict:
    """Report dict plus per-sample arrays ``variance`` and ``correct`` (classifier alone)."""
    preds = reranker.predict(texts, explain=True)
    gold_a = np.asarray(gold, dtype=np.int64)
    base = np.array([p.classifier_label_id for p in preds], dtype=np.int64)
    lrsl = np.array([p.label_id for p in preds], dtype=np.int64)
    hard = np.array([p.hard for p in preds], dtype=bool)
    variance = np.array([p.explanation.variance for p in preds], dtype=np.float64)
    return {
        "report": lrsl_report(gold_a, base, lrsl, hard),
        "variance": variance,
        "correct": base == gold_a,
    }


def require_matplotlib():
    """matplotlib's Figure class (no pyplot: no global backend or state is touched)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UsageError(
            "--report draws variance.png with matplotlib, which is not installed; "
            "install it with `pip install 'lrsl-rt[plot]'`"
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
        "bundle_metrics": m.metrics,
    }
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_path = plot_variance(
        out_dir / "variance.png", result["variance"], result["correct"], m.threshold, m.k
    )
    return [report_path, plot_path]
