"""Prometheus metrics of one server process, in a registry of its own (never the global one).

A registry per app keeps two apps in one process (tests, embedding) from mixing their counts, and
keeps ``/metrics`` to what this server measures. With ``--workers N`` the supervisor gives its
workers one directory in ``$PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode): each
worker writes its values there, and a scrape, whichever worker answers it, sums them over the workers
(counters and histograms over every worker since start, replaced ones included; the queue gauge over
the live ones).

Names (counters get ``_total``):

- ``lrsl_http_requests_total{endpoint, status}``; ``lrsl_http_request_duration_seconds{endpoint}``;
  endpoint ``connection``: answers the connection guard gave before any endpoint ran (400 malformed
  or no Host, 408 too slow, 431 head too large, 501 a transfer coding other than chunked, 503 too
  many connections); v2 model paths as ``/v2/models/{name}...``; status 499: the client went away
- ``lrsl_write_timeouts_total``: connections aborted because their client read nothing of the
  answers sent to it for ``--write-timeout``
- ``lrsl_queue_texts``: texts waiting for a batch
- ``lrsl_batch_texts``, ``lrsl_batch_tokens`` (unpadded): per model call; ``lrsl_batch_seconds``
- ``lrsl_texts_predicted_total``, ``lrsl_hard_texts_total``, ``lrsl_reranked_texts_total``,
  ``lrsl_hard_share`` (hard / predicted since start)
- ``lrsl_exit_texts_total{layer}``: texts by the classifier layer they left at (bundles with exits)
- ``lrsl_abstained_texts_total``: texts answered with the fallback label (out of scope)
- ``lrsl_model_run_seconds{stage}``: time of each step of a model call, from the Reranker's ``on_run``
  hook (count: runs, sum: seconds): inside ONNX Runtime for ``classifier`` (each stage graph of a chain
  with exits counts here) and ``embedder``; ``rule`` (the gate and the fusion) and ``abstain`` (the
  out-of-scope score) in numpy
- ``lrsl_cancelled_texts_total``: texts of requests whose client went away, taken out of the queue
  before any batch took them
- ``lrsl_failed_batches_total``: model calls that raised
- ``lrsl_solo_batches_total``: model calls that ran while no other worker ran one, on the
  ``--solo-threads`` sessions (:mod:`.cores`)
"""

from __future__ import annotations

import os

from ..defaults import STAGES

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ENDPOINTS = ("/predict", "/health", "/info", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready")
V2_MODEL_SUFFIXES = ("", "/ready", "/infer")  # after /v2/models/NAME: labelled /v2/models/{name}...
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class ServeMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

        self.shared_dir = os.environ.get(MULTIPROC_ENV)  # set by a --workers supervisor
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
        self.queue_texts = Gauge(
            "lrsl_queue_texts", "texts waiting for a batch", registry=r, multiprocess_mode="livesum"
        )
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
        self.exits = Counter(
            "lrsl_exit_texts",
            "texts by the classifier layer they left at (bundles with exits)",
            ["layer"],
            registry=r,
        )
        self.abstained = Counter("lrsl_abstained_texts", "texts answered with the fallback label", registry=r)
        self.model_seconds = Summary(
            "lrsl_model_run_seconds", "time per step of a model call, by stage", ["stage"], registry=r
        )
        self.cancelled_texts = Counter(
            "lrsl_cancelled_texts", "texts of requests whose client disconnected", registry=r
        )
        self.failed_batches = Counter("lrsl_failed_batches", "model calls that raised", registry=r)
        self.solo_batches = Counter(
            "lrsl_solo_batches", "model calls that ran alone, on the --solo-threads sessions", registry=r
        )
        self.write_timeouts = Counter(
            "lrsl_write_timeouts",
            "connections aborted: the client read none of its answers for --write-timeout",
            registry=r,
        )
        self._stages = {s: self.model_seconds.labels(s) for s in STAGES}  # 0 until run

    # ---- the HTTP side ---------------------------------------------------------------------------
    def request(self, path: str, status: int, seconds: float) -> None:
        endpoint = endpoint_label(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def refused(self, status: int) -> None:
        """An answer of the connection guard (no endpoint ran)."""
        self.requests.labels("connection", str(status)).inc()

    def write_timeout(self) -> None:
        self.write_timeouts.inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        source = self.registry
        if self.shared_dir:
            source = CollectorRegistry()
            MultiProcessCollector(source, self.shared_dir)
        return generate_latest(_WithHardShare(source)), CONTENT_TYPE_LATEST

    # ---- the batcher's observer ------------------------------------------------------------------
    def queue(self, n: int) -> None:
        self.queue_texts.set(n)

    def batch(self, texts: int, tokens: int, seconds: float, predictions) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.texts.inc(texts)
        self.hard.inc(sum(p.hard for p in predictions))
        self.reranked.inc(sum(p.reranked for p in predictions))
        self.abstained.inc(sum(bool(p.out_of_scope) for p in predictions))
        for p in predictions:
            if p.exit_layer is not None:
                self.exits.labels(str(p.exit_layer)).inc()

    def cancelled(self, n: int) -> None:
        self.cancelled_texts.inc(n)

    def failed(self) -> None:
        self.failed_batches.inc()

    def solo_batch(self) -> None:
        self.solo_batches.inc()

    def model_run(self, stage: str, seconds: float) -> None:
        """The Reranker's ``on_run`` hook: one ONNX Runtime run of ``stage``."""
        self._stages[stage].observe(seconds)


def endpoint_label(path: str) -> str:
    """The ``endpoint`` label of a request path: a known endpoint, a v2 model path with the name
    replaced (so clients cannot grow the label set), else ``other``.

    >>> endpoint_label("/predict"), endpoint_label("/v2/models/banking77/infer"), endpoint_label("/x")
    ('/predict', '/v2/models/{name}/infer', 'other')
    """
    if path in ENDPOINTS:
        return path
    if path.startswith("/v2/models/"):
        name, _, rest = path[len("/v2/models/") :].partition("/")
        suffix = "/" + rest if rest else ""
        if name and suffix in V2_MODEL_SUFFIXES:
            return "/v2/models/{name}" + suffix
    return "other"


class _WithHardShare:
    """A registry's families plus ``lrsl_hard_share``, computed from the summed counters at scrape time."""

    def __init__(self, source) -> None:
        self.source = source

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        families = list(self.source.collect())
        totals = {s.name: s.value for f in families for s in f.samples}
        hard, texts = totals.get("lrsl_hard_texts_total", 0.0), totals.get("lrsl_texts_predicted_total", 0.0)
        share = hard / texts if texts else 0.0
        return [
            *families,
            GaugeMetricFamily("lrsl_hard_share", "hard texts / texts predicted since start", share),
        ]
