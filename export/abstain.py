"""The abstain calibration of ``python -m export``: every score measured on dev, the best that fits kept.

It runs when the checkpoint holds out-of-scope dev texts (``dev_oos.jsonl``, written by ``python -m
train --oos-label`` or ``--unknown-ratio``; :mod:`train.open_intent`). With the exported models and
the bundle's re-calibrated gate and fusion it computes, for the in-scope and the out-of-scope dev
texts, every score of :mod:`lrsl_rt.abstain` on every text, and for each:

1. its threshold by the rule (:func:`lrsl_rt.abstain.choose_threshold`, default ``drop:1``: at
   most one point of in-scope accuracy lost on dev), on the score of every text;
2. for a score that runs the embedder (``knn``, ``max_cos``): the cascade bound
   (:func:`lrsl_rt.abstain.cascade_bound`): texts the classifier is surer of are in scope without
   the score, and at most ``cascade_loss`` of the out-of-scope dev texts escape it; its cost is the
   share of in-scope dev texts it still sends to the embedder beyond the gate's hard ones;
3. its dev AUROC as the runtime computes it (cascade included).

Among the scores whose cost fits ``budget`` it keeps the best dev AUROC (or the one asked for).
The figures of every score on dev and test (with and without the cascade), and the chosen one's
operating point measured through ``Reranker.predict`` on test, go into the bundle's metrics.

"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrsl_rt.abstain import (
    CASCADE_MEASURES,
    DEFAULT_BUDGET,
    DEFAULT_CASCADE_LOSS,
    DEFAULT_FALLBACK,
    DEFAULT_RULE,
    EMBEDDER_SCORES,
    auroc,
    cascade_bound,
    choose_threshold,
    fit_mahalanobis,
    knn_score,
    logit_score,
    macro_f1,
    mahalanobis_score,
    operating_point,
    scores_of,
)
from lrsl_rt.bundle import FEATURES
from lrsl_rt.errors import UsageError
from lrsl_rt.exits import StageChain
from lrsl_rt.fusion import confidence
from lrsl_rt.gate import is_unsure
from lrsl_rt.manifest import ABSTAIN_SCORES, Abstain, Cascade
from lrsl_rt.rule import decide
from train.checkpoint import read_jsonl

from .errors import ExportError
from .knn_rows import size_table, stratified_rows

CURVE_POINTS = 101  # dev operating points kept for the results page's plot


@dataclass(frozen=True)
class OutOfScopeTexts:
    dev: list[str]
    test: list[str] | None
    train: list[str] | None  # the in-scope training texts (the kNN neighbours, the class means)
    train_labels: list[str] | None = None


@dataclass(frozen=True)
class AbstainSettings:
    """``score``: "auto" (best dev AUROC among those that fit ``budget``), "off", or one of
    ABSTAIN_SCORES; ``rule``: the threshold rule; ``budget``: the largest share of in-scope dev texts
    the score may send to the embedder beyond the gate's hard ones; ``cascade_loss``: the largest
    share of out-of-scope dev texts the cascade may let escape."""

    score: str = "auto"
    rule: str = DEFAULT_RULE
    fallback_label: str = DEFAULT_FALLBACK
    budget: float = DEFAULT_BUDGET
    cascade_loss: float = DEFAULT_CASCADE_LOSS
    knn_max_rows: int | None = None  # bound on the kNN neighbour matrix (:mod:`export.knn_rows`)

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
        for flag, v in (("--abstain-budget", self.budget), ("--abstain-cascade-loss", self.cascade_loss)):
            if not 0 <= v <= 1:
                raise UsageError(f"{flag}: expected a share in [0, 1], got {v}")
        if self.knn_max_rows is not None and (isinstance(self.knn_max_rows, bool) or self.knn_max_rows < 1):
            raise UsageError(f"--knn-max-rows: expected a positive number of rows, got {self.knn_max_rows}")


def read_out_of_scope(root: Path) -> OutOfScopeTexts | None:
    """The checkpoint's out-of-scope texts, or None when it has no ``dev_oos.jsonl``."""
    if not (root / "dev_oos.jsonl").is_file():
        return None

    def rows(name):
        path = root / name
        if not path.is_file():
            return None, None
        try:
            return read_jsonl(path)
        except (ValueError, KeyError, TypeError) as e:
            raise ExportError(
                f"{path}: expected one JSON object with 'text' and 'label' per line: {e!r}"
            ) from e

    train, train_labels = rows("train.jsonl")
    return OutOfScopeTexts(rows("dev_oos.jsonl")[0], rows("test_oos.jsonl")[0], train, train_labels)


@dataclass(frozen=True)
class Scored:
    """Every abstain score of a set of texts, with what the cascade and its cost need."""

    scores: dict  # {score: (n,)}
    labels: np.ndarray  # LRSL label ids
    sure: dict  # {cascade measure: (n,)}, the free scores the cascade may compare with a bound
    hard: np.ndarray  # the gate's verdict (those rows run the embedder anyway)
    embeddings: np.ndarray | None = None  # every text's (the kNN size table reuses them)


def classifier_features(r, texts: list[str]) -> np.ndarray | None:
    """The classifier graph's ``features`` (n, h), or None when the graph has no such output."""
    c = r.classifier
    if isinstance(c, StageChain) or FEATURES not in c.outputs:
        return None
    return r.run_batched("classifier", r.tokenizer.tokenize(texts), outputs=("logits", FEATURES))[1]


def fit_features(r, oos: OutOfScopeTexts, labels) -> tuple | None:
    """(whitener, whitened class means) of the in-scope training texts' classifier features."""
    if not oos.train or not oos.train_labels:
        return None
    feats = classifier_features(r, oos.train)
    if feats is None:
        return None
    ids = {y: i for i, y in enumerate(labels)}
    return fit_mahalanobis(feats, np.array([ids[y] for y in oos.train_labels]), len(labels))


def every_score(r, texts: list[str], train_emb: np.ndarray | None, stats: tuple | None) -> Scored:
    """Every score of ``texts`` under ``r``'s manifest, computed on every text."""
    m = r.manifest
    logits, emb = r.logits(texts), r.embed(texts)
    cos = emb @ r.label_embeddings.T
    d = decide(logits, cos, m.threshold, m.fusion, m.k, measure=m.measure)
    final = confidence(logits)
    if d.hard_idx.size:
        final[d.hard_idx] = confidence(d.fused)
    knn = knn_score(emb, train_emb) if train_emb is not None else None
    maha = mahalanobis_score(classifier_features(r, texts), *stats) if stats is not None else None
    names = [
        s
        for s in ABSTAIN_SCORES
        if (s != "knn" or knn is not None) and (s != "mahalanobis" or maha is not None)
    ]
    out = {
        s: scores_of(s, logits, d, m.k, final_confidence=final, cos=cos, knn=knn, maha=maha) for s in names
    }
    sure = {"max_prob": logit_score(logits, "max_prob", m.k), "energy": logit_score(logits, "energy", m.k)}
    if maha is not None:
        sure["mahalanobis"] = maha
    return Scored(out, d.labels, sure, d.hard, emb)


def cascaded(x: Scored, score: str, cascade: tuple | None) -> np.ndarray:
    """The score as the runtime decides with it: +inf (in scope, never scored) above the cascade's
    bound; ``cascade``: (measure, bound) or None."""
    s = x.scores[score]
    return s if cascade is None else np.where(is_unsure(x.sure[cascade[0]], cascade[1]), s, np.inf)


def ranked_pair(a: Scored, b: Scored, score: str, cascade: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """The cascaded score of two sets for an AUROC: a settled row ranks above every scored one,
    settled rows among themselves by the cascade measure (the runtime's order of sureness)."""
    if cascade is None:
        return a.scores[score], b.scores[score]
    measure, bound = cascade
    sa, sb = a.scores[score], b.scores[score]
    top = float(np.max(np.concatenate([sa, sb]))) + 1.0
    sure = np.concatenate([a.sure[measure], b.sure[measure]])
    lo, span = float(sure.min()), float(np.ptp(sure)) + 1.0

    def rank(x: Scored, s: np.ndarray) -> np.ndarray:
        settled = ~is_unsure(x.sure[measure], bound)
        return np.where(settled, top + (x.sure[measure] - lo) / span, s)

    return rank(a, sa), rank(b, sb)


def cascade_options(score: str, t: float, dev_in: Scored, dev_oos: Scored, s: AbstainSettings) -> dict:
    """{cascade measure: {bound, extra embedder share on in-scope dev, dev AUROC}} of an embedder score."""
    out = {}
    for measure in (c for c in CASCADE_MEASURES if c in dev_in.sure):
        bound = cascade_bound(dev_oos.sure[measure], is_unsure(dev_oos.scores[score], t), s.cascade_loss)
        extra = float(np.mean(is_unsure(dev_in.sure[measure], bound) & ~dev_in.hard))
        dev = auroc(*ranked_pair(dev_in, dev_oos, score, (measure, bound)))
        out[measure] = {"bound": bound, "embedder_extra_share": extra, "dev_auroc": dev}
    return out


def score_row(score: str, dev_in: Scored, correct, dev_oos: Scored, s: AbstainSettings) -> dict:
    """Threshold, cascade (the measure that sends the fewest in-scope dev texts to the embedder),
    cost and dev AUROCs of one score."""
    t = choose_threshold(dev_in.scores[score], correct, dev_oos.scores[score], s.rule)
    cascade, extra, options = None, 0.0, None
    if score in EMBEDDER_SCORES:
        options = cascade_options(score, t, dev_in, dev_oos, s)
        best = min(options, key=lambda c: (options[c]["embedder_extra_share"], -options[c]["dev_auroc"]))
        cascade, extra = (best, options[best]["bound"]), options[best]["embedder_extra_share"]
    return {
        "threshold": float(t),
        "cascade": cascade,
        "cascade_options": options,
        "embedder_extra_share": extra,
        "embedder_extra_share_every_row": float(np.mean(~dev_in.hard)) if score in EMBEDDER_SCORES else 0.0,
        "fits_budget": extra <= s.budget + 1e-12,
        "dev_auroc_every_row": auroc(dev_in.scores[score], dev_oos.scores[score]),
        "dev_auroc": auroc(*ranked_pair(dev_in, dev_oos, score, cascade)),
    }


def test_figures(row: dict, score: str, test_in: Scored, test_oos: Scored) -> dict:
    """Test AUROC and out-of-scope recall at the dev threshold, with the cascade and on every row."""
    c, t = row["cascade"], row["threshold"]
    return {
        "test_auroc": auroc(*ranked_pair(test_in, test_oos, score, c)),
        "test_auroc_every_row": auroc(test_in.scores[score], test_oos.scores[score]),
        "test_oos_recall": float(np.mean(is_unsure(cascaded(test_oos, score, c), t))),
        "test_oos_recall_every_row": float(np.mean(is_unsure(test_oos.scores[score], t))),
    }


def calibrate_abstain(r, ckpt, oos: OutOfScopeTexts, settings: AbstainSettings, log):
    """(manifest Abstain, metrics, {file role: array to ship}) of the checkpoint's out-of-scope texts."""
    train_emb = r.embed(oos.train) if oos.train else None
    full_train_emb = train_emb
    if train_emb is not None and settings.knn_max_rows and oos.train_labels:
        train_emb = train_emb[stratified_rows(oos.train_labels, settings.knn_max_rows, ckpt.info.seed)]
    stats = fit_features(r, oos, ckpt.info.labels)
    dev_in, dev_oos = (every_score(r, t, train_emb, stats) for t in (ckpt.dev.texts, oos.dev))
    correct = dev_in.labels == ckpt.dev.gold
    table = {sc: score_row(sc, dev_in, correct, dev_oos, settings) for sc in dev_in.scores}
    test_in = test_oos = None
    if ckpt.test is not None and oos.test:
        test_in, test_oos = (every_score(r, t, train_emb, stats) for t in (ckpt.test.texts, oos.test))
        for sc, row in table.items():
            row.update(test_figures(row, sc, test_in, test_oos))
    knn_sizes = None
    if full_train_emb is not None and oos.train_labels:
        test_pair = (test_in.embeddings, test_oos.embeddings) if test_in is not None else None
        knn_sizes = size_table(
            full_train_emb, oos.train_labels, (dev_in.embeddings, dev_oos.embeddings), test_pair
        )
    chosen = settings.score
    if chosen == "auto":
        fits = [sc for sc in table if table[sc]["fits_budget"]]
        chosen = max(fits, key=lambda sc: table[sc]["dev_auroc"])
    if chosen not in table:
        raise ExportError(f"abstain score {chosen!r} needs the checkpoint's train.jsonl and its labels")
    row = table[chosen]
    _log_table(table, chosen, settings, log)
    c = row["cascade"]
    dev_point = operating_point(
        cascaded(dev_in, chosen, c), correct, cascaded(dev_oos, chosen, c), row["threshold"]
    )
    log(
        f"      abstain score {chosen} (rule {settings.rule}): threshold {row['threshold']:.4g}; dev out-of-scope recall "
        f"{100 * dev_point['oos_recall']:.1f}%, in-scope accuracy {100 * dev_point['inscope_accuracy']:.2f}% "
        f"(abstain off {100 * correct.mean():.2f}%)"
    )
    dev = {"auroc": row["dev_auroc"], **dev_point, "inscope_accuracy_off": float(correct.mean())}
    cascade = Cascade(*c) if c is not None else None
    abstain = Abstain(chosen, row["threshold"], settings.fallback_label, _chosen_by(settings), dev, cascade)
    metrics = {
        "scores": table,
        "chosen": chosen,
        "rule": settings.rule,
        "budget": settings.budget,
        "cascade_loss": settings.cascade_loss,
        "knn_max_rows": settings.knn_max_rows,
        "knn_sizes": knn_sizes,
        "dev": dev,
        "dev_curve": dev_curve(cascaded(dev_in, chosen, c), correct, cascaded(dev_oos, chosen, c)),
        "rows": {"dev_in": len(ckpt.dev.texts), "dev_oos": len(oos.dev), "test_oos": len(oos.test or [])},
        "out_of_scope": ckpt.info.out_of_scope,  # how the checkpoint chose them (unknown labels, seed)
    }
    ship = {}
    if chosen == "knn":
        ship["train_embeddings"] = train_emb
    if "mahalanobis" in (chosen, c[0] if c else None):
        ship["feature_whitener"], ship["feature_means"] = stats
    return abstain, metrics, ship


def _log_table(table: dict, chosen: str, settings: AbstainSettings, log) -> None:
    for sc, row in sorted(table.items(), key=lambda x: -x[1]["dev_auroc"]):
        c = row["cascade"]
        cost = f", embeds {100 * row['embedder_extra_share']:.1f}% more (cascade on {c[0]})" if c else ""
        over = "" if row["fits_budget"] else f" (over the {100 * settings.budget:.0f}% budget)"
        test = f", test {row['test_auroc']:.4f}" if "test_auroc" in row else ""
        log(f"      abstain {sc:<11} dev AUROC {row['dev_auroc']:.4f}{test}{cost}{over}")


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
