"""Abstaining: the scores and threshold rules on hand-worked values, the open-intent split, the export's
abstain section, and the record schema through the API and the CLI (abstain off = records as before)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrsl_rt.abstain import (
    auroc,
    choose_threshold,
    knn_score,
    macro_f1,
    operating_point,
    parse_rule,
    scores_of,
)
from lrsl_rt.errors import BundleError, UsageError
from lrsl_rt.fusion import Fusion
from lrsl_rt.manifest import Manifest, read_manifest
from lrsl_rt.rule import decide

ROOT = Path(__file__).resolve().parents[1]
from tiny_models import OUT_OF_SCOPE  # noqa: E402


# ---- scores and rules, by hand -------------------------------------------------------------------
def test_gated_cos_is_the_best_label_cosine_of_hard_rows_and_sure_elsewhere():
    # row 0: top-2 logits 3.0 and 2.8 (variance 0.01 <= 0.5: hard), cosines [0.2, 0.3, 0.1] -> 0.3;
    # row 1: variance 3.0625 > 0.5: easy -> inf (never out of scope)
    logits = np.array([[3.0, 2.8, 0.1], [4.0, 0.0, 0.5]])
    cos = np.array([[0.2, 0.3, 0.1], [0.9, 0.1, 0.1]])
    d = decide(logits, cos, 0.5, Fusion(), 2)
    s = scores_of("gated_cos", logits, d, 2)
    assert s[0] == pytest.approx(0.3) and s[1] == np.inf
    assert scores_of("max_cos", logits, d, 2, cos=cos).tolist() == pytest.approx([0.3, 0.9])
    # max_prob of row 1: softmax of [4, 0, 0.5] at 4
    e = np.exp([4.0, 0.0, 0.5])
    assert scores_of("max_prob", logits, d, 2)[1] == pytest.approx(e[0] / e.sum())


def test_knn_is_the_mean_cosine_of_the_nearest_training_texts():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]], dtype=np.float32)
    x = np.array([[1.0, 0.0]], dtype=np.float32)
    # cosines 1, 0, 0.7071: the 2 nearest are 1 and 0.7071
    assert knn_score(x, train, n=2)[0] == pytest.approx((1 + np.sqrt(0.5)) / 2, abs=1e-6)


def test_auroc_counts_ties_half_and_is_one_for_a_perfect_score():
    assert auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert auroc(np.array([0.5]), np.array([0.5])) == 0.5
    assert auroc(np.array([0.1]), np.array([0.9])) == 0.0
    assert auroc(np.array([np.inf, 0.3]), np.array([0.2])) == 1.0


def test_drop_rule_loses_at_most_p_points_of_in_scope_accuracy():
    s_in = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.2, 0.15, 0.1, 0.05, 0.01])
    correct = np.array([True] * 8 + [False] * 2)  # accuracy 0.8
    s_oos = np.array([0.3, 0.25, 0.12, 0.02])
    t = choose_threshold(s_in, correct, s_oos, "drop:20")
    point = operating_point(s_in, correct, s_oos, t)
    assert point["inscope_accuracy"] >= 0.8 - 0.2 - 1e-12
    # one step higher would lose more than 20 points
    higher = min(x for x in np.concatenate([s_in, s_oos]) if x > t)
    assert operating_point(s_in, correct, s_oos, higher)["inscope_accuracy"] < 0.6
    assert t == pytest.approx(0.15)  # abstains on 0.15, 0.1, 0.05, 0.01: two correct ones lost (20 pt)


def test_recall_rule_and_fixed_threshold():
    s_in, correct, s_oos = np.array([0.9, 0.5]), np.array([True, True]), np.array([0.1, 0.2, 0.3, 0.95])
    assert choose_threshold(s_in, correct, s_oos, "recall:0.75") == pytest.approx(0.3)
    assert choose_threshold(s_in, correct, s_oos, "0.42") == 0.42
    assert choose_threshold(s_in, correct, s_oos, "drop:0") == pytest.approx(
        0.3
    )  # below every in-scope score


@pytest.mark.parametrize("bad", ["drop:-1", "recall:0", "recall:1.5", "median", "drop:x"])
def test_bad_threshold_rules_are_refused(bad):
    with pytest.raises(ValueError, match="abstain threshold rule"):
        parse_rule(bad)


def test_macro_f1_counts_the_unknown_class_as_one_more_class():
    gold = np.array([0, 0, 1, 1, -1, -1])
    assert macro_f1(gold, gold) == 1.0
    # every out-of-scope text answered with label 0: class -1 gets F1 0
    assert macro_f1(gold, np.array([0, 0, 1, 1, 0, 0])) == pytest.approx((2 * 2 / 6 + 1 + 0) / 3)


# ---- the open-intent split --------------------------------------------------------------------------
def _csv(path: Path, rows) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows(rows)
    return path


def test_oos_label_keeps_its_rows_out_of_training_and_in_the_oos_splits(tmp_path, tiny_data):
    from train.config import TrainConfig
    from train.splits import load_splits_and_oos

    (tx, ty), (dx, dy), _ = tiny_data
    train = _csv(
        tmp_path / "train.csv", list(zip(tx, ty, strict=True)) + [(t, "oos") for t in OUT_OF_SCOPE[:3]]
    )
    dev = _csv(tmp_path / "dev.csv", list(zip(dx, dy, strict=True)) + [(t, "oos") for t in OUT_OF_SCOPE[3:]])
    cfg = TrainConfig(out="x", train=str(train), dev=str(dev), label_field="category", oos_label="oos")
    labels, tr, dv, _, oos = load_splits_and_oos(cfg, log=lambda s: None)
    assert "oos" not in labels and len(tr) == len(tx) and len(dv) == len(dx)
    assert oos.dev.texts == OUT_OF_SCOPE[3:] and oos.train_rows_left_out == 3


def test_unknown_ratio_is_seeded_and_recorded(tmp_path, tiny_data):
    from train.config import TrainConfig
    from train.data import DataError
    from train.splits import load_splits_and_oos

    (tx, ty), (dx, dy), _ = tiny_data
    train = _csv(tmp_path / "train.csv", zip(tx, ty, strict=True))
    dev = _csv(tmp_path / "dev.csv", zip(dx, dy, strict=True))
    cfg = TrainConfig(
        out="x", train=str(train), dev=str(dev), label_field="category", unknown_ratio=0.25, seed=3
    )
    labels, tr, dv, _, oos = load_splits_and_oos(cfg, log=lambda s: None)
    again = load_splits_and_oos(cfg, log=lambda s: None)[4]
    assert oos.unknown_labels == again.unknown_labels and len(oos.unknown_labels) == 1
    assert set(labels) | set(oos.unknown_labels) == set(ty) and not set(labels) & set(oos.unknown_labels)
    assert set(oos.dev.labels) == set(oos.unknown_labels) and len(dv) + len(oos.dev) == len(dx)
    with pytest.raises(DataError, match="at least 2 are needed"):
        load_splits_and_oos(TrainConfig(**{**cfg.__dict__, "unknown_ratio": 0.75}), log=lambda s: None)


# ---- export and runtime -------------------------------------------------------------------------------
def test_export_writes_an_abstain_section_chosen_by_dev_auroc(tiny_bundle_oos):
    m = read_manifest(tiny_bundle_oos)
    assert m.format_version == 2 and m.abstain is not None
    table = m.metrics["abstain"]["scores"]
    fits = [s for s in table if table[s]["fits_budget"]]
    assert m.abstain.score == max(fits, key=lambda s: table[s]["dev_auroc"])
    assert m.abstain.fallback_label == "out_of_scope" and m.abstain.chosen_by == "drop:1"
    assert {"dev_auroc", "test_auroc"} <= set(table["max_prob"]) and m.metrics["abstain"]["test"][
        "macro_f1"
    ] >= 0


def test_abstain_off_gives_the_records_of_a_bundle_without_abstain(
    tiny_bundle_oos, tiny_bundle_fp32, tiny_data
):
    from lrsl_rt import Reranker

    texts = tiny_data[2][0] + OUT_OF_SCOPE
    plain = [p.to_dict() for p in Reranker.from_bundle(tiny_bundle_fp32).predict(texts)]
    off = [p.to_dict() for p in Reranker.from_bundle(tiny_bundle_oos).predict(texts, abstain=False)]
    assert off == plain
    assert read_manifest(tiny_bundle_fp32).to_dict()["format_version"] == 1


def test_abstained_record_carries_the_fallback_label_and_the_classifier_label(tiny_bundle_oos, tmp_path):
    from lrsl_rt import Reranker

    m = read_manifest(tiny_bundle_oos)
    # fix the threshold above every score: every text is out of scope
    d = json.loads((tiny_bundle_oos / "manifest.json").read_text())
    d = _with_score(d, "max_prob", 1.0)
    r = Reranker.from_bundle(tiny_bundle_oos)
    r = Reranker(
        Manifest.from_dict(d),
        r.tokenizer,
        r.classifier,
        r.embedder,
        r.label_embeddings,
        bundle_dir=tiny_bundle_oos,
    )
    p = r.predict(["card not here"])[0]
    assert p.out_of_scope is True and p.label == m.abstain.fallback_label and p.label_id == -1
    assert p.classifier_label in m.labels and p.reranked is False
    assert p.to_dict()["out_of_scope"] is True
    with pytest.raises(UsageError, match="no abstain calibration"):
        _no_abstain(r).abstains(True)


def _no_abstain(r):
    from dataclasses import replace

    return type(r)(
        replace(r.manifest, abstain=None), r.tokenizer, r.classifier, r.embedder, r.label_embeddings
    )


def test_manifest_refuses_abstain_in_version_1_and_a_fallback_that_is_a_label(tiny_bundle_oos):
    d = json.loads((tiny_bundle_oos / "manifest.json").read_text())
    with pytest.raises(BundleError, match="need format_version 2"):
        Manifest.from_dict({**d, "format_version": 1})
    bad = {**d, "abstain": {**d["abstain"], "fallback_label": d["labels"][0]}}
    with pytest.raises(BundleError, match="fallback_label"):
        Manifest.from_dict(bad)
    with pytest.raises(BundleError, match="train_embeddings"):
        Manifest.from_dict({**_with_score(d, "max_prob", 0.5), "abstain": {**d["abstain"], "score": "knn"}})


def _with_score(d: dict, score: str, threshold: float) -> dict:
    """The manifest with another logit score, no cascade, and only the files that score needs."""
    extra = ("train_embeddings", "feature_whitener", "feature_means")
    files = {k: v for k, v in d["files"].items() if k not in extra}
    abstain = {k: v for k, v in d["abstain"].items() if k != "cascade"}
    return {**d, "files": files, "abstain": {**abstain, "score": score, "threshold": threshold}}


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "lrsl_rt", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_cli_records_abstain_on_by_default_and_off_with_the_flag(tiny_bundle_oos, tmp_path):
    on = _cli(
        "predict", "--bundle", str(tiny_bundle_oos), "--format", "jsonl", "card not here", OUT_OF_SCOPE[0]
    )
    assert on.returncode == 0, on.stderr
    records = [json.loads(x) for x in on.stdout.splitlines()]
    assert [set(r) >= {"out_of_scope"} for r in records] == [True, True]
    off = _cli(
        "predict", "--bundle", str(tiny_bundle_oos), "--no-abstain", "--format", "csv", "card not here"
    )
    assert off.returncode == 0 and "out_of_scope" not in off.stdout.splitlines()[0]
    on_csv = _cli("predict", "--bundle", str(tiny_bundle_oos), "--format", "csv", "card not here")
    assert "out_of_scope" in on_csv.stdout.splitlines()[0].split(",")


def test_cli_eval_reports_out_of_scope_figures(tiny_bundle_oos, tmp_path, tiny_data):
    rows = [{"text": t, "label": y} for t, y in zip(*tiny_data[2], strict=True)]
    rows += [{"text": t, "label": "none"} for t in OUT_OF_SCOPE]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _cli("eval", "--bundle", str(tiny_bundle_oos), "--input", str(path), "--oos-label", "none")
    assert res.returncode == 0, res.stderr
    assert f"out of scope (n={len(OUT_OF_SCOPE)}): recall" in res.stdout
    unknown = _cli("eval", "--bundle", str(tiny_bundle_oos), "--input", str(path))
    assert unknown.returncode == 1 and "label 'none' is not one of the bundle's" in unknown.stderr
