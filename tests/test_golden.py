"""Golden values: what the fp32 bundle of the fixed tiny model answers for four texts.

The tiny base model (``tiny_models.make_tiny_bert``, seed 0), its classification head (seed 1 in
``conftest.tiny_checkpoint``) and the export are deterministic, so the runtime's logits, label
similarities, hard flags and labels for these texts are fixed numbers. A change to tokenization,
pooling, graph export or fusion that moves them fails here even when every parity test still agrees
with itself. Tolerance: 2e-6 absolute, above the 6-decimal rounding of the stored values (the random head's
logits are ~1e-2, so a looser tolerance would hide real changes); fp32 kernels differ far less.

The threshold and the fusion are set here (not the bundle's calibration) so that two texts are hard
and two are easy, and the reranking rule is the same, whatever the calibration does.

Regenerate only after finding out why a value moved (print ``r.logits(TEXTS)``, ``r.similarities(TEXTS)``
and the variances from a test that uses ``tiny_bundle_fp32``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lrsl_rt import Reranker
from lrsl_rt.fusion import Fusion

TEXTS = ["my card is still not here", "exchange rate euro dollar", "why did my top up fail", ""]

# labels: card_arrival, exchange_rate, top_up_failed, lost_card (the random head is nearly flat)
GOLDEN_LOGITS = [
    [0.010917, -0.006871, -0.008679, -0.000108],
    [0.010999, -0.00685, -0.008691, -4.8e-05],
    [0.010978, -0.006742, -0.008668, -0.000106],
    [0.011027, -0.006653, -0.008562, -5.3e-05],
]
GOLDEN_COS = [
    [0.890891, 0.907262, 0.891819, 0.927034],
    [0.845138, 0.933184, 0.887545, 0.870258],
    [0.897566, 0.903988, 0.946863, 0.917383],
    [0.931935, 0.887974, 0.892557, 0.92666],
]
# top-3 variances are 5.3744e-05, 5.4094e-05, 5.3435e-05, 5.3215e-05: texts 2 and 3 fall under this
GOLDEN_THRESHOLD = 5.36e-05
GOLDEN_HARD = [False, False, True, True]
# text 2, top-3 card_arrival, lost_card, exchange_rate: softmax ~ [0.2530, 0.2503, 0.2486] times cos^2
# [0.8057, 0.8416, 0.8172] = [0.2038, 0.2107, 0.2032] -> lost_card; text 3 keeps card_arrival (its highest cos too)
GOLDEN_FUSION = Fusion("softmax_cos", 2, "topk")
GOLDEN_LABELS = ["card_arrival", "card_arrival", "lost_card", "card_arrival"]
# score: softmax of the final scores at the label -- the logits of the easy texts (their classifier_prob);
# for the hard ones the fused scores of the top 3 (the other label is -inf, probability 0), nearly equal: ~1/3
GOLDEN_SCORES = [0.253036, 0.253047, 0.334914, 0.33651]
GOLDEN_CLASSIFIER_PROB = [0.253036, 0.253047, 0.253039, 0.253033]
GOLDEN_FUSED_SCORES = [None, None, 0.210608, 0.21976]


def _reranker(bundle, threshold=None, fusion=None) -> Reranker:
    r = Reranker.from_bundle(bundle, threads=1)
    if threshold is not None:
        r.manifest = dataclasses.replace(r.manifest, threshold=threshold)
    if fusion is not None:
        r.manifest = dataclasses.replace(r.manifest, fusion=fusion)
    return r


def test_golden_logits_and_similarities(tiny_bundle_fp32):
    r = _reranker(tiny_bundle_fp32)
    np.testing.assert_allclose(r.logits(TEXTS), np.array(GOLDEN_LOGITS), atol=2e-6)
    np.testing.assert_allclose(r.similarities(TEXTS), np.array(GOLDEN_COS), atol=2e-6)


def test_golden_predictions(tiny_bundle_fp32):
    r = _reranker(tiny_bundle_fp32, GOLDEN_THRESHOLD, GOLDEN_FUSION)
    preds = r.predict(TEXTS)
    assert [p.hard for p in preds] == GOLDEN_HARD
    assert [p.label for p in preds] == GOLDEN_LABELS
    assert [p.score for p in preds] == pytest.approx(GOLDEN_SCORES, abs=2e-6)
    assert [p.classifier_prob for p in preds] == pytest.approx(GOLDEN_CLASSIFIER_PROB, abs=2e-6)
    assert [p.fused_score is None for p in preds] == [f is None for f in GOLDEN_FUSED_SCORES]
    assert [p.fused_score for p in preds[2:]] == pytest.approx(GOLDEN_FUSED_SCORES[2:], abs=2e-6)
