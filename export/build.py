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
9. write the final manifest, load the bundle once more with checksums, rename it into place.

Steps 6-8 need a loadable bundle before the manifest is final: the staging directory gets a
provisional manifest (PyTorch calibration, one-hot placeholder label embeddings) that is rewritten as
the real values become known, and ``Reranker.from_bundle`` re-reads it each time. Everything happens
in the staging directory of :func:`export.bundle.staged_bundle`, so a failure leaves no bundle.
"""

from __future__ import annotations

import gc
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lrsl_rt.calibrate import fusion_reason
from lrsl_rt.errors import UsageError
from lrsl_rt.fusion import fusion_option
from lrsl_rt.manifest import TokenizerSettings
from lrsl_rt.metrics import format_report

from .bundle import (
    check_target,
    placeholder_label_embeddings,
    plain,
    save_label_embeddings,
    staged_bundle,
    utc_now,
    write_bundle_manifest,
)
from .calibration import calibration_feeds, quantization_plan
from .errors import ExportError
from .evaluate import PARITY_ATOL, calibrate, check_gate, cosine_stats, predictions_report, top1_agreement
from .optimize import convert, graph_summary, model_file_name, optimize_graph, resolve_precision
from .source import load_checkpoint

ROLES = ("classifier", "embedder")
LABEL_EMBEDDINGS = "label_embeddings.npy"
TOKENIZER = "tokenizer.json"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Steps:
    """Numbered progress lines with the time each step took (``timings``: seconds by step key)."""

    def __init__(self, log: Callable[[str], None], total: int = 9):
        self.log, self.total, self.n, self.timings = log, total, 0, {}

    @contextmanager
    def __call__(self, key: str, title: str):
        self.n += 1
        self.log(f"[{self.n}/{self.total}] {title} ...")
        t0 = time.perf_counter()
        yield
        self.timings[key] = round(time.perf_counter() - t0, 3)
        self.log(f"      done in {self.timings[key]:.1f} s")


def build_bundle(
    ckpt_dir: str | Path,
    out_dir: str | Path,
    precision: str = "int8",
    preset: str | None = None,
    max_accuracy_drop: float = 0.005,
    *,
    batch_size: int = 8,
    optimize: bool = True,
    force: bool = False,
    providers: str | list = "cpu",
    threads: int | None = None,
    parity_atol: float | None = None,
    fusion: str | None = None,
    calibration_texts: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Export the checkpoint ``ckpt_dir`` to a bundle at ``out_dir`` and return its path.

    ``precision``: int8 (dynamic quantization), fp32, or fp16 (for GPUs). ``preset`` (int8 only):
    avx512_vnni, avx2_s8rr, avx2 or arm64; None picks the one for this CPU. ``max_accuracy_drop``: the largest
    allowed drop of the bundle's LRSL accuracy below the PyTorch models' (a fraction: 0.005 is half a
    point), measured on test (dev when the checkpoint has no test split). ``parity_atol``: max abs
    difference allowed between PyTorch and ONNX fp32 logits (default 1e-3; embeddings 1e-4).
    ``providers``/``threads``: ONNX Runtime settings for evaluating the bundle. ``fusion``: None
    follows the checkpoint (its fusion kept if the user fixed it in training, else chosen again on
    dev with the exported models); "auto" always chooses again; ``RULE:P[:SCOPE]`` fixes it.
    ``calibration_texts``: training texts for the static int8 presets (:mod:`export.calibration`;
    None: the checkpoint's calib.jsonl).

    Raises ExportError (ParityError, AccuracyGateError) and UsageError; nothing is written then.
    """
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
    log = log or _stderr
    out = Path(out_dir)
    step = _Steps(log)

    with step("read", f"read checkpoint {ckpt_dir}"):
        check_target(out, force)
        ckpt = load_checkpoint(ckpt_dir)
        info, dev, test, ev = ckpt.info, ckpt.dev, ckpt.test, ckpt.eval_split
        fixed_fusion = user_fusion or (info.fusion_rule if fusion is None and info.fusion_fixed else None)
        calib_texts, quantization = quantization_plan(ckpt, preset, calibration_texts)
        log(
            f"      {len(info.labels)} labels, k={info.k}, max_length={info.max_length}, dev {len(dev.texts)}"
            f"{f', test {len(test.texts)}' if test else ''}; target {precision}{f' ({preset})' if preset else ''}"
        )

    from lrsl_rt import Reranker

    from . import onnx_export as ox  # torch and transformers: only once the checkpoint looks right
    from .reference import load_torch_models, pytorch_reference

    with staged_bundle(out, force) as stage:
        work = stage / "_work"
        work.mkdir()
        with step("export", "export ONNX fp32 (classifier, embedder)"):
            tok, torch_models = load_torch_models(ckpt)
            names = torch_models["classifier"].input_names
            raw = {role: work / f"{role}_raw.onnx" for role in ROLES}
            for role, output in (("classifier", "logits"), ("embedder", "embeddings")):
                ox.export_onnx(torch_models[role], tok, raw[role], output, info.max_length)
            log(f"      inputs {list(names)}")

        fp32, fused = dict(raw), {role: {} for role in ROLES}
        with step("optimize", "optimize graphs" if optimize else "optimize graphs: skipped (--no-optimize)"):
            for role in ROLES if optimize else ():
                fp32[role] = work / f"{role}_fp32.onnx"
                config = torch_models[role].model.config
                fused[role] = optimize_graph(raw[role], fp32[role], config, use_gpu=precision == "fp16")
                log(f"      {role}: fused {fused[role] or 'nothing'}")

        with step("reference", "PyTorch reference and parity with ONNX fp32"):
            ref = pytorch_reference(ckpt, torch_models, tok, fp32, batch_size, threads, atol)
            par = ref.parity
            log(
                f"      max |PyTorch - ONNX fp32| on dev: logits {par['logits_max_abs_diff']:.2e} (atol "
                f"{par['logits_atol']:g}), embeddings {par['embeddings_max_abs_diff']:.2e} (atol {par['embeddings_atol']:g})"
            )
            del torch_models
            gc.collect()

        files = {role: model_file_name(role, precision, preset) for role in ROLES}
        graphs = {}
        with step("convert", f"convert to {precision}{f' (preset {preset})' if preset else ''}"):
            feeds = calibration_feeds(tok, calib_texts, names, info.max_length) if calib_texts else None
            for role in ROLES:
                shipped = convert(fp32[role], stage / files[role], precision, preset, feeds)
                g = graphs[role] = graph_summary(raw[role], shipped, fused[role])
                if precision == "int8" and g["quantized_linear"] == 0:
                    raise ExportError(
                        f"{shipped.name}: int8 quantization left no quantized MatMul in the {role}"
                    )
                int8 = (
                    f", {g['quantized_linear']}/{g['linear_layers']} linear layers int8"
                    if precision == "int8"
                    else ""
                )
                log(f"      {shipped.name}: {g['size'] / 2**20:.1f} MiB, {g['nodes']} nodes{int8}")

        files["tokenizer"] = TOKENIZER
        files["label_embeddings"] = LABEL_EMBEDDINGS
        created_at = utc_now()
        pytorch_cal = {"threshold": info.threshold, "fusion": info.fusion_rule.to_dict()}

        def manifest(threshold, fusion, calibration, metrics):
            return write_bundle_manifest(
                stage,
                labels=info.labels,
                label_texts=info.label_texts,
                k=info.k,
                threshold=threshold,
                fusion=fusion,
                tokenizer=TokenizerSettings(
                    info.max_length, int(tok.pad_token_id), str(tok.pad_token), names
                ),
                precision=precision,
                preset=preset,
                embedding_dim=ref.embedding_dim,
                files=files,
                calibration=calibration,
                metrics=metrics,
                created_at=created_at,
            )

        def load():
            return Reranker.from_bundle(stage, providers=providers, threads=threads, batch_size=batch_size)

        with step("label_embeddings", "label embeddings with the exported embedder"):
            shutil.copyfile(ckpt.tokenizer_file, stage / TOKENIZER)
            save_label_embeddings(
                stage / LABEL_EMBEDDINGS, placeholder_label_embeddings(len(info.labels), ref.embedding_dim)
            )
            manifest(info.threshold, info.fusion_rule, {"pytorch": pytorch_cal}, {})
            label_emb = load().embed(list(info.label_texts))
            save_label_embeddings(stage / LABEL_EMBEDDINGS, label_emb)

        with step("calibrate", "re-calibrate on dev with the exported models"):
            manifest(info.threshold, info.fusion_rule, {"pytorch": pytorch_cal}, {})
            r = load()
            dev_logits, dev_cos, dev_emb = r.logits(dev.texts), r.similarities(dev.texts), r.embed(dev.texts)
            threshold, fusion, table, note = calibrate(
                dev_logits, dev_cos, dev.gold, info.k, info.threshold, fixed_fusion, info.fusion_rule
            )
            exported = {
                "threshold": threshold,
                "fusion": fusion.to_dict(),
                "fusion_fixed": fixed_fusion is not None,
                "table": table,
            }
            calibration = {
                "pytorch": pytorch_cal,
                "exported": {**exported, **({"note": note} if note else {})},
            }
            if note:
                log(f"      warning: {note}")
            log(
                f"      threshold {info.threshold:.4g} -> {threshold:.4g}; fusion {info.fusion_rule.name} -> "
                f"{fusion.name} ({fusion_reason(fusion, table, fixed_fusion, info.fusion_rule)})"
            )

        with step("evaluate", "evaluate the bundle and apply the accuracy gate"):
            manifest(threshold, fusion, calibration, {})
            r = load()
            reports, agreement = {}, {"dev": top1_agreement(dev_logits, ref.dev_logits_fp32)}
            for split in (dev, test) if test else (dev,):
                predictions = r.predict(split.texts)
                reports[split.name] = predictions_report(predictions, split.gold)
                log(f"      bundle on {split.name}:\n" + _indent(format_report(reports[split.name])))
                if split is test:
                    clf_ids = np.array([p.classifier_label_id for p in predictions])
                    agreement["test"] = top1_agreement(clf_ids, ref.test_logits_fp32)
            log(
                f"      PyTorch on {ev.name} (lrsl.json calibration):\n" + _indent(format_report(ref.pytorch))
            )
            metrics = {
                "parity": ref.parity,
                "shipped_vs_fp32": {
                    "top1_agreement": agreement,
                    "embedding_cosine": cosine_stats(dev_emb, ref.dev_emb_fp32),
                },
                "pytorch": {"split": ev.name, **ref.pytorch},
                "bundle": reports,
                "graphs": graphs,
                **({"quantization": quantization} if quantization else {}),
                "export_settings": {
                    "optimize": optimize,
                    "opset": ox.OPSET,
                    "batch_size": batch_size,
                    "max_accuracy_drop": max_accuracy_drop,
                },
            }
            metrics["gate"] = check_gate(
                ref.pytorch["accuracy_lrsl"],
                reports[ev.name]["accuracy_lrsl"],
                max_accuracy_drop,
                ev.name,
                len(ev.texts),
            )
            log(
                f"      gate passed: drop {100 * metrics['gate']['drop']:.2f} points <= {100 * max_accuracy_drop:.2f}"
            )

        with step("write", "write manifest, verify, move into place"):
            shutil.rmtree(work)
            metrics["timings_s"] = dict(step.timings)
            manifest(threshold, fusion, calibration, plain(metrics))
            load()  # the bundle as users will load it: checksums, shapes, probe run
    log(f"bundle written to {out}")
    return out


def _indent(text: str, pad: str = "        ") -> str:
    return "\n".join(pad + line for line in text.splitlines())
