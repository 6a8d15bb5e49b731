"""What one server process knows: its phase, the loaded Reranker and batcher, its requests in flight.

Phases of :class:`ServeState`:

- ``loading``: the app answers at once, but ``/health`` and ``/predict`` are 503 while a background
  thread loads the bundle and runs a probe prediction (so the first real request pays no warm-up).
  A bundle that fails to load ends the process with exit 1 (``on_fatal``).
- ``ready``: requests are served. Each request's texts are tokenized once, in a thread of their own
  (:meth:`ServeState.tokenize`: long texts never stall the event loop, ``/health`` included), and the
  same rows go to the batch (:meth:`Reranker.predict_tokens`), which runs where the batch runner
  decides (:mod:`.runner`: with ``--solo-threads`` on a second set of sessions with that many threads
  when no other worker runs one, :mod:`.cores`). Each request may ask to abstain or not
  (:meth:`ServeState.abstain_for`); without asking it gets ``--abstain``, else the bundle's choice.
- ``draining`` (:meth:`ServeState.drain`, on the first SIGTERM/SIGINT): ``/health`` and new requests
  are 503; the queue runs without waiting for company, and every request accepted before the drain
  (one still uploading its body included) is answered. Those still unanswered when the drain gives up
  (``--drain-timeout``, or a second signal: :meth:`ServeState.abort`) get a JSON 503 at once, and the
  exit code becomes 1.

Every HTTP request is tracked in ``active`` from the moment the app sees it until it is answered
(the app's middleware does it), which is what the drain waits for and what an abort answers.
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LrslError
from .batcher import BatchLimits, MicroBatcher
from .cores import CORES_ENV, INDEX_ENV, CoreLease
from .metrics import ServeMetrics
from .runner import BatchRunner
from .schema import ApiError
from .settings import ServeSettings

PROBE_TEXT = "lrsl-rt serve probe"
INLINE_TOKENIZE_CHARS = 1024  # a request's characters tokenized on the event loop (see ServeState.tokenize)


def log(message: str) -> None:
    print(f"lrsl-rt serve [{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class ServeState:
    def __init__(self, settings: ServeSettings, on_fatal=None) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.phase = "loading"
        self.reranker = None
        self.solo = None  # the sessions with --solo-threads threads, and the lease that picks them
        self.batcher: MicroBatcher | None = None
        self.abstain = False  # what a request that does not ask gets (set once the bundle is loaded)
        self.summary: dict | None = None
        self.active: dict[asyncio.Task, list] = {}  # request task -> [response status, None until sent]
        self.stop_reason: str | None = None  # set by abort(): why requests in flight got 503
        self.exit_code = 0
        self.on_fatal = on_fatal
        self._tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrsl-tokenize")

    async def load(self) -> None:
        """Load the bundle off the event loop, probe it, start the batcher; on failure exit 1."""
        try:
            self.reranker, self.solo, self.summary = await asyncio.to_thread(self._load_blocking)
        except (LrslError, OSError) as e:
            self.phase, self.exit_code = "failed", 1
            log(f"Error: {e}")
            if self.on_fatal:
                self.on_fatal()
            return
        s = self.settings
        limits = BatchLimits(
            s.max_batch_texts,
            s.max_batch_tokens,
            s.max_wait_ms / 1e3,
            s.max_queue_texts,
            s.max_queue_ms / 1e3,
        )
        self.abstain = self.reranker.abstains(s.abstain)
        runner = BatchRunner(self.reranker, self.solo, on_solo=self.metrics.solo_batch)
        self.batcher = MicroBatcher(runner, limits, self.metrics)
        self.batcher.start()
        if self.phase == "loading":  # not draining already
            self.phase = "ready"
            solo = f", {s.solo_threads} when it runs alone" if self.solo else ""
            log(f"ready: {self.reranker!r}, {s.threads} ONNX Runtime thread(s){solo}")
            log(invariance_line(self.summary))

    def _load_blocking(self):
        from ..info import bundle_summary
        from ..reranker import Reranker

        s = self.settings

        def load(threads: int) -> Reranker:
            r = Reranker.from_bundle(
                s.bundle,
                providers=s.provider,
                threads=threads,
                batch_size=s.batch_size,
                thread_pool=s.thread_pool,
            )
            r.predict([PROBE_TEXT])  # warm-up before the timing hook, so the metrics hold only real work
            r.on_run = self.metrics.model_run
            return r

        lock = os.environ.get(CORES_ENV)
        solo = None
        if s.solo_threads and lock:
            solo = load(s.solo_threads), CoreLease(lock, int(os.environ.get(INDEX_ENV, "0")))
        return load(s.threads), solo, bundle_summary(Path(s.bundle))

    def abstain_for(self, asked: bool | None) -> bool:
        """Whether a request's texts abstain: as ``asked``, else the server's default; ApiError 400 when
        it asks on a bundle without an abstain calibration."""
        if asked is None:
            return self.abstain
        if asked and self.reranker.manifest.abstain is None:
            raise ApiError(400, "abstain: this bundle has no abstain calibration; ask without abstain")
        return asked

    async def tokenize(self, texts: list[str]) -> list:
        """The texts' token rows. Up to INLINE_TOKENIZE_CHARS characters in all they are tokenized on the
        event loop: that takes less than handing them to a thread and back, and stalls other connections
        no longer than an answer's JSON does. Longer requests go to the tokenizer's thread (tokenizers
        releases the GIL), so a request of long texts never stalls the loop."""
        tokenize = self.reranker.tokenizer.tokenize
        if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
            return tokenize(texts, hold_gil=True)  # no GIL hand-back to wait for on the loop
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, tokenize, texts)

    # ---- shutdown --------------------------------------------------------------------------------
    async def drain(self, timeout: float, delay: float, poll: float = 0.01) -> None:
        """Stop taking requests, answer the accepted ones (503 to those left after ``timeout``), keep ``delay``."""
        self.phase = "draining"
        log(f"draining: {len(self.active)} request(s) in flight")
        loop = asyncio.get_running_loop()
        start = loop.time()
        if self.batcher is not None:
            self.batcher.flush()
        while self.active and loop.time() - start < timeout:
            await asyncio.sleep(poll)
        if self.active:
            self.abort(f"not answered within --drain-timeout {timeout:g} s")
        await asyncio.sleep(max(0.0, delay - (loop.time() - start)))

    def abort(self, reason: str) -> int:
        """Answer every request in flight that has no answer yet with a JSON 503 now; how many (exit 1 if any)."""
        self.phase = "draining"
        self.stop_reason = reason
        pending = [task for task, status in self.active.items() if status[0] is None]
        for task in pending:
            task.cancel()  # the middleware turns the cancellation into the 503 answer
        if pending:
            self.exit_code = 1
            log(f"Error: {len(pending)} request(s) answered 503 unserved: {reason}")
        return len(pending)

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)
        if self.solo is not None:
            self.solo[1].close()

    def info(self) -> dict:
        from ..info import environment

        invariant = self.summary["batch_invariant"] if self.summary else None
        return {
            "phase": self.phase,
            "pid": os.getpid(),
            "model_name": self.settings.model_name,
            "bundle": self.summary,
            "answers_depend_on_batch": None if invariant is None else not invariant,
            "batching": self.settings.batching(),
            "environment": environment(),
        }


def invariance_line(summary: dict) -> str:
    """Whether this server's answers can depend on the texts batched with them, and what to do about it."""
    what = summary["precision"] + (f" preset {summary['preset']}" if summary["preset"] else "")
    if summary["batch_invariant"]:
        return f"answers do not depend on batch neighbours ({what})"
    return (
        f"answers can depend on batch neighbours ({what}: dynamic int8 scales follow the batch); for "
        "answers that do not depend on traffic, export a static preset (docs/guide/serve.md)"
    )
