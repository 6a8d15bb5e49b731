"""Fusion of classifier logits with label similarities.

Two rules from the LRSL reference code, each with an exponent p and a scope:

- ``logits_cos``:  score = logits * cos^p
- ``softmax_cos``: score = softmax(logits) * cos^p

``cos`` is the cosine similarity between the text's embedding and each label text's embedding.
With scope ``all`` every label competes; with scope ``topk`` only the classifier's top-k labels do
(the others get -inf). The exponent is an integer, so cos^p keeps the reference code's sign
behaviour (an even p squares away a negative cosine).

Worked example (3 labels, logits_cos, p=2, scope all): logits [3.0, 2.8, 0.1],
cos [0.2, 0.9, 0.5] -> scores [3.0*0.04, 2.8*0.81, 0.1*0.25] = [0.12, 2.268, 0.025] -> label 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .gate import softmax, topk_indices

RULES = ("logits_cos", "softmax_cos")
SCOPES = ("all", "topk")


@dataclass(frozen=True)
class Fusion:
    """A fusion rule: ``rule`` in RULES, integer exponent ``p`` >= 0, ``scope`` in SCOPES."""

    rule: str = "logits_cos"
    p: int = 2
    scope: str = "all"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"fusion rule must be one of {RULES}, got {self.rule!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"fusion scope must be one of {SCOPES}, got {self.scope!r}")
        if isinstance(self.p, bool) or not isinstance(self.p, int) or self.p < 0:
            raise ValueError(f"fusion exponent p must be an integer >= 0, got {self.p!r}")

    def to_dict(self) -> dict:
        return {"rule": self.rule, "p": self.p, "scope": self.scope}

    @property
    def spec(self) -> str:
        """The text :func:`parse_fusion` reads back: ``rule:p:scope``."""
        return f"{self.rule}:{self.p}:{self.scope}"

    @property
    def name(self) -> str:
        base = "logits" if self.rule == "logits_cos" else "softmax(logits)"
        return f"{base}*cos^{self.p} [{self.scope}]"


def parse_fusion(spec: str) -> Fusion:
    """A fusion from ``RULE:P`` or ``RULE:P:SCOPE`` (scope default ``all``).

    >>> parse_fusion("logits_cos:2")
    Fusion(rule='logits_cos', p=2, scope='all')
    >>> parse_fusion("softmax_cos:4:topk").name
    'softmax(logits)*cos^4 [topk]'
    """
    parts = str(spec).strip().split(":")
    hint = f"expected RULE:P[:SCOPE] with RULE in {RULES}, P an integer >= 0, SCOPE in {SCOPES}"
    if len(parts) not in (2, 3):
        raise ValueError(f"fusion {spec!r}: {hint}, e.g. 'logits_cos:2'")
    rule, p, scope = parts[0], parts[1], parts[2] if len(parts) == 3 else "all"
    if not p.isdigit():
        raise ValueError(f"fusion {spec!r}: exponent {p!r} is not an integer >= 0; {hint}")
    return Fusion(rule, int(p), scope)


def fusion_option(spec: str | None) -> Fusion | None:
    """A ``--fusion`` value: None for ``auto`` (or no value: choose on dev), else :func:`parse_fusion`."""
    return None if spec in (None, "auto") else parse_fusion(spec)


def confidence(scores: np.ndarray) -> np.ndarray:
    """The ``score`` of each row: its softmax at the row's best entry, in [0, 1].

    ``scores`` are a text's final scores -- the logits of an easy sample, the fused scores of a hard
    one. Entries of -inf (labels outside a ``topk`` scope) get probability 0.

    >>> confidence(np.array([[2.0, 0.0, -np.inf]])).round(4)
    array([0.8808])
    """
    return softmax(scores).max(axis=1)


def fuse(logits: np.ndarray, cos: np.ndarray, fusion: Fusion, k: int) -> np.ndarray:
    """Fused scores, shape (n, n_labels); argmax gives the reranked label."""
    logits = np.asarray(logits, dtype=np.float64)
    cos = np.asarray(cos, dtype=np.float64)
    if logits.shape != cos.shape:
        raise ValueError(f"logits and cos must have the same shape, got {logits.shape} and {cos.shape}")
    base = logits if fusion.rule == "logits_cos" else softmax(logits)
    scores = base * cos**fusion.p
    if fusion.scope == "topk":
        masked = np.full_like(scores, -np.inf)
        idx = topk_indices(logits, k)
        np.put_along_axis(masked, idx, np.take_along_axis(scores, idx, axis=1), axis=1)
        scores = masked
    return scores


def rerank(logits: np.ndarray, cos: np.ndarray, fusion: Fusion, k: int) -> np.ndarray:
    """Reranked label index of each row."""
    return np.argmax(fuse(logits, cos, fusion, k), axis=1)
