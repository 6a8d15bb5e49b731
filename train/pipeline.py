"""The whole LRSL training run: data -> classifier -> top-k mining -> embedder -> dev calibration -> checkpoint.

``run(TrainConfig(...))`` is what ``python -m train`` calls; tests call it on tiny models.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lrsl_rt.calibrate import PAPER_RULES, choose_fusion, evaluate_fusions, fusion_reason, sigma2_mis
from lrsl_rt.fusion import fusion_option, rerank
from lrsl_rt.gate import is_hard, topk_variance
from lrsl_rt.metrics import format_report, lrsl_report

from . import data as D
from .checkpoint import CheckpointInfo, calibration_sample, write_info, write_jsonl
from .classifier import ClassifierConfig, predict_logits, seed_everything, train_classifier
from .embedder import EmbedderConfig, label_similarities, mine_triplets, train_embedder, zero_shot_accuracy
from .models import default_base_model


@dataclass
class TrainConfig:
    out: str
    dataset: str | None = None  # a named data set (banking77), or:
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    datasets_dir: str | None = None
    dev_fraction: float = 0.1
    label_descriptions: str | None = None
    classifier_model: str | None = None
    embedder_model: str | None = None
    k: int = 3
    fusion: str = "auto"  # "auto": chosen on dev; or a rule RULE:P[:SCOPE] kept as is (train and export)
    seed: int = 42
    threads: int | None = None
    limit_classes: int | None = None  # keep the first N classes (smoke runs)
    limit_per_class: int | None = None  # keep at most N train rows per class (smoke runs)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)


def _limit(split: D.Split, classes: list[str] | None, per_class: int | None) -> D.Split:
    keep, seen = [], Counter()
    for i, y in enumerate(split.labels):
        if (classes is None or y in classes) and (per_class is None or seen[y] < per_class):
            keep.append(i)
            seen[y] += 1
    return D.Split(
        [split.texts[i] for i in keep],
        [split.labels[i] for i in keep],
        split.source,
        [split.lines[i] for i in keep] if split.lines else None,
    )


def load_splits(cfg: TrainConfig, log=print):
    if cfg.dataset:
        spec = D.resolve_named(cfg.dataset, D.datasets_dir(cfg.datasets_dir))
        text_field, label_field = spec["text_field"], spec["label_field"]
        train_path, dev_path, test_path = spec["train"], cfg.dev, cfg.test or spec["test"]
    elif cfg.train:
        text_field, label_field = cfg.text_field, cfg.label_field
        train_path, dev_path, test_path = cfg.train, cfg.dev, cfg.test
    else:
        raise D.DataError("give a named data set (--dataset banking77) or a training file (--train FILE)")
    train = D.read_labelled(train_path, text_field, label_field)
    if dev_path:
        dev = D.read_labelled(dev_path, text_field, label_field)
    else:
        train, dev = D.stratified_split(train, cfg.dev_fraction, cfg.seed)
    test = D.read_labelled(test_path, text_field, label_field) if test_path else None
    classes = sorted(set(train.labels))
    if cfg.limit_classes:
        classes = classes[: cfg.limit_classes]
        dev, test = _limit(dev, classes, None), (_limit(test, classes, None) if test else None)
    if cfg.limit_classes or cfg.limit_per_class:
        train = _limit(train, classes if cfg.limit_classes else None, cfg.limit_per_class)
    labels = sorted(set(train.labels))
    for s in (dev, test):
        if s is not None:
            D.check_known_labels(s, labels, label_field)
    for name, s in (("train", train), ("dev", dev), ("test", test)):
        if s is not None:
            log(D.summary(name, s))
    return labels, train, dev, test


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


def _eval_split(name, logits, cos, gold, k, threshold, fusion, log):
    hard = is_hard(logits, k, threshold)
    base = logits.argmax(1)
    pred = base.copy()
    if hard.any():
        pred[hard] = rerank(logits[hard], cos[hard], fusion, k)
    rep = lrsl_report(gold, base, pred, hard)
    log(f"[{name}] {fusion.name}\n" + format_report(rep))
    paper = {f.name: evaluate_fusions(logits, cos, gold, hard, k, [f])[0] for f in PAPER_RULES}
    return rep, paper


def _fixed_fusion(spec: str):
    try:
        return fusion_option(spec)
    except ValueError as e:
        raise D.DataError(f"--fusion: {e}") from e


def run(cfg: TrainConfig, log=print) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    timings, t_all = {}, time.perf_counter()
    out = Path(cfg.out)
    fixed_fusion = _fixed_fusion(cfg.fusion)  # a bad --fusion fails before an hour of training
    seed_everything(cfg.seed)

    t = time.perf_counter()
    labels, train, dev, test = load_splits(cfg, log)
    label_id = {y: i for i, y in enumerate(labels)}
    texts_of = D.label_texts(labels, cfg.label_descriptions)
    y_train = np.array([label_id[y] for y in train.labels])
    y_dev = np.array([label_id[y] for y in dev.labels])
    y_test = np.array([label_id[y] for y in test.labels]) if test else None
    if cfg.k < 2 or cfg.k > len(labels):
        raise D.DataError(f"k must be in [2, {len(labels)}] for {len(labels)} labels, got {cfg.k}")
    timings["data"] = time.perf_counter() - t

    clf_base = cfg.classifier_model or str(default_base_model())
    emb_base = cfg.embedder_model or str(default_base_model())
    max_len = cfg.classifier.max_length

    # 1. classifier
    t = time.perf_counter()
    log(f"[1/5] fine-tuning the classifier from {clf_base}")
    tok = AutoTokenizer.from_pretrained(clf_base)
    if not getattr(tok, "is_fast", False):
        raise D.DataError(
            f"{clf_base}: the runtime needs a fast tokenizer (tokenizer.json); this model has none"
        )
    clf = AutoModelForSequenceClassification.from_pretrained(
        clf_base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label_id,
        attn_implementation="eager",
    )
    clf_history = train_classifier(clf, tok, train.texts, y_train, dev.texts, y_dev, cfg.classifier, log)
    timings["classifier_training"] = time.perf_counter() - t

    # 2. top-k mining
    t = time.perf_counter()
    log("[2/5] classifier logits on train / dev / test (top-k mining)")
    logits_train = predict_logits(clf, tok, train.texts, max_len, desc="logits train")
    logits_dev = predict_logits(clf, tok, dev.texts, max_len, desc="logits dev")
    logits_test = predict_logits(clf, tok, test.texts, max_len, desc="logits test") if test else None
    triplets, neg_counts = mine_triplets(train.texts, y_train, logits_train, texts_of, cfg.k, cfg.seed)
    log(
        f"triplets: {len(triplets)} ({neg_counts['topk_negative']} top-k negatives, "
        f"{neg_counts['random_negative']} random negatives)"
    )
    timings["topk_mining"] = time.perf_counter() - t

    # 3. embedder
    t = time.perf_counter()
    log(f"[3/5] fine-tuning the embedder from {emb_base}")
    emb = SentenceTransformer(emb_base, device="cpu")
    emb.max_seq_length = max_len
    zero_shot = {"before": {"dev": zero_shot_accuracy(label_similarities(emb, dev.texts, texts_of), y_dev)}}
    if test:
        zero_shot["before"]["test"] = zero_shot_accuracy(
            label_similarities(emb, test.texts, texts_of), y_test
        )
    emb_history = train_embedder(emb, triplets, texts_of, cfg.embedder, log)
    cos_dev = label_similarities(emb, dev.texts, texts_of)
    cos_test = label_similarities(emb, test.texts, texts_of) if test else None
    zero_shot["after"] = {"dev": zero_shot_accuracy(cos_dev, y_dev)}
    if test:
        zero_shot["after"]["test"] = zero_shot_accuracy(cos_test, y_test)
    log(f"embedder zero-shot accuracy (argmax label similarity): {json.dumps(zero_shot)}")
    timings["embedder_training"] = time.perf_counter() - t

    # 4. dev calibration
    t = time.perf_counter()
    log("[4/5] dev calibration: sigma2_mis and the fusion rule")
    try:
        threshold = sigma2_mis(logits_dev, y_dev, cfg.k)
    except ValueError as e:
        raise D.DataError(f"dev calibration: {e}") from e
    hard_dev = is_hard(logits_dev, cfg.k, threshold)
    fusion, table = choose_fusion(logits_dev, cos_dev, y_dev, hard_dev, cfg.k, fixed=fixed_fusion)
    log(
        f"sigma2_mis = {threshold:.4f}; hard share on dev {100 * hard_dev.mean():.1f}%; "
        f"fusion {fusion.name} ({fusion_reason(fusion, table, fixed_fusion, PAPER_RULES[0])})"
    )
    var_dev = topk_variance(logits_dev, cfg.k)
    wrong_dev = logits_dev.argmax(1) != y_dev
    timings["calibration"] = time.perf_counter() - t

    # 5. reports and checkpoint
    log("[5/5] evaluation and checkpoint")
    results = {}
    results["dev"], paper_dev = _eval_split("dev", logits_dev, cos_dev, y_dev, cfg.k, threshold, fusion, log)
    paper = {"dev": paper_dev}
    if test:
        results["test"], paper["test"] = _eval_split(
            "test", logits_test, cos_test, y_test, cfg.k, threshold, fusion, log
        )
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    clf.save_pretrained(tmp / "classifier")
    tok.save_pretrained(tmp / "classifier")
    emb.save(str(tmp / "embedder"))
    write_jsonl(tmp / "dev.jsonl", dev.texts, dev.labels)
    write_jsonl(tmp / "calib.jsonl", *calibration_sample(train, cfg.seed))
    if test:
        write_jsonl(tmp / "test.jsonl", test.texts, test.labels)
    write_info(
        tmp,
        CheckpointInfo(
            labels=labels,
            label_texts=texts_of,
            k=cfg.k,
            max_length=max_len,
            threshold=threshold,
            fusion=fusion.to_dict(),
            seed=cfg.seed,
            base_models={"classifier": clf_base, "embedder": emb_base},
            fusion_fixed=fixed_fusion is not None,
        ),
    )
    timings["total"] = time.perf_counter() - t_all
    metrics = {
        "results": results,
        "paper_rules": paper,
        "threshold": threshold,
        "fusion": fusion.to_dict(),
        "fusion_table_dev": table,
        "variance_dev": {
            "right": {
                "mean": float(var_dev[~wrong_dev].mean()),
                "quantiles": np.quantile(var_dev[~wrong_dev], [0.1, 0.5, 0.9]).tolist(),
            },
            "wrong": {
                "mean": float(var_dev[wrong_dev].mean()),
                "quantiles": np.quantile(var_dev[wrong_dev], [0.1, 0.5, 0.9]).tolist(),
            },
        },
        "classifier_history": clf_history,
        "embedder_history": emb_history,
        "triplets": {"n": len(triplets), **neg_counts},
        "embedder_zero_shot": zero_shot,
        "rows": {
            "train": len(train),
            "dev": len(dev),
            "test": len(test) if test else 0,
            "train_per_class": dict(Counter(train.labels)),
        },
        "seconds": timings,
        "versions": _versions(),
        "seed": cfg.seed,
        "config": asdict(cfg),
    }
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"checkpoint written to {out} in {timings['total'] / 60:.1f} min")
    return out
