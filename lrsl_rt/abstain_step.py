"""The abstain decision as the Reranker runs it: the cascade first, then the bundle's score.

:mod:`lrsl_rt.abstain` holds the scores and the calibration; this module holds what one call of
``Reranker.predict`` does with them, so the Reranker only asks two questions:

1. :meth:`AbstainStep.scored_rows`: which rows need the score? Every row, or, with the manifest's
   ``cascade``, only those the classifier is not sure of (:func:`~lrsl_rt.abstain.cascade_skips`).
   For a score that needs the embedder (``knn``, ``max_cos``) the Reranker embeds those rows
   together with the gate's hard rows, in one embedder run, and hands the scored rows' outputs here.
2. :meth:`AbstainStep.out_of_scope`: the decision of every row; a row that was not scored is in
   scope (the cascade settled it).

The arrays a score needs beyond the rule's (the kNN neighbours, the whitening matrix and class
means of ``mahalanobis``) are loaded with the bundle and checked against the manifest there.

The scores' matrix products run with one BLAS thread (:func:`one_blas_thread`): numpy's BLAS keeps
its threads spinning after a product, and on a machine whose cores ONNX Runtime's threads use for
the next model run they take those cores away from it.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .abstain import (
    EMBEDDER_SCORES,
    FEATURE_SCORES,
    cascade_skips,
    knn_score,
    logit_score,
    mahalanobis_score,
    scores_of,
)
from .errors import BundleError
from .gate import is_unsure
from .manifest import Abstain
from .rule import Decision

_blas = {}  # the threadpoolctl controller, made on first use


def one_blas_thread():
    """A context in which numpy's BLAS uses one thread (threadpoolctl), restored on exit; a no-op
    context without threadpoolctl."""
    if "controller" not in _blas:
        try:
            from threadpoolctl import ThreadpoolController

            _blas["controller"] = ThreadpoolController()
        except ImportError:
            _blas["controller"] = None
    c = _blas["controller"]
    return contextlib.nullcontext() if c is None else c.limit(limits=1, user_api="blas")


class AbstainStep:
    """One bundle's abstain decision; ``train_embeddings`` for ``knn``, ``whitener`` and
    ``feature_means`` for ``mahalanobis``."""

    def __init__(
        self,
        abstain: Abstain,
        k: int,
        *,
        train_embeddings: np.ndarray | None = None,
        whitener: np.ndarray | None = None,
        feature_means: np.ndarray | None = None,
    ) -> None:
        self.abstain = abstain
        self.k = k
        self.train_embeddings = train_embeddings
        self.whitener = whitener
        self.feature_means = feature_means
        if abstain.score == "knn" and train_embeddings is None:
            raise BundleError("the abstain score 'knn' needs the bundle's train_embeddings file")
        if self.needs_features and (whitener is None or feature_means is None):
            raise BundleError(
                "the abstain score (or its cascade) needs the bundle's feature_whitener and feature_means files"
            )

    @property
    def needs_embeddings(self) -> bool:
        """The score runs the embedder on the rows it scores."""
        return self.abstain.score in EMBEDDER_SCORES

    @property
    def needs_features(self) -> bool:
        """The score or the cascade reads the classifier graph's ``features`` output."""
        c = self.abstain.cascade
        return self.abstain.score in FEATURE_SCORES or (c is not None and c.measure in FEATURE_SCORES)

    def scored_rows(self, logits: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Boolean (n,): the rows whose score must be computed (all of them without a cascade)."""
        c = self.abstain.cascade
        if c is None:
            return np.ones(len(logits), dtype=bool)
        with one_blas_thread():
            return ~cascade_skips(self.free_score(c.measure, logits, features), c.bound)

    def free_score(self, name: str, logits: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        """A score that needs no embedder, of every row: from the logits, or from the features."""
        if name in FEATURE_SCORES:
            return mahalanobis_score(features, self.whitener, self.feature_means)
        return logit_score(logits, name, self.k)

    def scores(
        self,
        logits: np.ndarray,
        d: Decision,
        final: np.ndarray,
        scored: np.ndarray,
        *,
        emb: np.ndarray | None = None,
        cos: np.ndarray | None = None,
        features: np.ndarray | None = None,
    ) -> np.ndarray:
        """The score of each row, +inf for a row the cascade settled (never out of scope).

        ``emb`` and ``cos``: the embeddings and label similarities of the scored rows, in row order
        (for the embedder's scores); ``features``: every row's classifier features (mahalanobis);
        ``final``: the records' ``score`` (for ``fused``).
        """
        a, n = self.abstain, len(logits)
        out = np.full(n, np.inf)
        idx = np.flatnonzero(scored)
        if not idx.size:
            return out
        if a.score == "knn":
            out[idx] = knn_score(emb, self.train_embeddings)
        elif a.score == "max_cos":
            out[idx] = np.asarray(cos, dtype=np.float64).max(axis=1)
        elif a.score in FEATURE_SCORES:
            out[idx] = mahalanobis_score(np.asarray(features)[idx], self.whitener, self.feature_means)
        else:
            out[idx] = scores_of(a.score, logits, d, self.k, final_confidence=final)[idx]
        return out

    def out_of_scope(self, logits, d, final, scored, **parts) -> np.ndarray:
        """Boolean (n,): the rows that get the fallback label (score at or below the threshold)."""
        with one_blas_thread():
            return is_unsure(self.scores(logits, d, final, scored, **parts), self.abstain.threshold)
