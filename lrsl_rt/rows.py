"""Predicting a chunk of rows of which some are errors: the good rows in one call, results in place.

``lrsl-rt predict`` (a chunk of input records) and the Ray actors (a batch of dataset rows) both hold
rows that failed before prediction (a blank line, a null text) beside rows with a text. Both ask
:func:`predict_rows`, so the good texts go to the model together, batched as one call of those texts
would be, and the answers line up with the rows again.
"""

from __future__ import annotations

from collections.abc import Sequence


def predict_rows(
    reranker, texts: Sequence[str | None], errors: Sequence[str | None], *, explain=False, abstain=None
):
    """The prediction dict of each row whose error is None, and None for the others, in row order
    (``explain``, ``abstain``: as in ``Reranker.predict``).

    >>> class Echo:  # a stand-in Reranker
    ...     def predict(self, texts, explain=False, abstain=None):
    ...         return [type("P", (), {"to_dict": lambda self, t=t: {"label": t}})() for t in texts]
    >>> predict_rows(Echo(), ["a", None, "c"], [None, "empty line", None])
    [{'label': 'a'}, None, {'label': 'c'}]
    """
    good = [t for t, e in zip(texts, errors, strict=True) if e is None]
    preds = iter(reranker.predict(good, explain=explain, abstain=abstain))
    return [None if e is not None else next(preds).to_dict() for e in errors]
