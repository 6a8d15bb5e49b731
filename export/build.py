"""``build_bundle``: a training checkpoint in, a checked bundle out -- the steps of ``python -m export``.

1. read the checkpoint (lrsl.json, both models, dev/test splits) and check the target directory;
2. export both models to ONNX fp32 (:mod:`export.onnx_export`);
3. optimise the graphs (:mod:`export.optimize`; skipped with ``optimize=False``);
4. PyTorch reference: logits and embeddings vs ONNX fp32 (parity, explicit atol), and the PyTorch
   LRSL accuracy with the calibration of lrsl.json;
5. convert to the shipped precision (int8 with a preset, fp16, or fp32 as is);
6. copy tokenizer.json, embed the label texts with the exported embedder through the runtime;
7. re-calibrate on dev with the exported models (threshold sigma2_mis, fusion rule);
8. evaluate the bundle through ``Reranker.predict`` (what ``lrsl-rt eval`` reports) and apply the
   accuracy gate;
9. abstain (when the checkpoint has out-of-scope dev texts, :mod:`export.abstain`): every score on
   dev, the best kept with its threshold, its test figures through ``Reranker.predict``;
10. write the final manifest, load the bundle once more with checksums, rename it into place.

Steps 6-8 need a loadable bundle before the manifest is final: step 6 writes a provisional manifest
(the PyTorch calibration, one-hot placeholder label embeddings) and loads the bundle once; steps 7
and 8 reuse those sessions with the real label embeddings and the new calibration
(:func:`_with`), and step 9 writes the final manifest and loads the bundle as users will, checksums
included. Everything happens in the staging directory of :func:`export.bundle.staged_bundle`, so a
failure leaves no bundle.
"""

from __future__ import annotations

import gc
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lrsl_rt.accuracy import format_report
from lrsl_rt.defaults import DEFAULT_BATCH_SIZE, MEASURES, MODEL_ROLES
from lrsl_rt.errors import UsageError
from lrsl_rt.fusion import Fusion, fusion_option
from lrsl_rt.manifest import TRAIN_EMBEDDINGS_ROLE, TokenizerSettings
from lrsl_rt.progress import Steps
from lrsl_rt.tuning import fusion_reason

from .abstain import AbstainSettings, calibrate_abstain, evaluate_abstain, read_out_of_scope
from .bundle import (
    check_target,
    placeholder_label_embeddings,
    plain,
    save_label_embeddings,
    staged_bundle,
    utc_now,
    write_bundle_manifest,
)
from .calibration import calibration_feeds, default_preset, quantization_plan
from .errors import ExportError
from .evaluate import PARITY_ATOL, calibrate, check_gate, cosine_stats, predictions_report, top1_agreement
from .exit_build import ExitPlan, add_stage_graphs, calibrate_exits, exit_plan
from .optimize import convert, graph_summary, model_file_name, optimize_graph, resolve_precision
from .source import load_checkpoint

LABEL_EMBEDDINGS = "label_embeddings.npy"
TRAIN_EMBEDDINGS = "train_embeddings.npy"
TOKENIZER = "tokenizer.json"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    """build_bundle's arguments, checked (see its docstring)."""

    precision: str
    preset: str | None
    max_accuracy_drop: float
    batch_size: int
    optimize: bool
    providers: str | list
    threads: int | None
    atol: dict
    fusion_arg: str | None
    user_fusion: Fusion | None
    calibration_texts: str | Path | None = None
    exits: bool | None = None  # None: exits when the checkpoint has exit heads
    measure: str | None = None  # None: the checkpoint's
    exit_budget: float = 0.002
    abstain: AbstainSettings = AbstainSettings()
    preset_detected: bool = False  # the preset is this CPU's default, not the user's


def build_bundle(
    ckpt_dir: str | Path,
    out_dir: str | Path,
    precision: str = "int8",
    preset: str | None = None,
    max_accuracy_drop: float = 0.005,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    optimize: bool = True,
    force: bool = False,
    providers: str | list = "cpu",
    threads: int | None = None,
    parity_atol: float | None = None,
    fusion: str | None = None,
    calibration_texts: str | Path | None = None,
    exits: bool | None = None,
    measure: str | None = None,
    exit_budget: float = 0.002,
    abstain: AbstainSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Export the checkpoint ``ckpt_dir`` to a bundle at ``out_dir`` and return its path.

    ``precision``: int8, fp32, or fp16 (for GPUs). ``preset`` (int8 only): a name of
    ``export.optimize.PRESETS``; None picks the one for this CPU (static_avx512_vnni on VNNI CPUs, the
    dynamic avx512_vnni when the checkpoint has no calibration texts; avx2_s8rr or arm64 elsewhere).
    ``max_accuracy_drop``: the largest allowed drop of the bundle's LRSL accuracy below the PyTorch
    models' (a fraction: 0.005 is half a point), measured on test (dev when the checkpoint has no test
    split). ``parity_atol``: max abs
    difference allowed between PyTorch and ONNX fp32 logits (default 1e-3; embeddings 1e-4).
    ``providers``/``threads``: ONNX Runtime settings for evaluating the bundle. ``fusion``: None
    follows the checkpoint (its fusion kept if the user fixed it in training, else chosen again on
    dev with the exported models); "auto" always chooses again; ``RULE:P[:SCOPE]`` fixes it.
    ``calibration_texts``: training texts for the static int8 presets (:mod:`export.calibration`;
    None: the checkpoint's calib.jsonl). ``exits``: the classifier as stage graphs with early exits
    (:mod:`export.exit_build`); None: when the checkpoint has exit heads (``python -m train.exits``),
    False: never. ``measure``: the gate's and the exits' sureness measure (:mod:`lrsl_rt.gate`; None:
    the checkpoint's). ``exit_budget``: the most dev accuracy (a fraction) the exits may cost against
    the no-exit path. ``abstain``: the abstain score, threshold rule and fallback
    label (:class:`export.abstain.AbstainSettings`); used when the checkpoint has out-of-scope texts.

    Raises ExportError (ParityError, AccuracyGateError) and UsageError; nothing is written then.
    """
    s = check_settings(
        precision, preset, max_accuracy_drop, batch_size, optimize, providers, threads, parity_atol, fusion
    )
    s = replace(
        s,
        calibration_texts=calibration_texts,
        exits=exits,
        measure=measure,
        exit_budget=exit_budget,
        abstain=abstain or AbstainSettings(),
    )
    _check_exit_settings(s)
    log = log or _stderr
    out = Path(out_dir)
    step = Steps(log, total=10)
    with step("read", f"read checkpoint {ckpt_dir}"):
        check_target(out, force)
        ckpt = load_checkpoint(ckpt_dir)
        plan = exit_plan(ckpt.root, s.exits)
        s = replace(s, measure=s.measure or ckpt.info.measure)
        s.abstain.check(ckpt.info.labels)
        oos = read_out_of_scope(ckpt.root) if s.abstain.score != "off" else None
        if s.preset_detected:
            preset, note = default_preset(ckpt, s.preset, s.calibration_texts)
            s = replace(s, preset=preset)
            if note:
                log(f"      note: {note}")
        calib_texts, quantization = quantization_plan(ckpt, s.preset, s.calibration_texts)
        _log_checkpoint(ckpt, s, log)
    with staged_bundle(out, force) as stage:
        work = stage / "_work"
        work.mkdir()
        with step("export", "export ONNX fp32 (classifier, embedder)"):
            tok, torch_models, raw = export_graphs(ckpt, work, log)
            if plan:
                raw.update(add_stage_graphs(plan, ckpt, tok, torch_models["classifier"], work, log))
            input_names = torch_models["classifier"].input_names
        with step(
            "optimize", "optimize graphs" if s.optimize else "optimize graphs: skipped (--no-optimize)"
        ):
            fp32, fused = optimize_graphs(torch_models, raw, work, s, log)
        with step("reference", "PyTorch reference and parity with ONNX fp32"):
            ref = reference(ckpt, torch_models, tok, fp32, s, log)
            del torch_models
            gc.collect()
        with step("convert", f"convert to {s.precision}{f' (preset {s.preset})' if s.preset else ''}"):
            feeds = (
                calibration_feeds(tok, calib_texts, input_names, ckpt.info.max_length)
                if calib_texts
                else None
            )
            files, graphs = convert_graphs(stage, raw, fp32, fused, s, log, feeds)
        bundle = _Bundle(stage, ckpt, s, files, ref.embedding_dim, tok, input_names, plan)
        with step("label_embeddings", "label embeddings with the exported embedder"):
            r = bundle.first_load()
        with step("calibrate", "re-calibrate on dev with the exported models"):
            cal = recalibrate(r, ckpt, s, log)
            if plan:
                cal = _with_exits(r, ckpt, cal, plan, s, log)
        with step("evaluate", "evaluate the bundle and apply the accuracy gate"):
            metrics = evaluate_bundle(_with(r, cal), ckpt, ref, cal, s, log)
            metrics["graphs"] = graphs
            if quantization:
                metrics["quantization"] = quantization
        with step(
            "abstain", "abstain: out-of-scope scores on dev" if oos else "abstain: no out-of-scope texts"
        ):
            abstain_section = add_abstain(bundle, _with(r, cal), ckpt, oos, s, metrics, log) if oos else None
        with step("write", "write manifest, verify, move into place"):
            shutil.rmtree(work)
            metrics["timings_s"] = dict(step.timings)
            bundle.write_manifest(
                cal.threshold, cal.fusion, cal.calibration, plain(metrics), cal.exits, abstain_section
            )
            bundle.load()  # the bundle as users will load it: checksums, shapes, probe run
    log(f"bundle written to {out}")
    return out


# ---- the steps ----------------------------------------------------------------------------------
def check_settings(
    precision, preset, max_accuracy_drop, batch_size, optimize, providers, threads, parity_atol, fusion
) -> Settings:
    """The arguments checked and resolved (preset for this CPU, tolerances, the user's fusion)."""
    detected = precision == "int8" and preset is None
    preset = resolve_precision(precision, preset)
    if isinstance(max_accuracy_drop, bool) or not isinstance(max_accuracy_drop, (int, float)):
        raise UsageError(f"max_accuracy_drop must be a number (a fraction), got {max_accuracy_drop!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
    atol = dict(PARITY_ATOL, **({"logits": parity_atol} if parity_atol is not None else {}))
    try:
        user_fusion = fusion_option(fusion)
    except ValueError as e:
        raise UsageError(f"--fusion: {e}") from e
    return Settings(
        precision,
        preset,
        max_accuracy_drop,
        batch_size,
        optimize,
        providers,
        threads,
        atol,
        fusion,
        user_fusion,
        preset_detected=detected,
    )


def _log_checkpoint(ckpt, s: Settings, log) -> None:
    info, dev, test = ckpt.info, ckpt.dev, ckpt.test
    log(
        f"      {len(info.labels)} labels, k={info.k}, max_length={info.max_length}, dev {len(dev.texts)}"
        f"{f', test {len(test.texts)}' if test else ''}; target {s.precision}{f' ({s.preset})' if s.preset else ''}"
    )


def export_graphs(ckpt, work: Path, log):
    """(HF tokenizer, the two traced PyTorch models, {role: raw ONNX fp32 path})."""
    from . import onnx_export as ox  # torch and transformers: only once the checkpoint looks right
    from .reference import load_torch_models

    tok, torch_models = load_torch_models(ckpt)
    raw = {role: work / f"{role}_raw.onnx" for role in MODEL_ROLES}
    for role, output in (("classifier", "logits"), ("embedder", "embeddings")):
        ox.export_onnx(torch_models[role], tok, raw[role], output, ckpt.info.max_length)
    log(f"      inputs {list(torch_models['classifier'].input_names)}")
    return tok, torch_models, raw


def optimize_graphs(torch_models, raw: dict, work: Path, s: Settings, log):
    """({role: fp32 graph to ship or convert}, {role: the fusions applied}); raw graphs when skipped."""
    fp32, fused = dict(raw), {role: {} for role in raw}
    for role in raw if s.optimize else ():
        fp32[role] = work / f"{role}_fp32.onnx"
        config = torch_models[
            role if role in MODEL_ROLES else "classifier"
        ].model.config  # a stage: its model's
        fused[role] = optimize_graph(raw[role], fp32[role], config, use_gpu=s.precision == "fp16")
        log(f"      {role}: fused {fused[role] or 'nothing'}")
    return fp32, fused


def reference(ckpt, torch_models, tok, fp32: dict, s: Settings, log):
    from .reference import pytorch_reference

    ref = pytorch_reference(ckpt, torch_models, tok, fp32, s.batch_size, s.threads, s.atol)
    par = ref.parity
    log(
        f"      max |PyTorch - ONNX fp32| on dev: logits {par['logits_max_abs_diff']:.2e} (atol "
        f"{par['logits_atol']:g}), embeddings {par['embeddings_max_abs_diff']:.2e} (atol {par['embeddings_atol']:g})"
    )
    return ref


def convert_graphs(stage: Path, raw: dict, fp32: dict, fused: dict, s: Settings, log, feeds=None):
    """({file role: name in the bundle}, {model role: graph summary}) after converting both models
    (the stage graphs in place of the classifier when there are some); ``feeds``: tokenized
    calibration texts for the static int8 presets."""
    from .stages import stage_feeds

    roles = [role for role in fp32 if role != "classifier" or len(fp32) == len(MODEL_ROLES)]
    stages = [role for role in roles if role not in MODEL_ROLES]
    role_feeds = {"classifier": feeds, "embedder": feeds}
    role_feeds.update(stage_feeds({role: fp32[role] for role in stages}, feeds) if stages else {})
    files = {role: model_file_name(role, s.precision, s.preset) for role in roles}
    graphs = {}
    for role in roles:
        shipped = convert(fp32[role], stage / files[role], s.precision, s.preset, role_feeds[role])
        g = graphs[role] = graph_summary(raw[role], shipped, fused[role])
        if s.precision == "int8" and g["quantized_linear"] == 0:
            raise ExportError(f"{shipped.name}: int8 quantization left no quantized MatMul in the {role}")
        int8 = (
            f", {g['quantized_linear']}/{g['linear_layers']} linear layers int8"
            if s.precision == "int8"
            else ""
        )
        log(f"      {shipped.name}: {g['size'] / 2**20:.1f} MiB, {g['nodes']} nodes{int8}")
    files["tokenizer"] = TOKENIZER
    files["label_embeddings"] = LABEL_EMBEDDINGS
    return files, graphs


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
        "pytorch": _pytorch_calibration(info),
        "exported": {**exported, **({"note": note} if note else {})},
    }
    if note:
        log(f"      warning: {note}")
    log(
        f"      threshold {info.threshold:.4g} -> {threshold:.4g}; fusion {info.fusion_rule.name} -> "
        f"{fusion.name} ({fusion_reason(fusion, table, fixed, info.fusion_rule)})"
    )
    return Calibration(threshold, fusion, calibration, dev_logits, dev_emb)


def evaluate_bundle(r, ckpt, ref, cal: Calibration, s: Settings, log) -> dict:
    """The bundle's reports through Reranker.predict, its agreement with ONNX fp32, and the gate;
    returns manifest.metrics (without graphs and timings)."""
    from . import onnx_export as ox

    dev, test, ev = ckpt.dev, ckpt.test, ckpt.eval_split
    reports, agreement = {}, {"dev": top1_agreement(cal.dev_logits, ref.dev_logits_fp32)}
    for split in (dev, test) if test else (dev,):
        predictions = r.predict(split.texts)
        reports[split.name] = predictions_report(predictions, split.gold)
        log(f"      bundle on {split.name}:\n" + _indent(format_report(reports[split.name])))
        if split is test:
            clf_ids = np.array([p.classifier_label_id for p in predictions])
            agreement["test"] = top1_agreement(clf_ids, ref.test_logits_fp32)
    log(f"      PyTorch on {ev.name} (lrsl.json calibration):\n" + _indent(format_report(ref.pytorch)))
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
    """The manifest's abstain section (and the kNN file when chosen); figures into ``metrics``."""
    section, metrics["abstain"], train_emb = calibrate_abstain(r, ckpt, oos, s.abstain, log)
    if train_emb is not None:
        np.save(bundle.stage / TRAIN_EMBEDDINGS, np.ascontiguousarray(train_emb, dtype=np.float32))
        bundle.files[TRAIN_EMBEDDINGS_ROLE] = TRAIN_EMBEDDINGS
    r = _replace(r, manifest=replace(r.manifest, abstain=section), train_embeddings=train_emb)
    metrics["abstain"]["test"] = evaluate_abstain(r, ckpt, oos, log)
    return section


# ---- the bundle being built ---------------------------------------------------------------------
class _Bundle:
    """The staging directory's manifest and loading, with what every manifest of this export shares."""

    def __init__(
        self, stage: Path, ckpt, s: Settings, files: dict, embedding_dim: int, tok, input_names, plan=None
    ):
        self.stage, self.info, self.s, self.files, self.plan = stage, ckpt.info, s, files, plan
        self.tokenizer_file, self.embedding_dim, self.created_at = (
            ckpt.tokenizer_file,
            embedding_dim,
            utc_now(),
        )
        self.tokenizer = TokenizerSettings(
            self.info.max_length, int(tok.pad_token_id), str(tok.pad_token), input_names
        )

    def write_manifest(
        self,
        threshold: float,
        fusion: Fusion,
        calibration: dict,
        metrics: dict,
        exits: tuple = (),
        abstain=None,
    ) -> None:
        info, plan = self.info, self.plan
        write_bundle_manifest(
            self.stage,
            labels=info.labels,
            label_texts=info.label_texts,
            k=info.k,
            threshold=threshold,
            fusion=fusion,
            tokenizer=self.tokenizer,
            precision=self.s.precision,
            preset=self.s.preset,
            embedding_dim=self.embedding_dim,
            files=self.files,
            calibration=calibration,
            metrics=metrics,
            created_at=self.created_at,
            measure=self.s.measure,
            classifier_layers=plan.depth if plan else None,
            exits=exits or (plan.closed() if plan else ()),
            abstain=abstain,
        )

    def load(self):
        from lrsl_rt import Reranker

        s = self.s
        return Reranker.from_bundle(
            self.stage, providers=s.providers, threads=s.threads, batch_size=s.batch_size
        )

    def first_load(self):
        """Copy the tokenizer, load the bundle with placeholder label embeddings and a provisional
        manifest (the PyTorch calibration), embed the label texts with the exported embedder, save
        them; returns a Reranker on those sessions with the real label embeddings."""
        info = self.info
        shutil.copyfile(self.tokenizer_file, self.stage / TOKENIZER)
        placeholder = placeholder_label_embeddings(len(info.labels), self.embedding_dim)
        save_label_embeddings(self.stage / LABEL_EMBEDDINGS, placeholder)
        self.write_manifest(info.threshold, info.fusion_rule, {"pytorch": _pytorch_calibration(info)}, {})
        r = self.load()
        label_emb = save_label_embeddings(self.stage / LABEL_EMBEDDINGS, r.embed(list(info.label_texts)))
        return _replace(r, label_embeddings=np.load(label_emb, allow_pickle=False))


def _with(r, cal: Calibration):
    """``r`` with the re-calibrated threshold, fusion and exits (the sessions are reused)."""
    m = replace(
        r.manifest, threshold=float(cal.threshold), fusion=cal.fusion, exits=cal.exits or r.manifest.exits
    )
    return _replace(r, manifest=m)


def _with_exits(r, ckpt, cal: Calibration, plan: ExitPlan, s: Settings, log) -> Calibration:
    """``cal`` with the exits' thresholds chosen on dev through the shipped stage chain."""
    exits, report = calibrate_exits(_with(r, cal), ckpt, cal, plan, s.exit_budget)
    shares = ", ".join(f"layer {k}: {100 * v:.1f}%" for k, v in report["share"].items())
    log(
        f"      exits ({s.measure}, budget {100 * s.exit_budget:.2f} points): leave at {shares}; dev "
        f"{100 * report['accuracy_no_exit']:.2f}% -> {100 * report['accuracy_with_exits']:.2f}%"
    )
    calibration = dict(cal.calibration, exported={**cal.calibration["exported"], "exits": report})
    return replace(cal, exits=exits, calibration=calibration)


def _check_exit_settings(s: Settings) -> None:
    if s.measure is not None and s.measure not in MEASURES:
        raise UsageError(f"measure must be one of {list(MEASURES)}, got {s.measure!r}")
    budget = s.exit_budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget < 1:
        raise UsageError(f"exit_budget must be a fraction in [0, 1), got {budget!r}")


def _replace(r, manifest=None, label_embeddings=None, train_embeddings=None):
    from lrsl_rt import Reranker

    return Reranker(
        manifest or r.manifest,
        r.tokenizer,
        r.classifier,
        r.embedder,
        r.label_embeddings if label_embeddings is None else label_embeddings,
        batch_size=r.batch_size,
        bundle_dir=r.bundle_dir,
        train_embeddings=r.train_embeddings if train_embeddings is None else train_embeddings,
    )


def _pytorch_calibration(info) -> dict:
    return {"threshold": info.threshold, "fusion": info.fusion_rule.to_dict()}


def _indent(text: str, pad: str = "        ") -> str:
    return "\n".join(pad + line for line in text.splitlines())
