"""The export's steps for a checkpoint with exit heads (``python -m export --exits``).

- :func:`exit_plan`: whether this export makes stages (the checkpoint's ``exits/`` and the flag);
- :func:`add_stage_graphs`: the stage graphs traced beside the single classifier graph (which stays
  the PyTorch-parity reference);
- :func:`calibrate_exits`: on dev, through the shipped (int8) stage chain with nobody leaving, each
  exit head's logits and the no-exit path's correctness, then the thresholds
  (:func:`lrsl_rt.exit_calibration.choose_exit_thresholds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrsl_rt.exit_calibration import CLOSED, choose_exit_thresholds
from lrsl_rt.manifest import ExitPoint
from lrsl_rt.rule import decide

from .errors import ExportError


@dataclass(frozen=True)
class ExitPlan:
    layers: tuple[int, ...]
    depth: int

    def closed(self) -> tuple[ExitPoint, ...]:
        """Exits nobody takes: the provisional manifest's, before calibration."""
        return tuple(ExitPoint(layer, CLOSED) for layer in self.layers)


def exit_plan(ckpt_root: Path, exits: bool | None) -> ExitPlan | None:
    """None when the bundle gets the single classifier graph; ``exits`` None: when there are heads."""
    from train.errors import CheckpointError
    from train.exit_heads import read_exits_info

    if exits is False:
        return None
    try:
        info = read_exits_info(ckpt_root)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    if info is None:
        if exits:
            raise ExportError(
                f"{ckpt_root}: --exits asks for exits but the checkpoint has no exit heads; add them with "
                f"`python -m train.exits {ckpt_root} --layers 2,4`"
            )
        return None
    return ExitPlan(tuple(info["layers"]), int(info["classifier_layers"]))


def add_stage_graphs(plan: ExitPlan, ckpt, tok, classifier_graph, work: Path, log) -> dict[str, Path]:
    """{stage role: raw fp32 ONNX} traced from the classifier and the checkpoint's heads."""
    from train.exit_heads import depth, load_heads

    from .stages import export_stages, make_stages

    model = classifier_graph.model
    if depth(model) != plan.depth:
        raise ExportError(
            f"{ckpt.root}/exits/exits.json: heads made for a classifier of {plan.depth} layers, this one has {depth(model)}"
        )
    heads = load_heads(ckpt.root, model.config.hidden_size, len(ckpt.info.labels))
    stages = make_stages(classifier_graph, heads, plan.depth)
    raw = export_stages(stages, tok, work, ckpt.info.max_length)
    log(f"      {len(stages)} stage graphs: exits after layers {list(plan.layers)} of {plan.depth}")
    return raw


def calibrate_exits(r, ckpt, cal, plan: ExitPlan, budget: float) -> tuple[tuple[ExitPoint, ...], dict]:
    """(exits with their thresholds, the dev report) through the shipped stage chain of ``r``."""
    m, dev = r.manifest, ckpt.dev
    stage_logits: list[np.ndarray] = []
    never = tuple(ExitPoint(layer, float("inf")) for layer in plan.layers)
    rows = r.tokenizer.tokenize(dev.texts)
    r.classifier.run(rows, r.batch_size, never, m.measure, m.k, collect=stage_logits)
    cos = cal.dev_emb @ r.label_embeddings.T
    final = decide(stage_logits[-1], cos, cal.threshold, cal.fusion, m.k, measure=m.measure)
    base_ok = final.labels == dev.gold
    thresholds, report = choose_exit_thresholds(
        stage_logits[:-1], list(plan.layers), plan.depth, dev.gold, base_ok, m.measure, m.k, budget
    )
    exits = tuple(ExitPoint(layer, float(t)) for layer, t in zip(plan.layers, thresholds, strict=True))
    return exits, {**report, "thresholds": {str(e.layer): e.threshold for e in exits}}
