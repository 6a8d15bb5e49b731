"""Predicting a chunk of rows of which some are errors: the good rows in one call, results in place.

``lrsl-rt predict`` (a chunk of input records) and the Ray actors (a batch of dataset rows) both hold
rows that failed before prediction (a blank line, a null text) beside rows with a text. Both ask
:func:`predict_rows`, so the good texts go to the model together, batched as one call of those texts
would be, and the answers line up with the rows again.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError, UsageError


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


def check_texts(texts, offset: int = 0) -> list[str]:
    """``texts`` as a list, each one a string (``offset``: the index of the first, for the message)."""
    if isinstance(texts, str):
        raise InputError("expected a list of texts, got a single string; wrap it in a list")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text #{offset + i}: expected a string, got {type(t).__name__} {t!r:.40}")
    return texts


def check_chunk_size(chunk_size) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UsageError(f"chunk_size must be a positive integer, got {chunk_size!r}")
