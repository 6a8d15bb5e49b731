"""Re-calibration on dev with the exported models: the gate's threshold, the fusion rule, the exits' thresholds.

The exported models (int8 above all) move the logits a little, so the threshold and the fusion chosen
in training are chosen again on the shipped ones (:func:`export.evaluate.calibrate`); the manifest
keeps both (``calibration.pytorch`` and ``calibration.exported``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lrsl_rt.fusion import Fusion
from lrsl_rt.tuning import fusion_reason

from .bundle import pytorch_calibration
from .evaluate import calibrate
from .exit_build import ExitPlan, calibrate_exits
from .settings import Settings


@dataclass(frozen=True)
class Calibration:
    threshold: float
    fusion: Fusion
    calibration: dict  # manifest.calibration: {"pytorch": ..., "exported": ...}
    dev_logits: np.ndarray
    dev_emb: np.ndarray
    exits: tuple = ()  # lrsl_rt.manifest.ExitPoint, calibrated on dev (bundles with exits)


def recalibrate(r, ckpt, s: Settings, log) -> Calibration:
    """sigma2_mis and the fusion measured on dev with the exported models."""
    info, dev = ckpt.info, ckpt.dev
    fixed = s.user_fusion or (info.fusion_rule if s.fusion_arg is None and info.fusion_fixed else None)
    dev_logits, dev_cos, dev_emb = r.logits(dev.texts), r.similarities(dev.texts), r.embed(dev.texts)
    threshold, fusion, table, note = calibrate(
        dev_logits, dev_cos, dev.gold, info.k, info.threshold, fixed, info.fusion_rule, s.measure
    )
    exported = {
        "threshold": threshold,
        **({"measure": s.measure} if s.measure != "variance" else {}),
        "fusion": fusion.to_dict(),
        "fusion_fixed": fixed is not None,
        "table": table,
    }
    calibration = {
        "pytorch": pytorch_calibration(info),
        "exported": {**exported, **({"note": note} if note else {})},
    }
    if note:
        log(f"      warning: {note}")
    log(
        f"      threshold {info.threshold:.4g} -> {threshold:.4g}; fusion {info.fusion_rule.name} -> "
        f"{fusion.name} ({fusion_reason(fusion, table, fixed, info.fusion_rule)})"
    )
    return Calibration(threshold, fusion, calibration, dev_logits, dev_emb)


def with_calibration(r, cal: Calibration):
    """``r`` with the re-calibrated threshold, fusion and exits (the sessions are reused)."""
    m = replace(
        r.manifest, threshold=float(cal.threshold), fusion=cal.fusion, exits=cal.exits or r.manifest.exits
    )
    return r.replace(manifest=m)


def calibrate_exit_thresholds(r, ckpt, cal: Calibration, plan: ExitPlan, s: Settings, log) -> Calibration:
    """``cal`` with the exits' thresholds chosen on dev through the shipped stage chain."""
    exits, report = calibrate_exits(with_calibration(r, cal), ckpt, cal, plan, s.exit_budget)
    shares = ", ".join(f"layer {k}: {100 * v:.1f}%" for k, v in report["share"].items())
    log(
        f"      exits ({s.measure}, budget {100 * s.exit_budget:.2f} points): leave at {shares}; dev "
        f"{100 * report['accuracy_no_exit']:.2f}% -> {100 * report['accuracy_with_exits']:.2f}%"
    )
    calibration = dict(cal.calibration, exported={**cal.calibration["exported"], "exits": report})
    return replace(cal, exits=exits, calibration=calibration)
