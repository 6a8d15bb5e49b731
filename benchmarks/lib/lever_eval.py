"""The levers of LRSL as functions of cached arrays: label representations, hardness gates, MLP reranker.

Inputs are the classifier's logits and the fine-tuned embedder's unit-length text embeddings of a
split, the gold label ids, and the label representations. The LRSL decision itself (argmax, gate,
fusion of the hard rows) is the runtime's, :func:`lrsl_rt.rule.decide`, given the gate's mask; every
lever is compared with its incumbent by ``lrsl_rt.tuning.mcnemar`` on the same samples (adopt when
z >= ``MIN_Z`` on dev, :func:`verdicts`).

Shortcuts: hardness gates other than the variance are matched to the variance gate's dev hard
share by taking the same number of lowest scores on dev; their threshold then carries to test
unchanged, as sigma2_mis does. The MLP's dev figures are cross-fitted (each dev fold scored by an MLP
trained on the other folds), its test figures come from an MLP trained on all of dev.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lrsl_rt.fusion import softmax
from lrsl_rt.gate import MEASURES, is_unsure, sureness, topk_indices, topk_variance
from lrsl_rt.rule import decide
from lrsl_rt.tuning import MIN_Z, mcnemar, mistakes_sureness

SPLITS = ("dev", "test")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ---- (a) label representations --------------------------------------------------------------
def prototypes(train_emb: np.ndarray, train_gold: np.ndarray, n_labels: int) -> np.ndarray:
    """Unit-length mean embedding of each class's training texts, shape (n_labels, d).

    >>> prototypes(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), np.array([0, 0, 1]), 2).round(3)
    array([[0.707, 0.707],
           [1.   , 0.   ]])
    """
    missing = sorted(set(range(n_labels)) - set(np.asarray(train_gold).tolist()))
    if missing:
        raise ValueError(f"label ids {missing[:5]} have no training text: no prototype")
    sums = np.zeros((n_labels, train_emb.shape[1]))
    np.add.at(sums, train_gold, train_emb)
    return unit(sums)


def representations(name_emb: np.ndarray, proto: np.ndarray) -> dict[str, np.ndarray]:
    """Label matrices to compare: today's label-name embedding, prototypes, and their normalized mean."""
    return {"label_name": unit(name_emb), "prototype": proto, "mix": unit(unit(name_emb) + proto)}


# ---- (b) hardness measures --------------------------------------------------------------------
def hardness_scores(logits: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-sample scores, lower = harder: top-k variance (the paper's), top-2 margin, -entropy, max prob."""
    logits = np.asarray(logits, dtype=np.float64)
    p = softmax(logits)
    top2 = np.take_along_axis(logits, topk_indices(logits, 2), axis=1)
    return {
        "topk_variance": topk_variance(logits, k),
        "margin": top2[:, 0] - top2[:, 1],
        "neg_entropy": np.sum(p * np.log(np.clip(p, 1e-300, None)), axis=1),
        "max_probability": p.max(axis=1),
    }


def matched_threshold(score_dev: np.ndarray, n_hard: int) -> float:
    """The threshold that marks the ``n_hard`` lowest dev scores hard (score <= threshold)."""
    if n_hard <= 0:
        return -np.inf
    return float(np.sort(score_dev)[min(n_hard, len(score_dev)) - 1])


def gate_row(hard: np.ndarray, logits: np.ndarray, cos: np.ndarray, gold: np.ndarray, fusion, k) -> dict:
    """How many of the classifier's mistakes a gate sends to reranking, and LRSL accuracy with it."""
    wrong = np.argmax(logits, axis=1) != gold
    caught = int(np.sum(hard & wrong))
    pred = decide(logits, cos, None, fusion, k, hard=hard).labels
    return {
        "hard_share": float(hard.mean()),
        "n_hard": int(hard.sum()),
        "mistakes": int(wrong.sum()),
        "mistakes_caught": caught,
        "caught_per_reranked": caught / int(hard.sum()) if hard.any() else None,
        "recall_of_mistakes": caught / int(wrong.sum()) if wrong.any() else None,
        "accuracy_lrsl": float(np.mean(pred == gold)),
        "_ok": pred == gold,
    }


def shipped_gates(a: dict, k: int, fusion, cos: dict) -> tuple[dict, dict]:
    """Each measure of :mod:`lrsl_rt.gate` with the threshold ``python -m train --measure`` gives it
    (:func:`lrsl_rt.tuning.mistakes_sureness` on dev): rows[split][measure] and the thresholds."""
    thresholds = {m: mistakes_sureness(a["dev_logits"], a["dev_gold"], k, m) for m in MEASURES}
    rows = {s: {} for s in SPLITS}
    for s in SPLITS:
        logits = a[f"{s}_logits"]
        for m, t in thresholds.items():
            hard = is_unsure(sureness(logits, m, k), t)
            rows[s][m] = gate_row(hard, logits, cos[s]["label_name"], a[f"{s}_gold"], fusion, k)
    return rows, thresholds


# ---- (c) MLP reranker ---------------------------------------------------------------------------
def candidate_features(logits: np.ndarray, cos: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, k, f), candidate ids (n, k)) of each row's top-k labels.

    Per candidate: logit minus the top logit, softmax probability, cosine, cosine minus the best
    cosine among the candidates, and the rank one-hot (k values). Differences rather than raw values,
    so the features do not depend on a data set's logit scale.
    """
    logits = np.asarray(logits, dtype=np.float64)
    idx = topk_indices(logits, k)
    lg = np.take_along_axis(logits, idx, axis=1)
    pr = np.take_along_axis(softmax(logits), idx, axis=1)
    cs = np.take_along_axis(np.asarray(cos, dtype=np.float64), idx, axis=1)
    rank = np.broadcast_to(np.eye(k), (len(logits), k, k))
    feats = np.concatenate(
        [
            (lg - lg[:, :1])[..., None],
            pr[..., None],
            cs[..., None],
            (cs - cs.max(axis=1, keepdims=True))[..., None],
            rank,
        ],
        axis=2,
    )
    return feats.astype(np.float32), idx


def train_mlp(feats: np.ndarray, target: np.ndarray, seed: int = 0, hidden: int = 16, epochs: int = 300):
    """A per-candidate scorer (f -> hidden -> 1), softmax over a row's candidates, cross-entropy to the
    gold candidate's position ``target`` (rows whose gold is not a candidate are left out)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few hundred tiny steps: threads would only wait for each other
    try:
        return _fit(torch, feats, target, seed, hidden, epochs)
    finally:
        torch.set_num_threads(threads)


def _fit(torch, feats, target, seed, hidden, epochs):
    torch.manual_seed(seed)
    keep = target >= 0
    x = torch.from_numpy(feats[keep])
    y = torch.from_numpy(target[keep]).long()
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[2], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(epochs if len(y) else 0):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x).squeeze(-1), y)
        loss.backward()
        opt.step()
    return net


def mlp_rerank(net, feats: np.ndarray, idx: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        scores = net(torch.from_numpy(feats)).squeeze(-1).numpy()
    return idx[np.arange(len(idx)), scores.argmax(axis=1)]


def gold_position(idx: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Position of the gold label among each row's candidates, -1 when it is not one."""
    hit = idx == np.asarray(gold)[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def mlp_predict(net, logits, cos, hard, k) -> np.ndarray:
    pred = np.argmax(logits, axis=1)
    if hard.any():
        feats, idx = candidate_features(logits[hard], cos[hard], k)
        pred[hard] = mlp_rerank(net, feats, idx)
    return pred


def cross_fitted_mlp(logits, cos, gold, hard, k, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Dev LRSL labels with the MLP where each fold is reranked by an MLP trained on the other folds."""
    feats, idx = candidate_features(logits, cos, k)
    target = gold_position(idx, gold)
    fold = np.random.default_rng(seed).permutation(len(gold)) % folds
    pred = np.argmax(logits, axis=1)
    for f in range(folds):
        test = (fold == f) & hard
        if test.any():
            net = train_mlp(feats[fold != f], target[fold != f], seed)
            pred[test] = mlp_rerank(net, feats[test], idx[test])
    return pred


def compare(ok: dict[str, np.ndarray], incumbent: str) -> dict[str, dict]:
    """McNemar of every candidate against ``incumbent`` (same samples), with the adoption verdict."""
    return {
        name: {**mcnemar(o, ok[incumbent]), "beats_incumbent": mcnemar(o, ok[incumbent])["z"] >= MIN_Z}
        for name, o in ok.items()
    }


# ---- what levers and embedder_lever share ---------------------------------------------------------
def training_split(ckpt: Path, info, train_file: str | None):
    """(texts, gold ids) of the training texts the checkpoint was trained on."""
    from train import data as D
    from train.pipeline import TrainConfig, load_splits

    if train_file:
        split = D.read_labelled(train_file, "text", "label" if train_file.endswith(".jsonl") else "category")
    else:
        config = json.loads((ckpt / "metrics.json").read_text(encoding="utf-8")).get("config")
        if not config:
            raise ValueError(f"{ckpt}/metrics.json: no 'config'; pass --train FILE with the training texts")
        keep = {k: v for k, v in config.items() if k not in ("classifier", "embedder")}
        _, split, _, _ = load_splits(TrainConfig(**keep), log=lambda s: None)
    index = {y: i for i, y in enumerate(info.labels)}
    rows = [(t, index[y]) for t, y in zip(split.texts, split.labels, strict=True) if y in index]
    return [t for t, _ in rows], np.array([g for _, g in rows], dtype=np.int64)


def strip_private(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def verdicts(rows: dict[str, dict], incumbent: str) -> dict:
    """rows[split][name]["_ok"] -> McNemar vs the incumbent on each split, and the dev decision."""
    out = {s: compare({n: r["_ok"] for n, r in rows[s].items()}, incumbent) for s in SPLITS}
    adopted = [n for n in rows["dev"] if n != incumbent and out["dev"][n]["beats_incumbent"]]
    best = max(adopted, key=lambda n: rows["dev"][n]["accuracy_lrsl"], default=incumbent)
    confirmed = None if best == incumbent else out["test"][best]["z"] >= MIN_Z
    return {"mcnemar": out, "incumbent": incumbent, "adopted_on_dev": best, "confirmed_on_test": confirmed}
