"""Training exit heads on a frozen classifier (what ``python -m train.exits`` runs).

1. read the checkpoint and rebuild its training split from ``metrics.json``'s config (the split
   training used; dev is the checkpoint's ``dev.jsonl``);
2. one pass of the frozen classifier over train and dev with every hidden state kept: the ``[CLS]``
   vector after each chosen layer (the only thing a head reads, so the heads train on cached
   vectors, in seconds);
3. per layer, a head started as the final head, trained with cross-entropy (AdamW, seeded),
   keeping the epoch with the best dev accuracy;
4. write ``exits/`` (staged, then renamed into the checkpoint).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from lrsl_rt.errors import UsageError

from .checkpoint import read_info, read_jsonl
from .classifier import chunks, length_order, seed_everything
from .config import ClassifierConfig, EmbedderConfig, TrainConfig
from .errors import CheckpointError
from .exit_heads import EXITS_DIR, ExitHead, depth, initial_head, replace_exits_dir, save_heads


@dataclass(frozen=True)
class HeadSettings:
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    threads: int | None = None
    datasets_dir: str | None = None


def add_exit_heads(ckpt: Path, layers: list[int], s: HeadSettings, log=print) -> Path:
    """Train a frozen head after each of ``layers`` and write ``ckpt/exits``; returns that folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if s.threads:
        torch.set_num_threads(s.threads)
    t0 = time.perf_counter()
    info = read_info(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(
        ckpt / "classifier", attn_implementation="eager"
    )
    model.eval()
    tok = AutoTokenizer.from_pretrained(ckpt / "classifier")
    n_layers = depth(model)
    if layers[-1] >= n_layers:
        raise UsageError(
            f"--layers: every exit must be below the classifier's depth {n_layers}, got {layers}"
        )
    train_x, train_y = training_split(ckpt, info.labels, s.datasets_dir, log)
    dev_x, dev_names = read_jsonl(ckpt / "dev.jsonl")
    index = {y: i for i, y in enumerate(info.labels)}
    dev_y = np.array([index[y] for y in dev_names])
    log(f"[1/3] [CLS] vectors after layers {layers} on {len(train_x)} train and {len(dev_x)} dev texts")
    feats = {
        name: cls_vectors(model, tok, x, layers, info.max_length)
        for name, x in (("train", train_x), ("dev", dev_x))
    }
    seed_everything(info.seed)
    heads, report = {}, {}
    log("[2/3] train the heads (classifier frozen)")
    for layer in layers:
        heads[layer], report[layer] = train_head(
            initial_head(model, len(info.labels)),
            feats["train"][layer],
            train_y,
            feats["dev"][layer],
            dev_y,
            s,
        )
        log(f"      exit after layer {layer}: dev accuracy {100 * report[layer]['dev_accuracy']:.2f}%")
    log("[3/3] write exits/")
    meta = {
        "classifier_layers": n_layers,
        "hidden_size": model.config.hidden_size,
        "labels": len(info.labels),
        "training": "frozen",
        "settings": {f.name: getattr(s, f.name) for f in fields(s) if f.name != "datasets_dir"},
        "heads": {str(k): v for k, v in report.items()},
        "seconds": time.perf_counter() - t0,
    }
    with tempfile.TemporaryDirectory(dir=ckpt) as tmp:
        staged = Path(tmp) / EXITS_DIR
        staged.mkdir()
        save_heads(staged, heads, meta)
        out = replace_exits_dir(ckpt, staged)
    log(f"exit heads written to {out}")
    return out


def training_split(
    ckpt: Path, labels: list[str], datasets_dir: str | None, log
) -> tuple[list[str], np.ndarray]:
    """The training texts and label ids of the run that made ``ckpt`` (from metrics.json's config)."""
    from .splits import load_splits

    path = ckpt / "metrics.json"
    config = json.loads(path.read_text(encoding="utf-8")).get("config") if path.is_file() else None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: no training config; the training split cannot be rebuilt")
    config = dict(
        config,
        classifier=ClassifierConfig(**config["classifier"]),
        embedder=EmbedderConfig(**config["embedder"]),
    )
    if datasets_dir:
        config["datasets_dir"] = datasets_dir
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in {f.name for f in fields(TrainConfig)}})
    got, train, _, _ = load_splits(cfg, log=lambda msg: None)
    if list(got) != list(labels):
        raise CheckpointError(f"{path}: the rebuilt training split has other labels than lrsl.json")
    index = {y: i for i, y in enumerate(labels)}
    return train.texts, np.array([index[y] for y in train.labels])


@torch.inference_mode()
def cls_vectors(
    model, tok, texts: list[str], layers: list[int], max_length: int, batch_size: int = 64
) -> dict:
    """{layer: float32 (n, hidden)}: the [CLS] hidden state after each layer, in input order."""
    out = {layer: np.zeros((len(texts), model.config.hidden_size), dtype=np.float32) for layer in layers}
    for idx in chunks(length_order(tok, texts, max_length), batch_size):
        enc = tok(
            [texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        states = model(**enc, output_hidden_states=True).hidden_states
        for layer in layers:
            out[layer][idx] = states[layer][:, 0].float().numpy()
    return out


def train_head(head: ExitHead, x, y, dev_x, dev_y, s: HeadSettings) -> tuple[ExitHead, dict]:
    """The head after ``s.epochs`` of cross-entropy on cached vectors, at its best dev epoch."""
    x, y, dev_x = torch.from_numpy(x), torch.as_tensor(y), torch.from_numpy(dev_x)
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)

    def dev_accuracy() -> float:
        head.eval()
        with torch.no_grad():
            return float((head.from_cls(dev_x).argmax(1).numpy() == dev_y).mean())

    best, best_state, best_epoch = dev_accuracy(), copy.deepcopy(head.state_dict()), 0
    for epoch in range(1, s.epochs + 1):
        head.train()
        for idx in torch.randperm(len(x), generator=gen).split(s.batch_size):
            loss = torch.nn.functional.cross_entropy(head.from_cls(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = dev_accuracy()
        if acc > best:
            best, best_state, best_epoch = acc, copy.deepcopy(head.state_dict()), epoch
    head.load_state_dict(best_state)
    return head.eval(), {"dev_accuracy": best, "best_epoch": best_epoch}
