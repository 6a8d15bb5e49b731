"""Prometheus metrics of one server process, in a registry of its own (never the global one).

A registry per app keeps two apps in one process (tests, embedding) from mixing their counts, and
keeps ``/metrics`` to what this server measures. With ``--workers N`` each worker process has its
own registry, and a scrape is answered by whichever worker accepts the connection: for figures of
the whole server, run single-worker servers on separate ports and scrape each.

Names (counters get ``_total``):

- ``lrsl_http_requests_total{endpoint, status}``; ``lrsl_http_request_duration_seconds{endpoint}``
- ``lrsl_queue_texts``: texts waiting for a batch
- ``lrsl_batch_texts``, ``lrsl_batch_tokens`` (unpadded): per model call; ``lrsl_batch_seconds``
- ``lrsl_texts_predicted_total``, ``lrsl_hard_texts_total``, ``lrsl_reranked_texts_total``,
  ``lrsl_hard_share`` (hard / predicted since start), ``lrsl_exit_texts_total{layer}`` (bundles with
  exits: texts by the classifier layer they left at, the depth for those that went through)
- ``lrsl_model_run_seconds{stage}``: time inside ONNX Runtime, stage ``classifier`` or ``embedder``
  (count: runs, sum: seconds)
- ``lrsl_cancelled_texts_total``: texts of requests whose client went away
- ``lrsl_failed_batches_total``: model calls that raised
"""

from __future__ import annotations

import time

ENDPOINTS = ("/predict", "/health", "/info", "/metrics")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class ServeMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "lrsl_http_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "lrsl_http_request_duration_seconds",
            "time from request to response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_texts = Gauge("lrsl_queue_texts", "texts waiting for a batch", registry=r)
        self.batch_texts = Histogram(
            "lrsl_batch_texts", "texts per model call", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "lrsl_batch_tokens", "tokens per model call, before padding", buckets=TOKEN_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "lrsl_batch_seconds", "wall time of one model call (a batch)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.texts = Counter("lrsl_texts_predicted", "texts predicted", registry=r)
        self.hard = Counter("lrsl_hard_texts", "texts the gate found hard (embedder ran)", registry=r)
        self.reranked = Counter("lrsl_reranked_texts", "texts whose label LRSL changed", registry=r)
        self.hard_share = Gauge("lrsl_hard_share", "hard texts / texts predicted since start", registry=r)
        self.exits = Counter(
            "lrsl_exit_texts",
            "texts by the classifier layer they left at (bundles with exits)",
            ["layer"],
            registry=r,
        )
        self.model_seconds = Summary(
            "lrsl_model_run_seconds", "time inside ONNX Runtime per run, by model", ["stage"], registry=r
        )
        self.cancelled_texts = Counter(
            "lrsl_cancelled_texts", "texts of requests whose client disconnected", registry=r
        )
        self.failed_batches = Counter("lrsl_failed_batches", "model calls that raised", registry=r)
        self._n_texts = self._n_hard = 0
        for stage in ("classifier", "embedder"):
            self.model_seconds.labels(stage)  # present at zero before the first run

    # ---- the HTTP side ---------------------------------------------------------------------------
    def request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # ---- the batcher's observer ------------------------------------------------------------------
    def queue(self, n: int) -> None:
        self.queue_texts.set(n)

    def batch(self, texts: int, tokens: int, seconds: float, predictions) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.texts.inc(texts)
        self.hard.inc(sum(p.hard for p in predictions))  # counters cannot be read back: own tallies below
        self.reranked.inc(sum(p.reranked for p in predictions))
        self._n_texts += texts
        self._n_hard += sum(p.hard for p in predictions)
        self.hard_share.set(self._n_hard / self._n_texts)
        for p in predictions:
            if p.exit_layer is not None:
                self.exits.labels(str(p.exit_layer)).inc()

    def cancelled(self, n: int) -> None:
        self.cancelled_texts.inc(n)

    def failed(self) -> None:
        self.failed_batches.inc()

    def timed(self, session, stage: str):
        """``session`` with its ``run`` timed into ``lrsl_model_run_seconds{stage}``; a stage chain
        (a bundle with exits) gets each of its stage sessions timed under ``stage``."""
        from ..exits import StageChain

        summary = self.model_seconds.labels(stage)
        if isinstance(session, StageChain):
            return StageChain([_TimedSession(s, summary) for s in session.stages], session.pad, session.depth)
        return _TimedSession(session, summary)


class _TimedSession:
    """Delegates to an OnnxSession; ``run`` also records its duration."""

    def __init__(self, session, summary) -> None:
        self._session, self._summary = session, summary

    def run(self, arrays):
        start = time.perf_counter()
        try:
            return self._session.run(arrays)
        finally:
            self._summary.observe(time.perf_counter() - start)

    def run_outputs(self, arrays, outputs):
        start = time.perf_counter()
        try:
            return self._session.run_outputs(arrays, outputs)
        finally:
            self._summary.observe(time.perf_counter() - start)

    def __getattr__(self, name):
        return getattr(self._session, name)
