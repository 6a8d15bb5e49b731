"""The variance gate and the fusion rules: one example worked by hand, then properties.

Worked example: labels A, B, C; k = 2; threshold 0.0625.

Sample 1: logits [2.0, 1.5, 1.0], cos [0.25, 0.5, 0.875].
  top-2 logits [2.0, 1.5], mean 1.75, variance ((0.25)^2 + (0.25)^2) / 2 = 0.0625 <= 0.0625: hard
  (the gate is "at or below", and every number here is exact in binary floating point).
  cos^2 = [0.0625, 0.25, 0.765625]
  logits_cos, p=2, scope all:  [2.0*0.0625, 1.5*0.25, 1.0*0.765625] = [0.125, 0.375, 0.765625] -> C
  logits_cos, p=2, scope topk: C is outside the top-2 -> [0.125, 0.375, -inf]                  -> B
  softmax(logits) = [e^2, e^1.5, e^1] / 14.589027 = [0.506480, 0.307196, 0.186324]
  softmax_cos, p=2, scope all:  [0.506480*0.0625, 0.307196*0.25, 0.186324*0.765625]
                              = [0.031655, 0.076799, 0.142654]                                 -> C
  softmax_cos, p=2, scope topk: [0.031655, 0.076799, -inf]                                     -> B
  p = 0 (cos^0 = 1): the classifier's order stands                                            -> A

Sample 2: logits [3.0, 0.0, -1.0]: top-2 [3.0, 0.0], mean 1.5, variance 1.5^2 = 2.25 > 0.0625: easy,
  so LRSL keeps the classifier's A whatever the similarities say.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lrsl_rt.fusion import Fusion, confidence, fuse, parse_fusion, rerank, softmax
from lrsl_rt.gate import is_hard, topk_indices, topk_variance
from lrsl_rt.tuning import choose_fusion

LOGITS = np.array([[2.0, 1.5, 1.0], [3.0, 0.0, -1.0]])
COS = np.array([[0.25, 0.5, 0.875], [0.9, 0.1, 0.1]])
K, THRESHOLD = 2, 0.0625
A, B, C = 0, 1, 2


def lrsl(logits, cos, fusion, k, threshold):
    """The Reranker's composition on arrays: gate, then fusion on the hard rows only."""
    pred = np.argmax(logits, axis=1)
    hard = is_hard(logits, k, threshold)
    if hard.any():
        pred[hard] = rerank(logits[hard], cos[hard], fusion, k)
    return pred


def test_gate_worked_example():
    np.testing.assert_array_equal(topk_indices(LOGITS, K), [[A, B], [A, B]])
    np.testing.assert_array_equal(topk_variance(LOGITS, K), [0.0625, 2.25])
    np.testing.assert_array_equal(is_hard(LOGITS, K, THRESHOLD), [True, False])
    np.testing.assert_array_equal(is_hard(LOGITS, K, 0.0624), [False, False])


@pytest.mark.parametrize(
    ("rule", "scope", "scores", "label"),
    [
        ("logits_cos", "all", [0.125, 0.375, 0.765625], C),
        ("logits_cos", "topk", [0.125, 0.375, -np.inf], B),
        ("softmax_cos", "all", [0.031655, 0.076799, 0.142654], C),
        ("softmax_cos", "topk", [0.031655, 0.076799, -np.inf], B),
    ],
)
def test_fusion_worked_example(rule, scope, scores, label):
    fusion = Fusion(rule, 2, scope)
    got = fuse(LOGITS[:1], COS[:1], fusion, K)[0]
    np.testing.assert_allclose(got, scores, atol=1e-6)
    assert rerank(LOGITS[:1], COS[:1], fusion, K)[0] == label
    # composed with the gate: sample 1 is hard and reranked, sample 2 is easy and keeps A
    np.testing.assert_array_equal(lrsl(LOGITS, COS, fusion, K, THRESHOLD), [label, A])


def test_softmax_worked_example():
    np.testing.assert_allclose(softmax(LOGITS[:1])[0], [0.506480, 0.307196, 0.186324], atol=1e-6)


def test_confidence_worked_example():
    """The score of a record: softmax of its final scores at the best one; -inf (outside a top-k scope) is 0.

    Easy sample 2, logits [3, 0, -1]: e^0 / (e^0 + e^-3 + e^-4) = 0.936240.
    Hard sample 1, logits_cos topk fused [0.125, 0.375, -inf]: e^0.375 / (e^0.125 + e^0.375) = 0.562177.
    """
    np.testing.assert_allclose(confidence(LOGITS[1:]), [0.936240], atol=1e-6)
    fused = fuse(LOGITS[:1], COS[:1], Fusion("logits_cos", 2, "topk"), K)
    np.testing.assert_allclose(confidence(fused), [0.562177], atol=1e-6)


@pytest.mark.parametrize("rule", ["logits_cos", "softmax_cos"])
@pytest.mark.parametrize("scope", ["all", "topk"])
def test_p0_keeps_classifier_order(rule, scope):
    assert rerank(LOGITS[:1], COS[:1], Fusion(rule, 0, scope), K)[0] == A


def test_parse_fusion_round_trip_and_errors():
    assert parse_fusion("logits_cos:2") == Fusion("logits_cos", 2, "all")
    assert parse_fusion(" softmax_cos:4:topk ") == Fusion("softmax_cos", 4, "topk")
    for f in (Fusion("logits_cos", 0, "topk"), Fusion("softmax_cos", 8, "all")):
        assert parse_fusion(f.spec) == f
    with pytest.raises(ValueError, match=r"'logits\*cos\^2': expected RULE:P\[:SCOPE\]"):
        parse_fusion("logits*cos^2")
    with pytest.raises(ValueError, match=r"exponent 'two' is not an integer"):
        parse_fusion("logits_cos:two")
    with pytest.raises(ValueError, match=r"fusion rule must be one of"):
        parse_fusion("cosine:2")
    with pytest.raises(ValueError, match=r"fusion scope must be one of"):
        parse_fusion("logits_cos:2:some")


def test_choose_fusion_keeps_a_fixed_rule_and_still_reports_the_table():
    """Hand example above, sample 1 hard (gold C): scope all picks C, scope topk picks B.
    Choosing freely takes a rule that gets C; fixing a topk rule keeps it although it is wrong."""
    gold = np.array([C, A])
    hard = is_hard(LOGITS, K, THRESHOLD)
    chosen, table = choose_fusion(LOGITS, COS, gold, hard, K, p_grid=(2,))
    assert chosen.scope == "all" and rerank(LOGITS[:1], COS[:1], chosen, K)[0] == C
    fixed = Fusion("softmax_cos", 2, "topk")
    kept, table_fixed = choose_fusion(LOGITS, COS, gold, hard, K, p_grid=(2,), fixed=fixed)
    assert kept == fixed and table_fixed == table
    assert {r["name"]: r["accuracy"] for r in table}[fixed.name] == 0.5
    odd = Fusion("logits_cos", 5, "all")  # outside the grid: added to the table
    kept, table_odd = choose_fusion(LOGITS, COS, gold, hard, K, p_grid=(2,), fixed=odd)
    assert kept == odd and table_odd[-1]["name"] == odd.name and len(table_odd) == len(table) + 1


@pytest.mark.parametrize("n_b, n_c, switch", [(5, 1, False), (9, 0, True), (4, 0, True), (3, 0, False)])
def test_choose_fusion_replaces_the_incumbent_only_on_significant_evidence(n_b, n_c, switch):
    """Every sample is sample 1 of the hand example (hard): scope all picks C, scope topk picks B.
    With n_b samples of gold B and n_c of gold C, a topk rule beats the incumbent logits*cos^2 [all]
    on b = n_b samples and loses w = n_c: z = (b - w) / sqrt(b + w).
    5/1: z = 4 / sqrt(6) = 1.63 < 2, kept although topk is right on 5 of 6 samples;
    9/0: z = 3 -> switched; 4/0: z = 2 -> switched (at the bound); 3/0: z = 1.73 -> kept."""
    n = n_b + n_c
    logits, cos = np.tile(LOGITS[:1], (n, 1)), np.tile(COS[:1], (n, 1))
    gold = np.array([B] * n_b + [C] * n_c)
    hard = is_hard(logits, K, THRESHOLD)
    assert hard.all()
    chosen, table = choose_fusion(logits, cos, gold, hard, K, p_grid=(2,))
    row = {r["name"]: r for r in table}["logits*cos^2 [topk]"]
    assert (row["gain"], row["discordant"]) == (n_b - n_c, n)
    assert row["z"] == pytest.approx((n_b - n_c) / np.sqrt(n))
    assert chosen == (Fusion("logits_cos", 2, "topk") if switch else Fusion("logits_cos", 2, "all"))
    incumbent = Fusion("softmax_cos", 2, "topk")  # an incumbent that is right on the B samples
    chosen, _ = choose_fusion(logits, cos, gold, hard, K, p_grid=(2,), incumbent=incumbent)
    assert chosen == incumbent


def test_fusion_rejects_bad_settings():
    with pytest.raises(ValueError, match="rule"):
        Fusion("cos_only", 2, "all")
    with pytest.raises(ValueError, match="scope"):
        Fusion("logits_cos", 2, "top3")
    with pytest.raises(ValueError, match="exponent"):
        Fusion("logits_cos", 1.5, "all")
    with pytest.raises(ValueError, match="same shape"):
        fuse(LOGITS, COS[:1], Fusion(), K)


# ---- properties ----------------------------------------------------------------------------------
finite = st.floats(-30, 30, allow_nan=False, allow_infinity=False)
cosine = st.floats(-1, 1, allow_nan=False, allow_infinity=False)


@st.composite
def problems(draw):
    """(logits, cos, k) with 2..8 labels and 1..6 samples."""
    n, n_labels = draw(st.integers(1, 6)), draw(st.integers(2, 8))
    logits = draw(arrays(np.float64, (n, n_labels), elements=finite))
    cos = draw(arrays(np.float64, (n, n_labels), elements=cosine))
    return logits, cos, draw(st.integers(2, n_labels))


fusions = st.builds(
    Fusion,
    st.sampled_from(["logits_cos", "softmax_cos"]),
    st.integers(0, 8),
    st.sampled_from(["all", "topk"]),
)


@settings(max_examples=150, deadline=None)
@given(problems())
def test_variance_is_nonnegative_and_shift_invariant(problem):
    logits, _, k = problem
    v = topk_variance(logits, k)
    assert v.shape == (len(logits),)
    assert (v >= 0).all()
    np.testing.assert_allclose(topk_variance(logits + 7.0, k), v, atol=1e-9)


@settings(max_examples=150, deadline=None)
@given(problems())
def test_topk_indices_are_best_first(problem):
    logits, _, k = problem
    top = topk_indices(logits, k)
    vals = np.take_along_axis(logits, top, axis=1)
    assert (np.diff(vals, axis=1) <= 0).all()
    assert (vals[:, -1:] >= np.sort(logits, axis=1)[:, -k:][:, :1]).all()


@settings(max_examples=150, deadline=None)
@given(problems(), fusions)
def test_scope_topk_never_picks_outside_topk(problem, fusion):
    logits, cos, k = problem
    fusion = Fusion(fusion.rule, fusion.p, "topk")
    picked = rerank(logits, cos, fusion, k)
    top = topk_indices(logits, k)
    assert all(picked[i] in top[i] for i in range(len(picked)))


@settings(max_examples=150, deadline=None)
@given(problems(), st.sampled_from(["all", "topk"]))
def test_p0_logits_cos_is_argmax_of_logits(problem, scope):
    logits, cos, k = problem
    np.testing.assert_array_equal(
        rerank(logits, cos, Fusion("logits_cos", 0, scope), k), np.argmax(logits, axis=1)
    )


@settings(max_examples=150, deadline=None)
@given(problems(), fusions)
def test_unit_similarities_change_nothing(problem, fusion):
    """cos = 1 for every label: cos^p = 1, so the fusion ranks like its base (logits or softmax)."""
    logits, _, k = problem
    scores = fuse(logits, np.ones_like(logits), fusion, k)
    base = logits if fusion.rule == "logits_cos" else softmax(logits)
    np.testing.assert_array_equal(
        np.isfinite(scores).sum(axis=1), logits.shape[1] if fusion.scope == "all" else k
    )
    np.testing.assert_allclose(
        np.where(np.isfinite(scores), scores, 0), np.where(np.isfinite(scores), base, 0)
    )


@settings(max_examples=150, deadline=None)
@given(problems(), st.floats(0, 50), st.floats(0, 50))
def test_gate_is_monotone_in_threshold(problem, t1, t2):
    logits, _, k = problem
    lo, hi = sorted((t1, t2))
    assert (is_hard(logits, k, lo) <= is_hard(logits, k, hi)).all()


def test_easy_samples_keep_the_classifier_label(tiny_bundle):
    """Through the Reranker on a tiny bundle, with the threshold at the median top-k variance so that
    some texts are hard and some easy: the easy ones keep the classifier's argmax and are not
    reranked; the hard ones get the argmax of the fusion of their logits and similarities."""
    import dataclasses

    from tiny_models import synthetic_dataset

    from lrsl_rt import Reranker

    r = Reranker.from_bundle(tiny_bundle, threads=1)
    texts = synthetic_dataset(6, seed=3)[0]
    logits = r.logits(texts)
    threshold = float(np.median(topk_variance(logits, r.k)))
    manifest = dataclasses.replace(r.manifest, threshold=threshold)
    r = Reranker(manifest, r.tokenizer, r.classifier, r.embedder, r.label_embeddings, batch_size=r.batch_size)
    preds = r.predict(texts)
    hard = np.array([p.hard for p in preds])
    assert hard.any() and (~hard).any()
    np.testing.assert_array_equal(hard, is_hard(logits, r.k, threshold))
    labels = np.array([p.label_id for p in preds])
    np.testing.assert_array_equal(labels[~hard], np.argmax(logits, axis=1)[~hard])
    assert not any(p.reranked for p in np.array(preds, dtype=object)[~hard])
    sims = r.similarities([t for t, h in zip(texts, hard, strict=True) if h])
    np.testing.assert_array_equal(labels[hard], np.argmax(fuse(logits[hard], sims, r.fusion, r.k), axis=1))


@settings(max_examples=100, deadline=None)
@given(problems(), fusions)
def test_confidence_is_a_probability_of_the_chosen_label(problem, fusion):
    logits, cos, k = problem
    scores = fuse(logits, cos, fusion, k)
    conf = confidence(scores)
    assert ((conf > 0) & (conf <= 1)).all()
    rows = np.arange(len(scores))
    np.testing.assert_allclose(conf, softmax(scores)[rows, np.argmax(scores, axis=1)])
