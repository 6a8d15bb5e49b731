"""``build_bundle``: a training checkpoint in, a checked bundle out -- the steps of ``python -m export``.

1. read: the settings checked (:mod:`export.settings`), the checkpoint (lrsl.json, both models,
   dev/test splits) read and the target directory checked;
2. export both models to ONNX fp32 (:mod:`export.graphs`, :mod:`export.onnx_export`);
3. optimise the graphs (:mod:`export.optimize`; skipped with ``optimize=False``);
4. PyTorch reference: logits and embeddings vs ONNX fp32 (parity, explicit atol), and the PyTorch
   LRSL accuracy with the calibration of lrsl.json (:mod:`export.reference`);
5. convert to the shipped precision (int8 with a preset, fp16, or fp32 as is);
6. copy tokenizer.json, embed the label texts with the exported embedder through the runtime;
7. re-calibrate on dev with the exported models (threshold sigma2_mis, fusion rule, exits;
   :mod:`export.recalibrate`);
8. evaluate the bundle through ``Reranker.predict`` (what ``lrsl-rt eval`` reports) and apply the
   accuracy gate (:mod:`export.bundle_eval`);
9. abstain (when the checkpoint has out-of-scope dev texts, :mod:`export.abstain`): every score on
   dev, the best kept with its threshold, its test figures through ``Reranker.predict``;
10. write the final manifest, load the bundle once more with checksums, rename it into place.

Steps 6-8 need a loadable bundle before the manifest is final: step 6 writes a provisional manifest
(the PyTorch calibration, one-hot placeholder label embeddings) and loads the bundle once
(:class:`export.bundle.StagedBundle`); steps 7 to 9 reuse those sessions through
:meth:`lrsl_rt.Reranker.replace` with the real label embeddings and the new calibration, and step 10
writes the final manifest and loads the bundle as users will, checksums included. Everything happens
in the staging directory of :func:`export.bundle.staged_bundle`, so a failure leaves no bundle.
"""

from __future__ import annotations

import gc
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from lrsl_rt.defaults import DEFAULT_BATCH_SIZE, MODEL_ROLES
from lrsl_rt.progress import Steps

from .abstain import AbstainSettings, read_out_of_scope
from .bundle import StagedBundle, check_target, plain, staged_bundle
from .bundle_eval import add_abstain, evaluate_bundle
from .calibration import calibration_feeds, quantization_plan
from .exit_build import add_stage_graphs, exit_plan
from .graphs import convert_graphs, export_graphs, optimize_graphs, reference
from .kinds import check_kind_settings
from .recalibrate import calibrate_exit_thresholds, recalibrate, with_calibration
from .settings import Settings, check_settings, for_checkpoint
from .source import load_checkpoint


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
        precision,
        preset,
        max_accuracy_drop,
        batch_size=batch_size,
        optimize=optimize,
        providers=providers,
        threads=threads,
        parity_atol=parity_atol,
        fusion=fusion,
        calibration_texts=calibration_texts,
        exits=exits,
        measure=measure,
        exit_budget=exit_budget,
        abstain=abstain,
    )
    log = log or _stderr
    out = Path(out_dir)
    step = Steps(log, total=10)
    with step("read", f"read checkpoint {ckpt_dir}"):
        check_target(out, force)
        ckpt = load_checkpoint(ckpt_dir)
        plan = exit_plan(ckpt.root, s.exits)
        check_kind_settings(ckpt, plan, s.abstain.score)
        s = for_checkpoint(s, ckpt, log)
        oos = read_out_of_scope(ckpt.root) if s.abstain.score != "off" else None
        calib_texts, quantization = quantization_plan(ckpt, s.preset, s.calibration_texts)
        _log_checkpoint(ckpt, s, log)
    with staged_bundle(out, force) as stage:
        work = stage / "_work"
        work.mkdir()
        with step("export", "export ONNX fp32 (classifier, embedder)"):
            features = oos is not None and not plan  # the mahalanobis score, or a cascade on it
            features = features and ckpt.classifier_kind == "encoder"  # it reads an encoder's first token
            toks, torch_models, raw = export_graphs(ckpt, work, log, features=features)
            if plan:
                raw.update(
                    add_stage_graphs(plan, ckpt, toks["classifier"], torch_models["classifier"], work, log)
                )
            input_names = {role: torch_models[role].input_names for role in MODEL_ROLES}
        with step(
            "optimize", "optimize graphs" if s.optimize else "optimize graphs: skipped (--no-optimize)"
        ):
            fp32, fused = optimize_graphs(torch_models, raw, work, s, log)
        with step("reference", "PyTorch reference and parity with ONNX fp32"):
            ref = reference(ckpt, torch_models, toks, fp32, s, log)
            del torch_models
            gc.collect()
        with step("convert", f"convert to {s.precision}{f' (preset {s.preset})' if s.preset else ''}"):
            feeds = {  # each model's own tokenizer and inputs
                role: calibration_feeds(toks[role], calib_texts, input_names[role], ckpt.info.max_length)
                for role in MODEL_ROLES
                if calib_texts
            }
            files, graphs = convert_graphs(stage, raw, fp32, fused, s, log, feeds)
        bundle = StagedBundle(stage, ckpt, s, files, ref.embedding_dim, toks, input_names, plan)
        with step("label_embeddings", "label embeddings with the exported embedder"):
            r = bundle.first_load()
        with step("calibrate", "re-calibrate on dev with the exported models"):
            cal = recalibrate(r, ckpt, s, log)
            if plan:
                cal = calibrate_exit_thresholds(r, ckpt, cal, plan, s, log)
            r = with_calibration(r, cal)
        with step("evaluate", "evaluate the bundle and apply the accuracy gate"):
            metrics = evaluate_bundle(r, ckpt, ref, cal, s, log)
            metrics["graphs"] = graphs
            if quantization:
                metrics["quantization"] = quantization
        with step(
            "abstain", "abstain: out-of-scope scores on dev" if oos else "abstain: no out-of-scope texts"
        ):
            abstain_section = add_abstain(bundle, r, ckpt, oos, s, metrics, log) if oos else None
        with step("write", "write manifest, verify, move into place"):
            shutil.rmtree(work)
            metrics["timings_s"] = dict(step.timings)
            bundle.write_manifest(
                cal.threshold, cal.fusion, cal.calibration, plain(metrics), cal.exits, abstain_section
            )
            bundle.load()  # the bundle as users will load it: checksums, shapes, probe run
    log(f"bundle written to {out}")
    return out


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _log_checkpoint(ckpt, s: Settings, log) -> None:
    info, dev, test = ckpt.info, ckpt.dev, ckpt.test
    log(
        f"      {len(info.labels)} labels, k={info.k}, max_length={info.max_length}, dev {len(dev.texts)}"
        f"{f', test {len(test.texts)}' if test else ''}; target {s.precision}{f' ({s.preset})' if s.preset else ''}"
    )
