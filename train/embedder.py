"""Label-aware embedder: triplets mined from the classifier's own confusions, MNRL fine-tuning.

A triplet is (text, gold label text, wrong label text). The wrong label is the classifier's
highest-ranked wrong label within its top-k on that text -- the label it would confuse the text
with -- or, when its top-k holds no wrong label, a random other label. ``negatives`` > 1 makes one
triplet per text for each of its highest-ranked wrong labels, up to that many. MultipleNegativesRankingLoss
then pulls the text towards its gold label text and away from that negative and from the other
label texts of the batch. Batches never hold the same gold label twice, so in-batch negatives are
true negatives (sentence-transformers' NO_DUPLICATES sampler idea, written out here to avoid the
`datasets`/`accelerate` dependencies of its Trainer).
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from lrsl_rt.gate import topk_indices

from .config import EmbedderConfig
from .loop import Optimizer


def mine_triplets(texts, gold, logits, label_texts, k: int, seed: int, negatives: int = 1):
    """(triplets, counts): per text, its ``negatives`` highest-ranked wrong labels of the top-k (fewer when
    the top-k holds fewer), or one random other label when the top-k holds no wrong label."""
    if negatives < 1:
        raise ValueError(f"negatives per text: expected >= 1, got {negatives}")
    rng = random.Random(seed)
    top = topk_indices(logits, k)
    n_labels = len(label_texts)
    triplets, counts = [], {"topk_negative": 0, "random_negative": 0}
    for text, y, cand in zip(texts, gold, top, strict=True):
        wrong = [int(c) for c in cand if c != y][:negatives]
        if wrong:
            counts["topk_negative"] += len(wrong)
        else:
            wrong = [rng.choice([j for j in range(n_labels) if j != y])]
            counts["random_negative"] += 1
        triplets.extend((text, int(y), neg) for neg in wrong)
    return triplets, counts


def distinct_label_batches(
    triplets, batch_size: int, rng: random.Random, group_size: int = 0
) -> list[list[int]]:
    """Shuffled batches in which no label is the gold of two samples, nor one's gold and another's negative.

    Negatives may repeat within a batch: a repeated wrong label is still a true negative for every anchor.
    With ``group_size`` > 1 the shuffled triplets are sorted by text length within pools of
    ``group_size * batch_size`` before batching and the batches are shuffled afterwards, so a batch
    holds texts of similar length and is padded little (as the classifier's training batches).
    """
    pending = list(range(len(triplets)))
    rng.shuffle(pending)
    if group_size > 1:
        pool = group_size * batch_size
        pending = [
            i
            for start in range(0, len(pending), pool)
            for i in sorted(pending[start : start + pool], key=lambda j: -len(triplets[j][0]))
        ]
    batches = []
    while pending:
        batch, golds, negs, rest = [], set(), set(), []
        for i in pending:
            _, y, neg = triplets[i]
            if len(batch) < batch_size and y not in golds and y not in negs and neg not in golds:
                batch.append(i)
                golds.add(y)
                negs.add(neg)
            else:
                rest.append(i)
        batches.append(batch)
        pending = rest
    if group_size > 1:
        rng.shuffle(batches)
    return batches


def train_embedder(model, triplets, label_texts, cfg: EmbedderConfig, log=print) -> list[dict]:
    """Fine-tune a SentenceTransformer in place with MultipleNegativesRankingLoss."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    loss_fn = MultipleNegativesRankingLoss(model)
    plans = [distinct_label_batches(triplets, cfg.batch_size, rng, cfg.group_size) for _ in range(cfg.epochs)]
    optimizer = Optimizer(model, model.parameters(), cfg.lr, sum(len(p) for p in plans), cfg.warmup_ratio)

    def loss_of(batch):
        cols = (
            [triplets[i][0] for i in batch],
            [label_texts[triplets[i][1]] for i in batch],
            [label_texts[triplets[i][2]] for i in batch],
        )
        return loss_fn([model.tokenize(list(c)) for c in cols], torch.empty(0))

    history = []
    model.train()
    for epoch, plan in enumerate(plans, 1):
        t0 = time.perf_counter()
        train_loss = optimizer.epoch(plan, loss_of, len(plan), f"embedder epoch {epoch}/{cfg.epochs}")
        rec = {
            "epoch": epoch,
            "train_loss": train_loss,
            "batches": len(plan),
            "seconds": time.perf_counter() - t0,
        }
        history.append(rec)
        log(
            f"embedder epoch {epoch}: loss {rec['train_loss']:.4f}, {len(plan)} batches, {rec['seconds']:.0f}s"
        )
    model.eval()
    return history


@torch.inference_mode()
def encode(model, texts, batch_size: int = 128) -> np.ndarray:
    """Unit-length embeddings (n, d) float32."""
    model.eval()
    emb = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    return emb.astype(np.float32)


def label_similarities(model, texts, label_texts) -> np.ndarray:
    """Cosine similarity (n, L) of each text with each label text."""
    return encode(model, texts) @ encode(model, label_texts).T


def zero_shot_accuracy(cos: np.ndarray, gold) -> float:
    return float(np.mean(np.argmax(cos, axis=1) == np.asarray(gold)))
