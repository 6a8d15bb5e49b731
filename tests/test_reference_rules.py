"""The dev choice of the fusion starts from the reference's rule for the classifier's kind: a hand-worked example.

Two labels, k=2, every row hard. Row A: logits [-1, -3], cos [0.2, 0.9], gold label 1.

- logits*cos^2 = [-1 * 0.04, -3 * 0.81] = [-0.04, -2.43] -> label 0, wrong (a negative logit
  shrinks towards 0 as its similarity falls, so a low similarity *helps* label 0);
- softmax([-1, -3]) = [0.8808, 0.1192]; times cos^2 = [0.0352, 0.0966] (0.11920 * 0.81 = 0.096554) -> label 1, right.

Row B: logits [2, 1], cos [0.9, 0.2], gold 0: logits*cos^2 = [1.62, 0.04] and softmax*cos^2 =
[0.5921, 0.0108] both give label 0.

Every logits*cos^p of the grid is wrong on A (3 * 0.9^p > 0.2^p for p in 1..8), softmax*cos^1 too
([0.176, 0.107]); softmax*cos^p for p >= 2 is right. So on a dev split of ``a`` rows A and 4 rows B,
the softmax rule gains ``a`` rows over the logits rule and loses none: McNemar z = a / sqrt(a).

- a = 2: z = 1.41 < 2. An encoder classifier (incumbent logits*cos^2) keeps logits*cos^2; a
  decoder-only classifier (incumbent softmax*cos^2, the reference's LLM rule) keeps softmax*cos^2.
  Dev cannot tell them apart, so the kind decides.
- a = 4: z = 2.0 >= 2. Both end with softmax*cos^2: the encoder's incumbent is replaced by the most
  accurate winner, the first of the equally accurate softmax*cos^p (p = 2).
"""

from __future__ import annotations

import numpy as np
import pytest

from lrsl_rt.fusion import Fusion
from lrsl_rt.tuning import REFERENCE_RULES, choose_fusion

ROW_A = ([-1.0, -3.0], [0.2, 0.9], 1)
ROW_B = ([2.0, 1.0], [0.9, 0.2], 0)


def dev(a: int):
    rows = [ROW_A] * a + [ROW_B] * 4
    logits = np.array([r[0] for r in rows])
    cos = np.array([r[1] for r in rows])
    gold = np.array([r[2] for r in rows])
    return logits, cos, gold, np.ones(len(rows), dtype=bool)


def test_the_worked_rows():
    from lrsl_rt.fusion import fuse

    logits, cos, _, _ = dev(1)
    np.testing.assert_allclose(fuse(logits[:1], cos[:1], Fusion("logits_cos", 2), 2), [[-0.04, -2.43]])
    np.testing.assert_allclose(
        fuse(logits[:1], cos[:1], Fusion("softmax_cos", 2), 2), [[0.035232, 0.096554]], atol=1e-6
    )


@pytest.mark.parametrize(
    ("a", "kind", "chosen", "z"),
    [
        (2, "encoder", Fusion("logits_cos", 2), 0.0),
        (2, "decoder", Fusion("softmax_cos", 2), 0.0),
        (4, "encoder", Fusion("softmax_cos", 2), 2.0),
        (4, "decoder", Fusion("softmax_cos", 2), 0.0),
    ],
)
def test_the_kind_picks_the_incumbent(a, kind, chosen, z):
    logits, cos, gold, hard = dev(a)
    got, table = choose_fusion(logits, cos, gold, hard, k=2, incumbent=REFERENCE_RULES[kind])
    assert got == chosen
    row = next(r for r in table if r["fusion"] == chosen.to_dict())
    assert row["z"] == pytest.approx(z)  # against the kind's incumbent: 0 when it is the incumbent
    rival = REFERENCE_RULES["decoder" if kind == "encoder" else "encoder"]
    other = next(r for r in table if r["fusion"] == rival.to_dict())
    assert abs(other["z"]) == pytest.approx(a / np.sqrt(a))  # the other kind's rule, a rows apart
