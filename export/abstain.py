"""The abstain calibration of ``python -m export``: every score measured on dev, the best kept.

It runs when the checkpoint holds out-of-scope dev texts (``dev_oos.jsonl``, written by ``python -m
train --oos-label`` or ``--unknown-ratio``; :mod:`train.open_intent`). With the exported models and
the bundle's re-calibrated gate and fusion it computes, for the in-scope and the out-of-scope dev
texts, every score of :mod:`lrsl_rt.abstain`; keeps the one with the best dev AUROC (or the one
asked for); and sets its threshold by the rule (:func:`lrsl_rt.abstain.choose_threshold`, default
``drop:1``: at most one point of in-scope accuracy lost on dev). The figures of every score on dev
and test, the dev curve of the chosen one, and the chosen one's operating point measured through
``Reranker.predict`` on test go into the bundle's metrics, for the results page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrsl_rt.abstain import (
    DEFAULT_FALLBACK,
    DEFAULT_RULE,
    auroc,
    choose_threshold,
    knn_score,
    macro_f1,
    operating_point,
    scores_of,
)
from lrsl_rt.errors import UsageError
from lrsl_rt.fusion import confidence
from lrsl_rt.manifest import ABSTAIN_SCORES, Abstain
from lrsl_rt.rule import decide
from train.checkpoint import read_jsonl

from .errors import ExportError

CURVE_POINTS = 101  # dev operating points kept for the results page's plot


@dataclass(frozen=True)
class OutOfScopeTexts:
    dev: list[str]
    test: list[str] | None
    train: list[str] | None  # the in-scope training texts (the kNN score's neighbours)


@dataclass(frozen=True)
class AbstainSettings:
    """``score``: "auto" (best dev AUROC), "off", or one of ABSTAIN_SCORES; ``rule``: the threshold rule."""

    score: str = "auto"
    rule: str = DEFAULT_RULE
    fallback_label: str = DEFAULT_FALLBACK

    def check(self, labels) -> None:
        from lrsl_rt.abstain import parse_rule

        if self.score not in ("auto", "off", *ABSTAIN_SCORES):
            raise UsageError(
                f"--abstain: expected auto, off or one of {list(ABSTAIN_SCORES)}, got {self.score!r}"
            )
        try:
            parse_rule(self.rule)
        except ValueError as e:
            raise UsageError(f"--abstain-threshold: {e}") from e
        if not self.fallback_label.strip() or self.fallback_label in labels:
            raise UsageError(
                f"--fallback-label {self.fallback_label!r}: expected a non-empty name that is not one of the labels"
            )


def read_out_of_scope(root: Path) -> OutOfScopeTexts | None:
    """The checkpoint's out-of-scope texts, or None when it has no ``dev_oos.jsonl``."""
    if not (root / "dev_oos.jsonl").is_file():
        return None

    def texts(name):
        path = root / name
        if not path.is_file():
            return None
        try:
            return read_jsonl(path)[0]
        except (ValueError, KeyError, TypeError) as e:
            raise ExportError(
                f"{path}: expected one JSON object with 'text' and 'label' per line: {e!r}"
            ) from e

    return OutOfScopeTexts(texts("dev_oos.jsonl"), texts("test_oos.jsonl"), texts("train.jsonl"))


def every_score(r, texts: list[str], train_emb: np.ndarray | None) -> tuple[dict, np.ndarray]:
    """({score: values (n,)}, LRSL label ids (n,)) of ``texts`` under ``r``'s manifest."""
    m = r.manifest
    logits, emb = r.logits(texts), r.embed(texts)
    cos = emb @ r.label_embeddings.T
    d = decide(logits, cos, m.threshold, m.fusion, m.k, measure=m.measure)
    final = confidence(logits)
    if d.hard_idx.size:
        final[d.hard_idx] = confidence(d.fused)
    knn = knn_score(emb, train_emb) if train_emb is not None else None
    names = [s for s in ABSTAIN_SCORES if s != "knn" or knn is not None]
    out = {s: scores_of(s, logits, d, m.k, final_confidence=final, cos=cos, knn=knn) for s in names}
    return out, d.labels


def calibrate_abstain(r, ckpt, oos: OutOfScopeTexts, settings: AbstainSettings, log):
    """(manifest Abstain or None, metrics, training embeddings to ship or None)."""
    train_emb = r.embed(oos.train) if oos.train else None
    dev_in, dev_labels = every_score(r, ckpt.dev.texts, train_emb)
    dev_oos, _ = every_score(r, oos.dev, train_emb)
    correct = dev_labels == ckpt.dev.gold
    table = {s: {"dev_auroc": auroc(dev_in[s], dev_oos[s])} for s in dev_in}
    if ckpt.test is not None and oos.test:
        test_in, _ = every_score(r, ckpt.test.texts, train_emb)
        test_oos, _ = every_score(r, oos.test, train_emb)
        for s in table:
            table[s]["test_auroc"] = auroc(test_in[s], test_oos[s])
    chosen = max(table, key=lambda s: table[s]["dev_auroc"]) if settings.score == "auto" else settings.score
    if chosen not in table:
        raise ExportError(f"abstain score {chosen!r} needs the checkpoint's train.jsonl (kNN neighbours)")
    threshold = choose_threshold(dev_in[chosen], correct, dev_oos[chosen], settings.rule)
    dev_point = operating_point(dev_in[chosen], correct, dev_oos[chosen], threshold)
    for s, row in sorted(table.items(), key=lambda x: -x[1]["dev_auroc"]):
        log(
            f"      abstain {s:<9} dev AUROC {row['dev_auroc']:.4f}"
            + (f", test {row['test_auroc']:.4f}" if "test_auroc" in row else "")
        )
    log(
        f"      abstain score {chosen} (rule {settings.rule}): threshold {threshold:.4g}; dev out-of-scope recall "
        f"{100 * dev_point['oos_recall']:.1f}%, in-scope accuracy {100 * dev_point['inscope_accuracy']:.2f}% "
        f"(abstain off {100 * correct.mean():.2f}%)"
    )
    dev = {"auroc": table[chosen]["dev_auroc"], **dev_point, "inscope_accuracy_off": float(correct.mean())}
    abstain = Abstain(chosen, float(threshold), settings.fallback_label, _chosen_by(settings), dev)
    metrics = {
        "scores": table,
        "chosen": chosen,
        "rule": settings.rule,
        "dev": dev,
        "dev_curve": dev_curve(dev_in[chosen], correct, dev_oos[chosen]),
        "rows": {"dev_in": len(ckpt.dev.texts), "dev_oos": len(oos.dev), "test_oos": len(oos.test or [])},
        "out_of_scope": ckpt.info.out_of_scope,  # how the checkpoint chose them (unknown labels, seed)
    }
    return abstain, metrics, (train_emb if chosen == "knn" else None)


def evaluate_abstain(r, ckpt, oos: OutOfScopeTexts, log) -> dict | None:
    """The chosen score's test figures through ``Reranker.predict`` (the records users get)."""
    if ckpt.test is None or not oos.test:
        return None
    preds = r.predict(ckpt.test.texts + oos.test, abstain=True)
    n_in = len(ckpt.test.texts)
    pred = np.array([p.label_id for p in preds])  # -1: out of scope
    gold = np.concatenate([ckpt.test.gold, np.full(len(oos.test), -1)])
    flagged = np.array([bool(p.out_of_scope) for p in preds])
    off = np.array([p.label_id for p in r.predict(ckpt.test.texts + oos.test, abstain=False)])
    gold_in = gold[:n_in]
    out = {
        "oos_recall": float(flagged[n_in:].mean()),
        "inscope_accuracy": float(np.mean(pred[:n_in] == gold_in)),
        "inscope_accuracy_off": float(np.mean(off[:n_in] == gold_in)),
        "inscope_abstained": float(flagged[:n_in].mean()),
        "macro_f1": macro_f1(gold, pred),
        "macro_f1_off": macro_f1(gold, off),
    }
    log(
        f"      abstain on test: out-of-scope recall {100 * out['oos_recall']:.1f}%, in-scope accuracy "
        f"{100 * out['inscope_accuracy']:.2f}%, macro-F1 {100 * out['macro_f1']:.2f}% (off {100 * out['macro_f1_off']:.2f}%)"
    )
    return out


def dev_curve(s_in, correct, s_oos, points: int = CURVE_POINTS) -> list[dict]:
    """Operating points at evenly spaced quantiles of the dev scores (the guide's plot)."""
    finite = np.concatenate([s_in, s_oos])
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return []
    thresholds = np.unique(np.quantile(finite, np.linspace(0, 1, points)))
    return [operating_point(s_in, correct, s_oos, t) for t in thresholds]


def _chosen_by(settings: AbstainSettings) -> str:
    return settings.rule if ":" in settings.rule else "fixed"
