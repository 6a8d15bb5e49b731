"""Classifier fine-tuning and inference (PyTorch).

AdamW with linear warmup and linear decay, dynamic padding (each batch padded to its own longest
text, not to max_length: short texts such as Banking77's then cost little on a CPU),
length-grouped training batches (:func:`grouped_batches`), early stopping on dev accuracy with the best
epoch's weights restored, everything seeded.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .config import ClassifierConfig
from .loop import Optimizer, progress


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def chunks(order, batch_size: int) -> list[np.ndarray]:
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _batches(tokenizer, texts, max_length, batches):
    for idx in batches:
        enc = tokenizer(
            [texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        yield idx, enc


def token_lengths(tokenizer, texts, max_length) -> np.ndarray:
    return np.array(
        [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    )


def length_order(tokenizer, texts, max_length) -> np.ndarray:
    """Indices sorted by token length (stable): inference batches then carry little padding."""
    return np.argsort(token_lengths(tokenizer, texts, max_length), kind="stable")


def grouped_batches(lengths, batch_size: int, group_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Training batches (index arrays) of texts of similar length.

    Shuffle, cut into pools of ``group_size * batch_size``, sort each pool by length, cut the pools
    into batches and shuffle the batches (the idea of transformers' ``group_by_length``). Every index
    appears exactly once; the batches stay random in content and order, but a batch is padded to
    about its own texts' length instead of the longest of a random draw. ``group_size`` 0 or 1: a
    plain permutation.
    """
    lengths = np.asarray(lengths)
    perm = rng.permutation(len(lengths))
    if group_size <= 1:
        return chunks(perm, batch_size)
    pool = group_size * batch_size
    batches = []
    for start in range(0, len(perm), pool):
        chunk = perm[start : start + pool]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


@torch.inference_mode()
def predict_logits(
    model, tokenizer, texts, max_length: int, batch_size: int = 128, desc: str = ""
) -> np.ndarray:
    """Logits (n, L) float32 in input order."""
    model.eval()
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    order = length_order(tokenizer, texts, max_length)
    n_batches = math.ceil(len(texts) / batch_size)
    for idx, enc in progress(
        _batches(tokenizer, texts, max_length, chunks(order, batch_size)),
        total=n_batches,
        desc=desc,
        disable=not desc,
    ):
        out[idx] = model(**enc).logits.float().numpy()
    return out


def train_classifier(
    model, tokenizer, train_texts, train_y, dev_texts, dev_y, cfg: ClassifierConfig, log=print, heads=None
):
    """Fine-tune in place; returns the per-epoch history. The best dev epoch's weights are kept.

    ``heads``: {layer: :class:`train.exit_heads.ExitHead`} trained jointly with the classifier
    (``python -m train --exit-layers``): the loss is the final head's cross-entropy plus
    ``cfg.exit_weight`` times each exit head's; early stopping still follows the final head."""
    seed_everything(cfg.seed)
    if heads:
        model.exit_heads = torch.nn.ModuleDict({str(layer): h for layer, h in heads.items()})
    train_y_t = torch.as_tensor(train_y)
    dev_y = np.asarray(dev_y)
    # biases and norm scales are not decayed (BERT's LayerNorm, DistilBERT's layer_norm, Llama's RMSNorm
    # input_layernorm/norm); frozen weights (LoRA's base model) are left out of the optimiser
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trained if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in trained if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    total = math.ceil(len(train_texts) / cfg.batch_size) * cfg.epochs
    optimizer = Optimizer(model, groups, cfg.lr, total, cfg.warmup_ratio)
    gen = np.random.default_rng(cfg.seed)
    lengths = token_lengths(tokenizer, train_texts, cfg.max_length)
    history, best_acc, best_state, bad = [], -1.0, None, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        batches = grouped_batches(lengths, cfg.batch_size, cfg.group_size, gen)
        train_loss = optimizer.epoch(
            _batches(tokenizer, train_texts, cfg.max_length, batches),
            lambda b: _loss(model, b[1], train_y_t[b[0]], cfg.exit_weight),
            len(batches),
            f"classifier epoch {epoch}/{cfg.epochs}",
        )
        dev_acc = float(
            np.mean(predict_logits(model, tokenizer, dev_texts, cfg.max_length).argmax(1) == dev_y)
        )
        rec = {
            "epoch": epoch,
            "train_loss": train_loss,
            "dev_accuracy": dev_acc,
            "seconds": time.perf_counter() - t0,
        }
        history.append(rec)
        log(
            f"classifier epoch {epoch}: loss {rec['train_loss']:.4f}, dev accuracy {100 * dev_acc:.2f}%, {rec['seconds']:.0f}s"
        )
        if dev_acc > best_acc:
            best_acc, best_state, bad = dev_acc, _trained_state(model), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                log(f"early stop: dev accuracy did not improve for {cfg.patience} epochs")
                break
    model.load_state_dict(best_state, strict=False)  # the trained weights; frozen ones never moved
    if heads:
        del model.exit_heads  # the heads keep their trained weights; the classifier saves without them
    return history


def _trained_state(model) -> dict:
    """Copies of the weights being trained (all of them in full fine-tuning, the adapters and the
    head with LoRA): the best epoch's, put back at the end."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _loss(model, batch, y, exit_weight: float):
    """Cross-entropy of the final head, plus ``exit_weight`` times each exit head's when there are some."""
    heads = getattr(model, "exit_heads", None)
    if not heads:
        return torch.nn.functional.cross_entropy(model(**batch).logits, y)
    out = model(**batch, output_hidden_states=True)
    loss = torch.nn.functional.cross_entropy(out.logits, y)
    for layer, head in heads.items():
        loss = loss + exit_weight * torch.nn.functional.cross_entropy(head(out.hidden_states[int(layer)]), y)
    return loss
