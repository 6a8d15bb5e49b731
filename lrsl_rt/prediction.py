"""What the Reranker returns for one text: :class:`Prediction`, optionally with an :class:`Explanation`.

``Prediction.score`` is a confidence in [0, 1] with one meaning for every record: the softmax of
the text's final scores, taken at the chosen label (:func:`lrsl_rt.fusion.confidence`). The final
scores are the classifier's logits for an easy sample and the fused scores for a hard one (labels
outside a ``topk`` fusion scope count as probability 0). For an easy sample it equals
``classifier_prob``. A client can threshold it the same way for easy and hard samples.

The raw values keep names that say what they are:

- ``classifier_prob``: the classifier's softmax probability of ``classifier_label``;
- ``fused_score``: the fused score of ``label`` under the bundle's fusion rule (``logit * cos^p``
  for ``logits_cos`` -- any real number --, ``softmax(logit) * cos^p`` for ``softmax_cos``), None for
  an easy sample (the embedder does not run on it). It ranks the labels of this one text only.

Schema change (lrsl-rt 0.1 output): ``score`` of a hard sample used to be the raw fused value; that
value is now ``fused_score``, and the explanation's ``topk_after`` entries name it ``fused_score``.

``reranked`` is True when LRSL changed the classifier's answer (``label != classifier_label``);
a hard sample whose fusion agrees with the classifier has ``hard`` True and ``reranked`` False.

Two fields appear only when the bundle and the call use what they report, so a record of a bundle
without exits or abstain is exactly what earlier versions wrote:

- ``exit_layer``: after how many classifier layers the text's label was decided (an early exit,
  or the classifier's depth when it went through every stage);
- ``out_of_scope``: True when the abstain decision found that the text fits none of the labels;
  ``label`` is then the bundle's fallback label and ``label_id`` -1, while ``classifier_label`` and
  ``score`` keep what the classifier and the rule said.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fusion import confidence

# The fields of an output record and their types, in the order every writer puts them: Prediction.to_dict,
# the CLI's CSV columns (lrsl_rt.io), the Ray job's Arrow schema (lrsl_rt.ray). The one table to change.
RECORD_FIELDS = {
    "label": str,
    "label_id": int,
    "score": float,
    "hard": bool,
    "classifier_label": str,
    "classifier_label_id": int,
    "classifier_prob": float,
    "fused_score": float,  # None for an easy sample
    "reranked": bool,
}
# Present only when the bundle and the call use them, after the fields above.
OPTIONAL_FIELDS = {"exit_layer": int, "out_of_scope": bool}


@dataclass(frozen=True)
class Explanation:
    """Why a sample got its label.

    ``topk_before``: the classifier's top-k labels with their logits, best first.
    ``topk_after``: the k best labels with their fused scores, best first -- None for an easy sample, because the
    embedder only runs on hard samples. ``similarities``: cosine similarity of the text with each of
    the classifier's top-k labels (same order as ``topk_before``), None for an easy sample.
    ``variance``: population variance of the top-k logits; the sample is hard when it is <= ``threshold``.
    """

    variance: float
    threshold: float
    k: int
    topk_before: tuple[tuple[str, float], ...]
    topk_after: tuple[tuple[str, float], ...] | None
    similarities: tuple[tuple[str, float], ...] | None

    def to_dict(self) -> dict:
        def pairs(items, key):
            return None if items is None else [{"label": lab, key: value} for lab, value in items]

        return {
            "variance": self.variance,
            "threshold": self.threshold,
            "k": self.k,
            "topk_before": pairs(self.topk_before, "logit"),
            "topk_after": pairs(self.topk_after, "fused_score"),
            "similarities": pairs(self.similarities, "cos"),
        }


@dataclass(frozen=True)
class Prediction:
    """The label of one text; see the module docstring for what ``score`` is."""

    label: str
    label_id: int
    score: float
    hard: bool
    classifier_label: str
    classifier_label_id: int
    classifier_prob: float
    fused_score: float | None
    explanation: Explanation | None = None
    exit_layer: int | None = None
    out_of_scope: bool | None = None

    @property
    def reranked(self) -> bool:
        return self.label_id != self.classifier_label_id and not self.out_of_scope

    def to_dict(self) -> dict:
        """Plain JSON-ready dict; the ``explanation`` key is present only when one was asked for."""
        d = {key: getattr(self, key) for key in RECORD_FIELDS}
        for key in OPTIONAL_FIELDS:
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.explanation is not None:
            d["explanation"] = self.explanation.to_dict()
        return d


def record_scores(logits: np.ndarray, d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classifier_prob, score, fused_score) of each row of decision ``d`` (:class:`lrsl_rt.rule.Decision`):
    the softmax of the logits at the classifier's label; the softmax of the final scores at the final
    label (the fused scores on hard rows); the fused score at the final label (NaN on easy rows)."""
    classifier_prob = confidence(logits)
    scores = classifier_prob.copy()
    fused = np.full(len(logits), np.nan)
    if d.hard_idx.size:
        scores[d.hard_idx] = confidence(d.fused)
        fused[d.hard_idx] = d.fused[np.arange(d.hard_idx.size), d.labels[d.hard_idx]]
    return classifier_prob, scores, fused


def build_predictions(labels, d, scores, explanations, exit_layer, oos, fallback) -> list[Prediction]:
    """One :class:`Prediction` per row of decision ``d``; ``scores``: :func:`record_scores`; ``oos``:
    the abstain decision of each row (None when not abstaining), whose rows get ``fallback``."""
    classifier_prob, final, fused = scores
    return [
        Prediction(
            label=fallback if oos is not None and oos[i] else labels[d.labels[i]],
            label_id=-1 if oos is not None and oos[i] else int(d.labels[i]),
            score=float(final[i]),
            hard=bool(d.hard[i]),
            classifier_label=labels[d.classifier_labels[i]],
            classifier_label_id=int(d.classifier_labels[i]),
            classifier_prob=float(classifier_prob[i]),
            fused_score=float(fused[i]) if d.hard[i] else None,
            explanation=explanations[i],
            exit_layer=None if exit_layer is None else int(exit_layer[i]),
            out_of_scope=None if oos is None else bool(oos[i]),
        )
        for i in range(len(d.labels))
    ]
