"""The abstain decision at the classifier's cost: the cascade, kNN by partial selection, the
classifier-feature (Mahalanobis) score -- by hand, against a second computation, and through real bundles."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from tiny_models import OUT_OF_SCOPE

from export.abstain import AbstainSettings, Scored, cascaded, score_row
from lrsl_rt.abstain import (
    cascade_bound,
    cascade_skips,
    fit_mahalanobis,
    knn_score,
    mahalanobis_score,
)
from lrsl_rt.errors import BundleError
from lrsl_rt.manifest import Abstain, Cascade, Manifest, read_manifest


# ---- by hand ---------------------------------------------------------------------------------------
def test_cascade_bound_lets_at_most_the_set_share_of_caught_texts_escape():
    sure = [0.2, 0.5, 0.9, 0.95]
    caught = [True, True, False, True]
    assert cascade_bound(sure, caught, 0.25) == 0.5  # only 0.95 (caught) escapes; 0.9 was never caught
    assert cascade_bound(sure, caught, 0.0) == 0.95  # nothing caught may escape: skip above the top one
    assert cascade_bound(sure, caught, 0.75) == pytest.approx(0.2 - 1.0)  # all may escape: below every text
    # the rows at the bound are scored: skipping is strictly above
    assert cascade_skips(np.array([0.5, 0.51]), 0.5).tolist() == [False, True]


def test_score_row_sets_threshold_then_bound_and_counts_the_extra_embedder_share():
    """Dev by hand: in-scope texts i1..i4, out-of-scope o1..o3 (score: knn, larger = in scope).

    in:  knn [0.9, 0.8, 0.7, 0.3], classifier sureness [0.99, 0.97, 0.6, 0.4], hard [F, F, F, T], all correct
    oos: knn [0.2, 0.25, 0.6],     sureness            [0.3, 0.98, 0.5]
    drop:30 -> threshold 0.6 (abstaining on i4 costs 25 points <= 30; 0.7 would cost 50): catches all three.
    cascade_loss 0.34 (one of three may escape): caught sureness [0.98, 0.5, 0.3] -> bound 0.5.
    Rows scored: sureness <= 0.5 -> in: i4 only, already hard: no extra embedder share; oos: o1, o3.
    For the AUROC a settled row ranks above every scored one (top = 0.9 + 1), settled rows by their
    sureness: in [2.308, 2.296, 2.078, 0.3], oos [0.2, 2.302, 0.6]; over the 12 (oos, in) pairs
    o1 wins 4, o2 (sureness 0.98) only against i1 (0.99), o3 wins 3: 8 / 12.
    """
    dev_in = Scored(
        {"knn": np.array([0.9, 0.8, 0.7, 0.3])},
        np.zeros(4, int),
        {"max_prob": np.array([0.99, 0.97, 0.6, 0.4])},
        np.array([False, False, False, True]),
    )
    dev_oos = Scored(
        {"knn": np.array([0.2, 0.25, 0.6])},
        np.zeros(3, int),
        {"max_prob": np.array([0.3, 0.98, 0.5])},
        np.zeros(3, bool),
    )
    row = score_row(
        "knn", dev_in, np.ones(4, bool), dev_oos, AbstainSettings(rule="drop:30", cascade_loss=0.34)
    )
    assert row["threshold"] == 0.6 and row["cascade"] == ("max_prob", 0.5)
    assert row["embedder_extra_share"] == 0.0 and row["embedder_extra_share_every_row"] == 0.75
    assert row["fits_budget"] and row["dev_auroc"] == pytest.approx(8 / 12)
    assert row["dev_auroc_every_row"] == pytest.approx(11 / 12)  # o3 (0.6) beats only i4 (0.3)
    assert cascaded(dev_oos, "knn", ("max_prob", 0.5)).tolist() == [0.2, np.inf, 0.6]


def test_a_logit_score_has_no_cascade_and_costs_no_embedder_time():
    x = Scored(
        {"max_prob": np.array([0.9, 0.4])},
        np.zeros(2, int),
        {"max_prob": np.array([0.9, 0.4])},
        np.zeros(2, bool),
    )
    y = Scored(
        {"max_prob": np.array([0.3])}, np.zeros(1, int), {"max_prob": np.array([0.3])}, np.zeros(1, bool)
    )
    row = score_row("max_prob", x, np.ones(2, bool), y, AbstainSettings())
    assert row["cascade"] is None and row["embedder_extra_share"] == 0.0 and row["fits_budget"]


def test_mahalanobis_with_identity_covariance_is_the_squared_distance_to_the_nearest_mean():
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.normal(0, 1, (400, 2)), rng.normal(0, 1, (400, 2)) + [6.0, 0.0]])
    y = np.repeat([0, 1], 400)
    w, means = fit_mahalanobis(f, y, 2)
    # the pooled within-class covariance is about the identity: W about the identity too
    assert np.allclose(w @ w.T, np.eye(2), atol=0.15)
    s = mahalanobis_score(np.array([[1.0, 0.0], [3.0, 0.0]]), w, means)
    assert s[0] > s[1]  # (3, 0) lies between the classes: far from both means
    exact = mahalanobis_score(np.array([[1.0, 0.0]]), np.eye(2), np.array([[0.0, 0.0], [6.0, 0.0]]))
    assert exact.tolist() == [-1.0]


# ---- parity with a second computation ----------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 10, 50])
def test_knn_by_partial_selection_equals_the_mean_of_the_sorted_top_n(n):
    rng = np.random.default_rng(n)
    train = rng.normal(size=(200, 16)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    x = rng.normal(size=(7, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ train.T
    want = np.sort(sims, axis=1)[:, -n:].mean(axis=1)
    assert np.allclose(knn_score(x, train, n=n), want, atol=1e-6)
    assert knn_score(x[:0], train).shape == (0,)


def test_the_features_output_equals_pytorchs_last_hidden_state_at_the_first_token(tiny_checkpoint, tmp_path):
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from export import onnx_export as ox

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint / "classifier")
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_checkpoint / "classifier", attn_implementation="eager"
    ).eval()
    names = ox.input_names(model, tok)
    graph = ox.ClassifierFeaturesGraph(model, names).eval()
    path = ox.export_onnx(graph, tok, tmp_path / "clf.onnx", ("logits", "features"), 32)
    texts = ["card not here", "a much longer text about a transfer that never arrived at all", "é 🙂"]
    batch = ox.encode(tok, texts, names, 32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, feats = sess.run(["logits", "features"], batch)
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)
    assert np.allclose(feats, out.hidden_states[-1][:, 0].numpy(), atol=1e-4)
    assert np.allclose(logits, out.logits.numpy(), atol=1e-4)


# ---- through real bundles ----------------------------------------------------------------------------
class CountingSession:
    """The real embedder session, counting the rows it is run on."""

    def __init__(self, session):
        self.session, self.rows = session, 0

    def run(self, arrays):
        self.rows += len(arrays["input_ids"])
        return self.session.run(arrays)

    def __getattr__(self, name):
        return getattr(self.session, name)


def _knn_reranker(bundle, cascade):
    from lrsl_rt import Reranker

    r = Reranker.from_bundle(bundle)
    train = r.embed(["card not here", "my transfer failed", "top up by card", "exchange rate today"])
    a = Abstain("knn", 0.5, "out_of_scope", "fixed", {}, cascade)
    m = replace(r.manifest, abstain=a)
    counting = CountingSession(r.embedder)
    out = Reranker(m, r.tokenizer, r.classifier, counting, r.label_embeddings, train_embeddings=train)
    return out, counting


def test_the_cascade_scores_only_unsure_rows_and_embeds_them_with_the_hard_ones_once(
    tiny_bundle_oos, tiny_data
):
    texts = tiny_data[2][0] + OUT_OF_SCOPE
    every, _ = _knn_reranker(tiny_bundle_oos, None)
    full = every.predict(texts)
    logits = every.logits(texts)
    p = np.exp(logits - logits.max(1, keepdims=True))
    sure = (p / p.sum(1, keepdims=True)).max(1)
    bound = float(np.median(sure))
    r, counting = _knn_reranker(tiny_bundle_oos, Cascade("max_prob", bound))
    preds = r.predict(texts)
    skipped = sure > bound
    assert 0 < skipped.sum() < len(texts)
    hard = np.array([q.hard for q in preds])
    assert counting.rows == int((~skipped | hard).sum())  # one embedder pass: unsure rows plus hard rows
    for q, f, s in zip(preds, full, skipped, strict=True):
        assert q.out_of_scope == (False if s else f.out_of_scope)
        assert q.classifier_label == f.classifier_label and q.hard == f.hard
        if not q.out_of_scope and not f.out_of_scope:
            assert q.label == f.label  # the rerank of hard rows is unchanged by the cascade


def test_a_bound_above_every_sureness_gives_the_every_row_decision(tiny_bundle_oos, tiny_data):
    texts = tiny_data[2][0] + OUT_OF_SCOPE
    every, _ = _knn_reranker(tiny_bundle_oos, None)
    r, counting = _knn_reranker(tiny_bundle_oos, Cascade("max_prob", 1.5))
    assert [p.to_dict() for p in r.predict(texts)] == [p.to_dict() for p in every.predict(texts)]
    assert counting.rows == len(texts)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_export_with_mahalanobis_ships_the_features_output_and_its_matrices(
    tiny_checkpoint, tmp_path, tiny_data, precision
):
    import shutil

    from tiny_models import synthetic_dataset

    from export import build_bundle
    from lrsl_rt import Reranker
    from train.checkpoint import write_jsonl

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    write_jsonl(ckpt / "dev_oos.jsonl", OUT_OF_SCOPE[:4], ["weather"] * 4)
    write_jsonl(ckpt / "test_oos.jsonl", OUT_OF_SCOPE[2:], ["weather"] * 4)
    write_jsonl(ckpt / "train.jsonl", *synthetic_dataset(5, seed=7))
    write_jsonl(ckpt / "calib.jsonl", *synthetic_dataset(5, seed=8))  # int8: the static preset on VNNI CPUs
    out = build_bundle(
        ckpt,
        tmp_path / "b",
        precision=precision,
        max_accuracy_drop=1.0,
        abstain=AbstainSettings(score="mahalanobis"),
        log=lambda m: None,
    )
    m = read_manifest(out)
    assert m.abstain.score == "mahalanobis" and m.abstain.cascade is None
    assert {"feature_whitener", "feature_means"} <= set(m.files) and "train_embeddings" not in m.files
    r = Reranker.from_bundle(out)
    assert "features" in r.classifier.outputs
    preds = r.predict(tiny_data[2][0] + OUT_OF_SCOPE)
    assert all(p.out_of_scope in (True, False) for p in preds)
    table = m.metrics["abstain"]["scores"]
    assert "mahalanobis" in table and table["mahalanobis"]["embedder_extra_share"] == 0.0
    # the same scores as a second computation from the graph's features and the shipped matrices
    w, mu = np.load(out / "feature_whitener.npy"), np.load(out / "feature_means.npy")
    rows = r.tokenizer.tokenize(OUT_OF_SCOPE)
    _, feats = r.run_batched("classifier", rows, outputs=("logits", "features"))
    maha = mahalanobis_score(feats, w, mu)
    assert [p.out_of_scope for p in r.predict(OUT_OF_SCOPE)] == (maha <= m.abstain.threshold).tolist()
    # a knn score behind a cascade on the mahalanobis score: only the rows at or below its bound are embedded
    bound = float(np.median(maha))
    a = Abstain("knn", 0.5, "out_of_scope", "fixed", {}, Cascade("mahalanobis", bound))
    counting = CountingSession(r.embedder)
    knn = Reranker(
        replace(m, abstain=a), r.tokenizer, r.classifier, counting, r.label_embeddings,
        train_embeddings=r.embed(tiny_data[0][0][:8]), feature_stats=(w, mu),
    )  # fmt: skip
    preds = knn.predict(OUT_OF_SCOPE)
    hard = np.array([p.hard for p in preds])
    assert counting.rows == int(((maha <= bound) | hard).sum())
    assert not any(p.out_of_scope for p, x in zip(preds, maha, strict=True) if x > bound)


def test_manifest_refuses_a_cascade_with_an_unknown_key_or_a_non_finite_bound(tiny_bundle_oos):
    d = json.loads((tiny_bundle_oos / "manifest.json").read_text())
    measure = (d["abstain"].get("cascade") or {}).get("measure", "max_prob")  # its files stay the same
    d["abstain"] = {**d["abstain"], "cascade": {"measure": measure, "bound": 0.9, "extra": 1}}
    with pytest.raises(BundleError, match=r"abstain.cascade: unknown key\(s\) \['extra'\]"):
        Manifest.from_dict(d)
    d["abstain"]["cascade"] = {"measure": measure, "bound": float("inf")}
    with pytest.raises(BundleError, match="abstain.cascade.bound"):
        Manifest.from_dict(d)
    d["abstain"]["cascade"] = {"measure": measure, "bound": 0.9}
    assert Manifest.from_dict(d).abstain.cascade == Cascade(measure, 0.9)


def test_knn_max_rows_ships_a_stratified_subsample_and_the_size_table(tiny_checkpoint, tmp_path):
    import shutil

    from tiny_models import synthetic_dataset

    from export import build_bundle
    from export.knn_rows import stratified_rows
    from train.checkpoint import write_jsonl

    labels = ["a"] * 6 + ["b"] * 3 + ["c"]
    keep = stratified_rows(labels, 5, seed=1)
    assert len(keep) == 5 and {labels[i] for i in keep} == {"a", "b", "c"}  # each class at least once
    assert keep == stratified_rows(labels, 5, seed=1) and stratified_rows(labels, 50) == list(range(10))
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    write_jsonl(ckpt / "dev_oos.jsonl", OUT_OF_SCOPE[:4], ["weather"] * 4)
    write_jsonl(ckpt / "train.jsonl", *synthetic_dataset(5, seed=7))  # 5 per class, 4 classes
    out = build_bundle(
        ckpt, tmp_path / "b", precision="fp32", max_accuracy_drop=1.0,
        abstain=AbstainSettings(score="knn", knn_max_rows=8), log=lambda m: None,
    )  # fmt: skip
    m = read_manifest(out)
    assert m.abstain.score == "knn" and m.abstain.cascade is not None
    assert np.load(out / "train_embeddings.npy").shape[0] == 8
    sizes = m.metrics["abstain"]["knn_sizes"]
    assert [s["rows"] for s in sizes] == [20] and 0 <= sizes[0]["dev_auroc"] <= 1  # every size below 20 rows
    # lrsl-rt info says which texts the score runs on
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lrsl_rt", "info", "--bundle", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    c = m.abstain.cascade
    assert f"scored only when {c.measure} <= {c.bound:.6g}" in proc.stdout
