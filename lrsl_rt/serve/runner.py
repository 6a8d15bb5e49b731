"""Where a served batch runs: one object decides it for every batch of a server process.

A batch can run in three places, and :class:`BatchRunner` alone chooses among them:

1. **on the event loop, on the solo sessions** (:meth:`BatchRunner.inline`): a batch of at most
   ``INLINE_TOKENS`` unpadded tokens that can run alone now (``--solo-threads``; :mod:`.cores` says
   when a batch runs alone). Alone, nothing else needs the cores, and handing the batch to the model
   thread and its answer back would only add two thread wake-ups to a lone request's latency.
2. **in the model thread, on the solo sessions** (:meth:`BatchRunner.run`): a larger batch that
   finds every other worker idle and quiet.
3. **in the model thread, on the worker's own sessions** (``--threads``): everything else, and every
   batch of a server without ``--solo-threads``.

The batcher (:mod:`.batcher`) decides *what* goes into a batch and *when*; it offers each batch to
:meth:`~BatchRunner.inline` first and runs it with :meth:`~BatchRunner.run` in its model thread when
that declines. Every place computes the same records: ONNX Runtime's values do not depend on the
thread count (:mod:`.cores`).
"""

from __future__ import annotations

from collections.abc import Callable

INLINE_TOKENS = 256  # the largest batch (unpadded tokens) run on the event loop: a few ms there


class BatchRunner:
    """Runs the batches of one worker: ``reranker`` has its ``--threads`` sessions; ``solo``, when
    set, is (a Reranker with ``--solo-threads`` sessions, the :class:`~.cores.CoreLease` that says
    when a batch runs alone); ``on_solo`` is called for each batch that runs alone (a metric)."""

    def __init__(self, reranker, solo=None, on_solo: Callable[[], None] | None = None) -> None:
        self.reranker = reranker
        self.solo = solo
        self._on_solo = on_solo or (lambda: None)

    def inline(self, rows: list, tokens: int, explain: bool, abstain: bool) -> list | None:
        """The batch's predictions, computed now on the caller's thread (the event loop) if it is
        small and can run alone; else None, and nothing ran."""
        if self.solo is None or tokens > INLINE_TOKENS:
            return None
        sessions, lease = self.solo
        if not lease.try_alone():
            return None
        try:
            self._on_solo()
            return sessions.predict_tokens(rows, explain, abstain)
        finally:
            lease.release()

    def run(self, rows: list, explain: bool, abstain: bool) -> list:
        """The batch's predictions, in the model thread: on the solo sessions when it runs alone."""
        if self.solo is None:
            return self.reranker.predict_tokens(rows, explain, abstain)
        sessions, lease = self.solo
        with lease.batch() as alone:
            if alone:
                self._on_solo()
            return (sessions if alone else self.reranker).predict_tokens(rows, explain, abstain)
