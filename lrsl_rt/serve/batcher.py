"""The micro-batcher: texts of concurrent requests gathered into model calls.

Design (after Triton's dynamic batcher and text-embeddings-inference's queue):

- ``submit(texts, tokens, explain, abstain)`` puts a request's texts (whatever the runner takes: the server
  passes rows it tokenized once, off the event loop) at the end of one FIFO queue and awaits its own
  results. The queue is bounded in texts (``max_queue``) and, optionally, in time
  (``max_queue_wait``: the texts ahead of a new request, queued and in the running batch, at the
  rate the model has been getting through texts lately, an average over recent batches). A request
  that does not fit is refused at once with :class:`QueueFull` (the HTTP layer answers 429), never
  parked. The time bound holds when the rate falls (under overload the event loop's own work takes
  cores from the model), where a count alone would let the wait grow with it.
- One batch loop (an asyncio task) takes texts from the head of the queue into a batch of at most
  ``max_texts`` texts and ``max_tokens`` tokens (unpadded token counts; a single longer text still
  runs, alone). A request may be split over consecutive batches; its texts keep their order.
- When the model is idle, a partial batch waits for company at most ``max_wait`` seconds after its
  oldest text arrived, and runs at once when full. While a batch runs, new texts queue and form the
  next batch, so under load batches fill without any wait.
- Each batch goes to a runner (:mod:`.runner`), which decides where it runs: ``runner.inline`` may
  take it on the event loop (a small batch that runs alone: worth more than the two thread hops it
  would cost, and nobody else's work is waiting for the loop) and returns None to decline; then
  ``runner.run`` runs it in a single worker thread via ``run_in_executor``, so the event loop stays
  free and the models never run concurrently with themselves. A request that finds the batcher idle
  may skip the queue altogether (``run_now``: the batch it would form, offered to ``runner.inline``
  at once by its own task). A batch that wants explanations for any request computes them for all
  and strips them from the others; a batch holds requests of one abstain choice only (the queue is
  cut where the choice changes), since an abstained record cannot be turned back into the label the
  rule chose.
- Each request has its own future and result slots: results go back exactly to their request, in
  order. A failed model call fails the requests of that batch only (:class:`BatchFailed`); their
  texts still queued are dropped. A request whose awaiting task is cancelled (its client went away)
  takes its queued texts out of the queue (counted as cancelled); results of its texts already in a
  running batch are dropped (those texts count as predicted) -- it costs no more than its own texts.
- ``flush()`` (a server's drain) stops waiting for company: what is queued runs at once, and so do
  later submissions (requests accepted before the drain may still be uploading); ``idle`` tells when
  nothing is queued or running. After ``close()`` submissions raise :class:`Draining`.

The batcher knows nothing of HTTP or Prometheus: an optional ``observer`` gets ``queue(n)``,
``batch(texts, tokens, seconds, predictions)``, ``cancelled(n)`` and ``failed()`` calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor


class QueueFull(Exception):
    """The queue cannot take the request's texts now."""


class Draining(Exception):
    """The server is shutting down and takes no new work."""


class BatchFailed(Exception):
    """The model call of a batch holding this request's texts raised; the cause is chained."""


@dataclasses.dataclass(eq=False)
class _Request:
    texts: list[str]
    tokens: list[int]
    explain: bool
    abstain: bool
    future: asyncio.Future
    arrived: float
    results: list = dataclasses.field(default_factory=list)
    taken: int = 0  # texts already put into a batch
    answered: int = 0

    def __post_init__(self) -> None:
        self.results = [None] * len(self.texts)


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    max_texts: int
    max_tokens: int
    max_wait: float  # seconds
    max_queue: int
    max_queue_wait: float = 0.0  # seconds of work ahead of a new request; 0: no time bound


RATE_WEIGHT = 0.2  # weight of the latest batch in the texts-per-second average (about the last 5 batches)


class MicroBatcher:
    def __init__(self, runner, limits: BatchLimits, observer=None):
        # runner.inline(texts, tokens, explain, abstain) -> list | None; runner.run(texts, explain, abstain)
        self._runner = runner
        self.limits = limits
        self._observer = observer
        self._queue: deque[_Request] = deque()
        self.queued_texts = 0
        self._queued_tokens = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrsl-model")
        self._running = False
        self._running_texts = 0
        self._texts_avg = self._busy_avg = 0.0  # texts and seconds per batch, averaged over recent ones
        self._last_end = 0.0  # when the last batch ended, if texts were waiting then; else 0
        self._flushing = False
        self._closed = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._batch_loop())

    # ---- the request side ------------------------------------------------------------------------
    async def submit(
        self, texts: list[str], tokens: list[int], explain: bool = False, abstain: bool = False
    ) -> list:
        """The predictions of ``texts`` in order; QueueFull, Draining or BatchFailed otherwise."""
        if self._closed:
            raise Draining("the server is shutting down")
        self.check_room(len(texts))
        loop = asyncio.get_running_loop()
        req = _Request(list(texts), list(tokens), explain, abstain, loop.create_future(), loop.time())
        self._queue.append(req)
        self._count_queued(len(texts), sum(tokens))
        self._wake.set()
        try:
            return await req.future
        except asyncio.CancelledError:
            untaken = len(req.texts) - req.taken  # texts in a running batch will be predicted all the same
            self._drop(req)
            if self._observer and untaken:
                self._observer.cancelled(untaken)
            raise

    def run_now(
        self, texts: list, tokens: list[int], explain: bool = False, abstain: bool = False
    ) -> list | None:
        """The predictions of a request that would form a batch of its own and run at once; else None.

        That is: nothing queued or running, no wait for company (``max_wait`` 0), the texts within one
        batch, and ``runner.inline`` takes it. Such a request gains nothing from the queue, and skips
        the batch loop's task switch and its future; the caller awaits :meth:`submit` when this gives
        None. Raises BatchFailed as :meth:`submit` would."""
        if self._queue or self._running or self._closed or self.limits.max_wait > 0:
            return None
        n, total = len(texts), sum(tokens)
        if n > self.limits.max_texts or (n > 1 and total > self.limits.max_tokens):
            return None
        start = time.perf_counter()
        try:
            preds = self._runner.inline(list(texts), total, explain, abstain)
        except Exception as e:
            raise self._failed(e) from e
        if preds is not None:
            self._ran(n, total, start, preds)
        return preds

    def _ran(self, texts: int, tokens: int, start: float, preds: list) -> None:
        """A batch is done: update the rate and tell the observer.

        The rate counts a batch's time from its start, or, when texts were already waiting as the
        previous batch ended, from that end: the loop's hand-over between the two is then part of what
        a text costs."""
        end = time.perf_counter()
        busy = end - (self._last_end or start)
        self._last_end = end if self._queue else 0.0
        if busy > 0:  # texts over seconds, each averaged (an average of rates would favour quick batches)
            w = RATE_WEIGHT if self._texts_avg else 1.0
            self._texts_avg += w * (texts - self._texts_avg)
            self._busy_avg += w * (busy - self._busy_avg)
        if self._observer:
            self._observer.batch(texts, tokens, end - start, preds)

    @property
    def rate(self) -> float:
        """Texts per second of recent batches (0 until one ran)."""
        return self._texts_avg / self._busy_avg if self._busy_avg else 0.0

    def _failed(self, e: Exception) -> BatchFailed:
        """The error of a batch whose model call raised ``e`` (counted with the observer)."""
        if self._observer:
            self._observer.failed()
        err = BatchFailed(f"{type(e).__name__}: {e}")
        err.__cause__ = e
        return err

    def check_room(self, n: int) -> None:
        """QueueFull unless ``n`` more texts fit in the queue now (a caller can refuse before costly work)."""
        if self.queued_texts + n > self.limits.max_queue:
            raise QueueFull(
                f"queue full: {self.queued_texts} texts waiting and this request's {n} would make "
                f"{self.queued_texts + n}, over the bound of {self.limits.max_queue} (--max-queue-texts)"
            )
        ahead, bound, rate = self.queued_texts + self._running_texts, self.limits.max_queue_wait, self.rate
        if bound and ahead and rate and ahead / rate > bound:
            raise QueueFull(
                f"queue full: {ahead} texts ahead, about {1e3 * ahead / rate:.0f} ms of work "
                f"at {rate:.0f} texts/s; the bound is {1e3 * bound:g} ms"
            )

    def _drop(self, req: _Request) -> None:
        """Take a request's texts that are still queued out of the queue."""
        if req in self._queue:  # a request leaves the queue when its last text is taken
            self._queue.remove(req)
            self._count_queued(req.taken - len(req.texts), -sum(req.tokens[req.taken :]))
        req.taken = len(req.texts)

    def _count_queued(self, texts: int, tokens: int) -> None:
        self.queued_texts += texts
        self._queued_tokens += tokens
        if self._observer:
            self._observer.queue(self.queued_texts)

    # ---- the batch side --------------------------------------------------------------------------
    async def _batch_loop(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._wait_for_company()
            parts = self._take_batch()
            if parts:
                self._running = True
                try:
                    await self._run_batch(parts)
                finally:
                    self._running = False

    def _full(self) -> bool:
        return self.queued_texts >= self.limits.max_texts or self._queued_tokens >= self.limits.max_tokens

    async def _wait_for_company(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrived + self.limits.max_wait
        while self._queue and not self._flushing and not self._full():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[tuple[_Request, int, int]]:
        """(request, start, end) slices from the head of the queue, within the batch limits, of one abstain choice."""
        parts, n, tokens = [], 0, 0
        abstain = self._queue[0].abstain
        while self._queue and n < self.limits.max_texts and self._queue[0].abstain == abstain:
            req = self._queue[0]
            start = end = req.taken
            while end < len(req.texts) and n < self.limits.max_texts:
                if n and tokens + req.tokens[end] > self.limits.max_tokens:
                    break
                tokens += req.tokens[end]
                n += 1
                end += 1
            if end > start:
                parts.append((req, start, end))
                req.taken = end
            if end < len(req.texts):
                break  # the batch is full; the rest of this request goes first in the next one
            self._queue.popleft()
        self._count_queued(-n, -tokens)
        return parts

    async def _run_batch(self, parts: list[tuple[_Request, int, int]]) -> None:
        texts = [t for req, s, e in parts for t in req.texts[s:e]]
        tokens = sum(sum(req.tokens[s:e]) for req, s, e in parts)
        explain = any(req.explain for req, _, _ in parts)
        abstain = parts[0][0].abstain
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        self._running_texts = len(texts)
        try:
            preds = self._runner.inline(texts, tokens, explain, abstain)
            if preds is None:
                run = self._runner.run
                preds = await loop.run_in_executor(self._executor, run, texts, explain, abstain)
        except Exception as e:  # the model failed: only this batch's requests fail
            err = self._failed(e)
            for req, _, _ in parts:
                self._drop(req)
                if not req.future.done():
                    req.future.set_exception(err)
            return
        finally:
            self._running_texts = 0
        self._deliver(parts, preds, explain)  # the answers first, the bookkeeping after
        self._ran(len(texts), tokens, start, preds)

    @staticmethod
    def _deliver(parts, preds, explained: bool) -> None:
        offset = 0
        for req, s, e in parts:
            chunk = preds[offset : offset + e - s]
            offset += e - s
            if req.future.done():  # cancelled (client gone) or failed in an earlier batch
                continue
            if explained and not req.explain:
                chunk = [dataclasses.replace(p, explanation=None) for p in chunk]
            req.results[s:e] = chunk
            req.answered += e - s
            if req.answered == len(req.texts):
                req.future.set_result(req.results)

    # ---- shutdown --------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return not self._queue and not self._running

    def flush(self) -> None:
        """From now on no partial batch waits for company: queued texts run at once."""
        self._flushing = True
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)
