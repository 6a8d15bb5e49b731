"""lrsl_rt.rule.decide: the one LRSL decision, on the hand example of test_gate_fusion.py.

Labels A, B, C; k = 2; threshold 0.0625; fusion logits_cos p=2 scope all.
Sample 1: logits [2.0, 1.5, 1.0], variance 0.0625 <= 0.0625: hard; cos [0.25, 0.5, 0.875]
  -> fused [0.125, 0.375, 0.765625] -> C (the classifier said A).
Sample 2: logits [3.0, 0.0, -1.0], variance 2.25: easy, keeps A; its similarities are never asked for.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lrsl_rt.fusion import Fusion, rerank
from lrsl_rt.gate import is_hard
from lrsl_rt.rule import decide

LOGITS = np.array([[2.0, 1.5, 1.0], [3.0, 0.0, -1.0]])
COS = np.array([[0.25, 0.5, 0.875], [0.9, 0.1, 0.1]])
K, THRESHOLD = 2, 0.0625
A, C = 0, 2


def test_worked_example_asks_similarities_of_the_hard_rows_only():
    asked = []

    def cos_of(idx):
        asked.append(idx.tolist())
        return COS[idx]

    d = decide(LOGITS, cos_of, THRESHOLD, Fusion(), K)
    assert asked == [[0]]
    assert d.labels.tolist() == [C, A] and d.classifier_labels.tolist() == [A, A]
    assert d.hard.tolist() == [True, False] and d.hard_idx.tolist() == [0]
    np.testing.assert_array_equal(d.variance, [0.0625, 2.25])
    np.testing.assert_array_equal(d.cos, COS[:1])
    np.testing.assert_array_equal(d.fused, [[0.125, 0.375, 0.765625]])
    same = decide(LOGITS, COS, THRESHOLD, Fusion(), K)  # all similarities given: the same decision
    for name in ("labels", "classifier_labels", "hard", "variance", "hard_idx", "cos", "fused"):
        np.testing.assert_array_equal(getattr(same, name), getattr(d, name))


def test_no_hard_row_asks_for_nothing():
    def never(idx):
        raise AssertionError("similarities asked for although no row is hard")

    d = decide(LOGITS, never, 0.0, Fusion(), K)
    assert d.labels.tolist() == [A, A] and not d.hard.any()
    assert d.hard_idx.shape == (0,) and d.cos.shape == d.fused.shape == (0, 3)


def test_a_given_mask_replaces_the_threshold():
    d = decide(LOGITS, COS, None, Fusion(), K, hard=np.array([False, True]))
    assert d.hard_idx.tolist() == [1] and d.labels.tolist() == [A, A]
    with pytest.raises(ValueError, match="threshold or a hard mask"):
        decide(LOGITS, COS, None, Fusion(), K)
    with pytest.raises(ValueError, match=r"hard mask has shape \(3,\)"):
        decide(LOGITS, COS, None, Fusion(), K, hard=np.array([True, False, True]))


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, (12, 5), elements=st.floats(-6, 6, width=32)),
    arrays(np.float64, (12, 5), elements=st.floats(-1, 1, width=32)),
    st.floats(0, 4),
    st.sampled_from([Fusion("logits_cos", 2, "all"), Fusion("softmax_cos", 3, "topk")]),
)
def test_decide_is_argmax_outside_the_gate_and_the_fusion_inside(logits, cos, threshold, fusion):
    d = decide(logits, cos, threshold, fusion, 3)
    hard = is_hard(logits, 3, threshold)
    np.testing.assert_array_equal(d.hard, hard)
    np.testing.assert_array_equal(d.labels[~hard], np.argmax(logits[~hard], axis=1))
    if hard.any():
        np.testing.assert_array_equal(d.labels[hard], rerank(logits[hard], cos[hard], fusion, 3))


def test_the_docstring_examples_hold():
    """The worked examples in the docstrings of the rule and the shared command-line helpers."""
    import doctest

    from lrsl_rt import command, progress, rule

    for module in (rule, command, progress):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
