"""The whole LRSL training run: data -> classifier -> top-k mining -> embedder -> dev calibration -> checkpoint.

``run(TrainConfig(...))`` is what ``python -m train`` calls; tests call it on tiny models. Each
numbered step it prints is one function here. The checkpoint is written like the export writes a
bundle (:func:`lrsl_rt.staging.staged_directory`): staged beside the target and renamed into place at
the end, so a failed or killed run leaves the previous checkpoint, never a half-written one.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lrsl_rt.accuracy import format_report, lrsl_report
from lrsl_rt.fusion import Fusion, fusion_option
from lrsl_rt.gate import is_hard, topk_variance
from lrsl_rt.progress import Steps
from lrsl_rt.rule import decide
from lrsl_rt.staging import Artifact, check_target, staged_directory
from lrsl_rt.tuning import (
    PAPER_RULES,
    REFERENCE_RULES,
    choose_fusion,
    evaluate_fusions,
    fusion_reason,
    mistakes_sureness,
)

from . import data as D
from .checkpoint import CheckpointInfo, calibration_sample, read_info, write_info, write_jsonl
from .classifier import predict_logits, seed_everything
from .classifier_fit import fit_classifier
from .config import ClassifierConfig, EmbedderConfig, TrainConfig  # noqa: F401 - public here too
from .decoder import classifier_kind
from .embedder import label_similarities, mine_triplets, train_embedder, zero_shot_accuracy
from .errors import CheckpointError, DataError
from .models import default_base_model
from .models import load_model as _load
from .open_intent import OutOfScope
from .splits import load_splits, load_splits_and_oos  # noqa: F401 - load_splits: public here too

# An existing checkpoint at --out is replaced (at the very end); any other non-empty directory is refused.
CHECKPOINT = Artifact("checkpoint", "an LRSL training checkpoint", "lrsl.json", CheckpointError)


@dataclass
class Data:
    """The splits and their label ids; ``test`` and ``y["test"]`` are None without a test split."""

    labels: list[str]
    label_texts: list[str]
    train: D.Split
    dev: D.Split
    test: D.Split | None
    y: dict  # split name -> int array of gold label ids
    oos: OutOfScope | None = None  # out-of-scope dev/test rows (--oos-label, --unknown-ratio)

    def texts(self) -> dict:
        """Texts of dev and, when there is one, test (the splits that are evaluated)."""
        return {"dev": self.dev.texts, **({"test": self.test.texts} if self.test else {})}


def run(cfg: TrainConfig, log=print) -> Path:
    """Train, calibrate and write the checkpoint ``cfg.out``; returns its path."""
    _set_threads(cfg)
    fixed = _fixed_fusion(cfg.fusion)  # a bad --fusion or --out fails before an hour of training
    out = Path(cfg.out)
    check_target(out, CHECKPOINT, force=True)
    seed_everything(cfg.seed)
    t_all = time.perf_counter()
    step = Steps(log, total=6)
    bases = {
        "classifier": cfg.classifier_model or str(default_base_model()),
        "embedder": cfg.embedder_model or str(default_base_model()),
    }
    with step("data", "read the data"):
        data = read_data(cfg, log)
        check_embedder_from(cfg, data)
    with step("classifier_training", f"fine-tune the classifier from {bases['classifier']}"):
        clf, tok, clf_history = fit_classifier(cfg, data, bases["classifier"], log)
    with step("topk_mining", "classifier logits on train / dev / test (top-k mining)"):
        logits, triplets, negatives = mine(cfg, data, clf, tok, log)
    if cfg.embedder_from:
        bases["embedder"] = str(Path(cfg.embedder_from) / "embedder")
        with step("embedder_training", f"reuse the trained embedder of {cfg.embedder_from} (no training)"):
            emb, emb_history, zero_shot, cos = reuse_embedder(cfg, data, log)
    else:
        with step("embedder_training", f"fine-tune the embedder from {bases['embedder']}"):
            emb, emb_history, zero_shot, cos = fit_embedder(cfg, data, triplets, bases["embedder"], log)
    kind = classifier_kind(clf.config, bases["classifier"])
    with step("calibration", "dev calibration: sigma2_mis and the fusion rule"):
        threshold, fusion, table = calibrate(cfg, data, logits["dev"], cos["dev"], fixed, log, kind)
    with step("write", "evaluation and checkpoint"):
        results, paper = evaluate(cfg, data, logits, cos, threshold, fusion, log)
        info = CheckpointInfo(
            labels=data.labels,
            label_texts=data.label_texts,
            k=cfg.k,
            max_length=cfg.classifier.max_length,
            threshold=threshold,
            fusion=fusion.to_dict(),
            seed=cfg.seed,
            base_models=bases,
            fusion_fixed=fixed is not None,
            measure=cfg.measure,
            out_of_scope=data.oos.info() if data.oos else {},
            classifier_kind=kind,
        )
        metrics = {
            "results": results,
            "paper_rules": paper,
            "threshold": threshold,
            "fusion": fusion.to_dict(),
            "fusion_table_dev": table,
            "variance_dev": variance_by_correctness(logits["dev"], data.y["dev"], cfg.k),
            "classifier_history": clf_history,
            "embedder_history": emb_history,
            "triplets": {"n": len(triplets), **negatives},
            "embedder_zero_shot": zero_shot,
            "rows": _rows(data),
            "seconds": {**step.timings, "total": time.perf_counter() - t_all},
            "versions": _versions(),
            "seed": cfg.seed,
            "config": asdict(cfg),
        }
        with staged_directory(out, CHECKPOINT, force=True) as stage:
            write_checkpoint(stage, clf, tok, emb, data, info, metrics)
    log(f"checkpoint written to {out} in {(time.perf_counter() - t_all) / 60:.1f} min")
    return out


# ---- the steps ----------------------------------------------------------------------------------
def read_data(cfg: TrainConfig, log) -> Data:
    labels, train, dev, test, oos = load_splits_and_oos(cfg, log)
    if cfg.k < 2 or cfg.k > len(labels):
        raise DataError(f"k must be in [2, {len(labels)}] for {len(labels)} labels, got {cfg.k}")
    label_id = {y: i for i, y in enumerate(labels)}
    y = {name: np.array([label_id[v] for v in s.labels]) if s else None for name, s in
         (("train", train), ("dev", dev), ("test", test))}  # fmt: skip
    return Data(labels, D.label_texts(labels, cfg.label_descriptions), train, dev, test, y, oos)


def mine(cfg: TrainConfig, data: Data, clf, tok, log):
    """Classifier logits of every split, and the embedder's triplets mined from the train logits."""
    max_len = cfg.classifier.max_length
    texts = {"train": data.train.texts, **data.texts()}
    logits = {name: predict_logits(clf, tok, t, max_len, desc=f"logits {name}") for name, t in texts.items()}
    logits.setdefault("test", None)
    triplets, negatives = mine_triplets(
        data.train.texts,
        data.y["train"],
        logits["train"],
        data.label_texts,
        cfg.k,
        cfg.seed,
        negatives=cfg.embedder.negatives,
    )
    log(
        f"triplets: {len(triplets)} ({negatives['topk_negative']} top-k negatives, "
        f"{negatives['random_negative']} random negatives)"
    )
    return logits, triplets, negatives


def fit_embedder(cfg: TrainConfig, data: Data, triplets, base: str, log):
    """(model, history, zero-shot accuracy before/after, label similarities of dev/test after)."""
    from sentence_transformers import SentenceTransformer

    emb = _load(SentenceTransformer, base, device="cpu")
    emb.max_seq_length = cfg.classifier.max_length

    def similarities() -> dict:
        return {name: label_similarities(emb, t, data.label_texts) for name, t in data.texts().items()}

    def zero_shot(cos: dict) -> dict:
        return {name: zero_shot_accuracy(c, data.y[name]) for name, c in cos.items()}

    before = zero_shot(similarities())
    history = train_embedder(emb, triplets, data.label_texts, cfg.embedder, log)
    cos = similarities()
    accuracy = {"before": before, "after": zero_shot(cos)}
    log(f"embedder zero-shot accuracy (argmax label similarity): {json.dumps(accuracy)}")
    cos.setdefault("test", None)
    return emb, history, accuracy, cos


def check_embedder_from(cfg: TrainConfig, data: Data) -> None:
    """Before any training: ``--embedder-from`` names a checkpoint trained on the same labels with the
    same label texts (its embedder places texts near those texts)."""
    if not cfg.embedder_from:
        return
    src = Path(cfg.embedder_from)
    other = read_info(src)
    for what, there, here in (
        ("labels", other.labels, data.labels),
        ("label texts", other.label_texts, data.label_texts),
    ):
        if there != here:
            diff = next(
                (f"{a!r} there, {b!r} here" for a, b in zip(there, here, strict=False) if a != b), None
            )
            raise DataError(
                f"--embedder-from {src}: its {what} differ from this run's "
                f"({diff or f'{len(there)} there, {len(here)} here'}); its embedder was trained for other labels"
            )
    if not (src / "embedder").is_dir():
        raise CheckpointError(f"--embedder-from {src}: no embedder/ folder")


def reuse_embedder(cfg: TrainConfig, data: Data, log):
    """fit_embedder's results for the trained embedder of checkpoint ``cfg.embedder_from``, unchanged."""
    from sentence_transformers import SentenceTransformer

    src = Path(cfg.embedder_from)
    emb = _load(SentenceTransformer, str(src / "embedder"), device="cpu")
    emb.max_seq_length = cfg.classifier.max_length
    cos = {name: label_similarities(emb, t, data.label_texts) for name, t in data.texts().items()}
    accuracy = {name: zero_shot_accuracy(c, data.y[name]) for name, c in cos.items()}
    log(f"reused embedder's accuracy (argmax label similarity): {json.dumps(accuracy)}")
    cos.setdefault("test", None)
    return emb, [], {"before": accuracy, "after": accuracy, "reused_from": str(src)}, cos


def calibrate(cfg: TrainConfig, data: Data, logits_dev, cos_dev, fixed: Fusion | None, log, kind="encoder"):
    """(threshold, fusion, fusion table) on dev; the threshold is sigma2_mis under ``cfg.measure``; the
    fusion's incumbent is the reference's rule for the classifier's ``kind`` (REFERENCE_RULES)."""
    y_dev = data.y["dev"]
    try:
        threshold = mistakes_sureness(logits_dev, y_dev, cfg.k, cfg.measure)
    except ValueError as e:
        raise DataError(f"dev calibration: {e}") from e
    hard_dev = is_hard(logits_dev, cfg.k, threshold, cfg.measure)
    incumbent = REFERENCE_RULES[kind]
    fusion, table = choose_fusion(
        logits_dev, cos_dev, y_dev, hard_dev, cfg.k, fixed=fixed, incumbent=incumbent
    )
    log(
        f"{'sigma2_mis' if cfg.measure == 'variance' else f'mean {cfg.measure} of the dev mistakes'} = "
        f"{threshold:.4f}; hard share on dev {100 * hard_dev.mean():.1f}%; "
        f"fusion {fusion.name} ({fusion_reason(fusion, table, fixed, incumbent)})"
    )
    return threshold, fusion, table


def evaluate(cfg: TrainConfig, data: Data, logits, cos, threshold, fusion, log):
    """LRSL reports of dev (and test), and the paper's rules on each, keyed by split."""
    results, paper = {}, {}
    for name in data.texts():
        results[name], paper[name] = _eval_split(
            name, logits[name], cos[name], data.y[name], cfg.k, threshold, fusion, log, cfg.measure
        )
    return results, paper


def write_checkpoint(stage: Path, clf, tok, emb, data: Data, info: CheckpointInfo, metrics: dict) -> None:
    """The checkpoint's files (layout: :mod:`train.checkpoint`) into the staging directory."""
    heads = getattr(clf, "lrsl_exit_heads", None)
    if heads:
        del clf.lrsl_exit_heads
    clf.save_pretrained(stage / "classifier")
    tok.save_pretrained(stage / "classifier")
    if heads:
        _write_joint_heads(stage, clf, heads, info)
    emb.save(str(stage / "embedder"))
    write_jsonl(stage / "dev.jsonl", data.dev.texts, data.dev.labels)
    write_jsonl(stage / "calib.jsonl", *calibration_sample(data.train, info.seed))
    if data.test:
        write_jsonl(stage / "test.jsonl", data.test.texts, data.test.labels)
    if data.oos and (data.oos.dev or data.oos.test):  # the abstain calibration's kNN score needs train
        write_jsonl(stage / "train.jsonl", data.train.texts, data.train.labels)
    for name in ("dev", "test"):
        rows = getattr(data.oos, name) if data.oos else None
        if rows:
            write_jsonl(stage / f"{name}_oos.jsonl", rows.texts, rows.labels)
    write_info(stage, info)
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


# ---- helpers ------------------------------------------------------------------------------------
def _set_threads(cfg: TrainConfig) -> None:
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def _eval_split(name, logits, cos, gold, k, threshold, fusion, log, measure="variance"):
    d = decide(logits, cos, threshold, fusion, k, measure=measure)
    rep = lrsl_report(gold, d.classifier_labels, d.labels, d.hard)
    log(f"[{name}] {fusion.name}\n" + format_report(rep))
    paper = {f.name: evaluate_fusions(logits, cos, gold, d.hard, k, [f])[0] for f in PAPER_RULES}
    return rep, paper


def _write_joint_heads(stage: Path, clf, heads: dict, info: CheckpointInfo) -> None:
    from .exit_heads import EXITS_DIR, depth, save_heads

    (stage / EXITS_DIR).mkdir()
    meta = {
        "classifier_layers": depth(clf),
        "hidden_size": clf.config.hidden_size,
        "labels": len(info.labels),
    }
    save_heads(stage / EXITS_DIR, {k: h.eval() for k, h in heads.items()}, {**meta, "training": "joint"})


def _fixed_fusion(spec: str):
    try:
        return fusion_option(spec)
    except ValueError as e:
        raise DataError(f"--fusion: {e}") from e


def variance_by_correctness(logits, gold, k: int) -> dict:
    """Mean and 10/50/90 % quantiles of the top-k variance of the right and of the wrong samples."""
    var, wrong = topk_variance(logits, k), logits.argmax(1) != gold

    def stats(v):
        return {"mean": float(v.mean()), "quantiles": np.quantile(v, [0.1, 0.5, 0.9]).tolist()}

    return {"right": stats(var[~wrong]), "wrong": stats(var[wrong])}


def _rows(data: Data) -> dict:
    return {
        "train": len(data.train),
        "dev": len(data.dev),
        "test": len(data.test) if data.test else 0,
        "train_per_class": dict(Counter(data.train.labels)),
    }


def _versions() -> dict:
    import sentence_transformers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "numpy": np.__version__,
    }
