"""Batch invariance measured: a bundle's outputs for the same texts alone and in shuffled batches.

The ``invariance`` and ``quant_presets`` entry scripts both call :func:`batching_runs` and
:func:`compare`; what a run is and why it is shuffled: :mod:`benchmarks.invariance`.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

DEFAULT_BATCH_SIZES = (32, 8)


def run_grouped(bundle, texts: list[str], groups: list[list[int]], threads: int | None) -> dict:
    """Logits, LRSL and classifier label ids of ``texts``, each group of indices one model call."""
    from lrsl_rt import Reranker

    size = max(len(g) for g in groups)
    r = Reranker.from_bundle(bundle, threads=threads, batch_size=size)
    logits = np.empty((len(texts), len(r.labels)), np.float32)
    label, clf = np.empty(len(texts), np.int64), np.empty(len(texts), np.int64)
    for g in groups:
        batch = [texts[i] for i in g]
        logits[g] = r.logits(batch)
        predictions = r.predict(batch)
        label[g] = [p.label_id for p in predictions]
        clf[g] = [p.classifier_label_id for p in predictions]
    return {"logits": logits, "label": label, "classifier_label": clf}


def batching_runs(
    bundle, texts: list[str], batch_sizes=DEFAULT_BATCH_SIZES, seed: int = 0, threads=None
) -> dict:
    """``{"alone": ..., "mixed_B": ...}``: the outputs of :func:`run_grouped` per way of batching."""
    n = len(texts)
    runs = {"alone": run_grouped(bundle, texts, [[i] for i in range(n)], threads)}
    for k, b in enumerate(batch_sizes):
        order = list(range(n))
        random.Random(seed + k).shuffle(order)
        groups = [order[s : s + b] for s in range(0, n, b)]
        runs[f"mixed_{b}"] = run_grouped(bundle, texts, groups, threads)
    return runs


def compare(runs: dict) -> dict:
    """Invariance rates and max |logit difference| of every run against ``alone``."""
    alone = runs["alone"]
    same = np.ones(len(alone["label"]), bool)
    per_run = {}
    for name, r in runs.items():
        if name == "alone":
            continue
        label_same = (r["label"] == alone["label"]) & (r["classifier_label"] == alone["classifier_label"])
        same &= label_same
        per_run[name] = {
            "labels_identical": float(label_same.mean()),
            "max_abs_logit_diff": float(np.max(np.abs(r["logits"] - alone["logits"]), initial=0.0)),
        }
    return {
        "n": int(len(same)),
        "labels_identical": float(same.mean()),
        "texts_changed": int((~same).sum()),
        "max_abs_logit_diff": max((v["max_abs_logit_diff"] for v in per_run.values()), default=0.0),
        "runs": per_run,
    }


def describe(bundle) -> dict:
    """Precision, preset and the manifest's invariance claim of a bundle."""
    from lrsl_rt.manifest import read_manifest

    m = read_manifest(Path(bundle))
    q = m.metrics.get("quantization", {})
    return {
        "bundle": str(bundle),
        "precision": m.precision,
        "preset": m.preset,
        "claims_batch_invariant": q.get("batch_invariant", m.precision != "int8"),
    }
