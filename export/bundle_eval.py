"""The finished bundle measured: its reports through ``Reranker.predict``, the accuracy gate, the abstain figures.

What these report is what a user of the bundle gets: every figure comes through the same
``Reranker.predict`` that ``lrsl-rt eval`` calls.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lrsl_rt.accuracy import format_report

from .abstain import calibrate_abstain, evaluate_abstain
from .evaluate import check_gate, cosine_stats, predictions_report, top1_agreement
from .recalibrate import Calibration
from .settings import Settings


def evaluate_bundle(r, ckpt, ref, cal: Calibration, s: Settings, log) -> dict:
    """The bundle's reports through Reranker.predict, its agreement with ONNX fp32, and the gate;
    returns manifest.metrics (without graphs and timings)."""
    from . import onnx_export as ox

    dev, test, ev = ckpt.dev, ckpt.test, ckpt.eval_split
    reports, agreement = {}, {"dev": top1_agreement(cal.dev_logits, ref.dev_logits_fp32)}
    for split in (dev, test) if test else (dev,):
        predictions = r.predict(split.texts)
        reports[split.name] = predictions_report(predictions, split.gold)
        log(f"      bundle on {split.name}:\n" + indent(format_report(reports[split.name])))
        if split is test:
            clf_ids = np.array([p.classifier_label_id for p in predictions])
            agreement["test"] = top1_agreement(clf_ids, ref.test_logits_fp32)
    log(f"      PyTorch on {ev.name} (lrsl.json calibration):\n" + indent(format_report(ref.pytorch)))
    metrics = {
        "parity": ref.parity,
        "shipped_vs_fp32": {
            "top1_agreement": agreement,
            "embedding_cosine": cosine_stats(cal.dev_emb, ref.dev_emb_fp32),
        },
        "pytorch": {"split": ev.name, **ref.pytorch},
        "bundle": reports,
        "export_settings": {
            "optimize": s.optimize,
            "opset": ox.OPSET,
            "batch_size": s.batch_size,
            "max_accuracy_drop": s.max_accuracy_drop,
        },
    }
    metrics["gate"] = check_gate(
        ref.pytorch["accuracy_lrsl"],
        reports[ev.name]["accuracy_lrsl"],
        s.max_accuracy_drop,
        ev.name,
        len(ev.texts),
    )
    log(
        f"      gate passed: drop {100 * metrics['gate']['drop']:.2f} points <= {100 * s.max_accuracy_drop:.2f}"
    )
    return metrics


def add_abstain(bundle, r, ckpt, oos, s: Settings, metrics: dict, log):
    """The manifest's abstain section (and the files its score needs); figures into ``metrics``."""
    section, metrics["abstain"], ship = calibrate_abstain(r, ckpt, oos, s.abstain, log)
    for role, array in ship.items():  # train_embeddings, or feature_whitener and feature_means
        np.save(bundle.stage / f"{role}.npy", np.ascontiguousarray(array, dtype=np.float32))
        bundle.files[role] = f"{role}.npy"
    stats = (ship["feature_whitener"], ship["feature_means"]) if "feature_means" in ship else None
    r = r.replace(
        manifest=replace(r.manifest, abstain=section),
        train_embeddings=ship.get("train_embeddings"),
        feature_stats=stats,
    )
    metrics["abstain"]["test"] = evaluate_abstain(r, ckpt, oos, log)
    return section


def indent(text: str, pad: str = "        ") -> str:
    return "\n".join(pad + line for line in text.splitlines())
