"""Measuring one contender of ``latency.py`` inside its own worker process.

:func:`measure` runs, in order: library import, load, warm-up (``--warmup`` queries at batch 1 and one
batch of each size), batch-1 latency with tokenization (these predictions give the accuracy and the
hard share), batch-1 latency without tokenization, throughput at each batch size (full batches,
texts cycled when there are fewer than a batch), then the peak RSS of the process. The garbage
collector is paused inside the timed loops.

Shortcut: an int8 model's answers depend on the batch (dynamic quantization scales activations per
batch), so the accuracy reported is that of the batch-1 run.

For the full LRSL path the stage table is the Reranker's own ``on_run`` hook summed over the very
calls that are timed (batch 1 and the largest batch size): each stage of :data:`lrsl_rt.defaults.STAGES`
in milliseconds per query, beside the measured time; what no stage covers is ``unattributed``.
"""

from __future__ import annotations

import gc
import resource
import sys
import time

import numpy as np

from benchmarks.lib.abstain_worker import StageClock
from benchmarks.lib.common import accuracy, full_batches, latency_stats
from benchmarks.lib.contenders import CONTENDERS, LrslFull, Output


def measure(name: str, opts, texts: list[str], gold: list[str] | None) -> dict:
    """Everything ``latency.py`` reports about one contender, measured in this process."""
    c = CONTENDERS[name](opts)
    t = time.perf_counter()
    c.setup()
    import_s = time.perf_counter() - t
    t = time.perf_counter()
    c.load()
    load_s = time.perf_counter() - t
    rss_load = _rss_mb()
    for text in texts[: opts.warmup]:
        c.classify([text])
    for b in opts.batch_sizes:
        c.classify(full_batches(texts, b)[0])
    full = isinstance(c, LrslFull)
    clocks = {str(b): StageClock() for b in sorted({1, max(opts.batch_sizes)})} if full else {}
    with _hook(c, clocks.get("1")):
        b1_times, out = _batch1(c, texts)
    model_times = _model_only(c, texts, opts.warmup)
    qps, batch_labels = {}, {}
    for b in opts.batch_sizes:
        with _hook(c, clocks.get(str(b)) if b != 1 else None):
            qps[str(b)], batch_labels[str(b)] = _throughput(c, texts, b)
    result = {
        "contender": name,
        "providers": list(c.providers),
        "import_s": import_s,
        "load_s": load_s,
        "b1": latency_stats(b1_times),
        "b1_model": latency_stats(model_times),
        "qps": qps,
        "rss_after_load_mb": rss_load,
        "rss_peak_mb": _peak_rss_mb(),
        **_quality(out, gold, c.labels),
    }
    if full:
        result["breakdown"] = _breakdown(clocks, texts, out, b1_times, qps, batch_labels)
    return result


class _hook:
    """``with _hook(contender, clock)``: the Reranker's ``on_run`` is ``clock`` inside (nothing when None)."""

    def __init__(self, c, clock):
        self.r, self.clock = getattr(c, "r", None), clock

    def __enter__(self):
        if self.clock is not None:
            self.r.on_run = self.clock

    def __exit__(self, *exc):
        if self.clock is not None:
            self.r.on_run = None


def _timed(fn, items) -> tuple[list[float], list]:
    gc.collect()
    gc.disable()
    try:
        times, outs = [], []
        for item in items:
            t = time.perf_counter()
            outs.append(fn(item))
            times.append(time.perf_counter() - t)
    finally:
        gc.enable()
    return times, outs


def _batch1(c, texts) -> tuple[list[float], Output]:
    times, outs = _timed(lambda t: c.classify([t]), texts)
    merged = Output([o.labels[0] for o in outs])
    if outs and outs[0].hard is not None:
        merged.classifier_labels = [o.classifier_labels[0] for o in outs]
        merged.hard = [o.hard[0] for o in outs]
        merged.out_of_scope = [o.out_of_scope[0] for o in outs]
    return times, merged


def _model_only(c, texts, warmup) -> list[float]:
    inputs = [c.encode(t) for t in texts]
    for x in inputs[:warmup]:
        c.run_encoded(x)
    return _timed(c.run_encoded, inputs)[0]


def _throughput(c, texts, b) -> tuple[float, list[str]]:
    """(queries per second, the labels of the calls in order) over full batches of ``b``."""
    batches = full_batches(texts, b)
    times, outs = _timed(c.classify, batches)
    return b * len(batches) / sum(times), [label for o in outs for label in o.labels]


def _quality(out: Output, gold, model_labels) -> dict:
    """Accuracy and the hard share, from the batch-1 run. When some gold labels are not the model's
    (out-of-scope texts), accuracy is over the in-scope texts only (an abstained one counts wrong) and
    the out-of-scope recall is the share of the others the contender abstained on."""
    labels = set(model_labels)
    known = gold is not None and set(gold) <= labels
    q = {
        "n": len(out.labels),
        "labels_match_model": known,
        "accuracy_classifier": accuracy(out.classifier_labels or out.labels, gold) if known else None,
        "accuracy_lrsl": None,
        "hard_share": None,
        "oos_recall": None,
    }
    inscope = np.array([g in labels for g in gold]) if gold is not None else None
    if gold is not None and not known and inscope.any():
        pick = lambda xs: [x for x, i in zip(xs, inscope, strict=True) if i]  # noqa: E731
        q["accuracy_classifier"] = accuracy(pick(out.classifier_labels or out.labels), pick(gold))
        q["inscope_texts"], q["oos_texts"] = int(inscope.sum()), int((~inscope).sum())
    if out.hard is not None:
        q["hard_share"] = float(np.mean(out.hard)) if out.hard else None
        if known:
            q["accuracy_lrsl"] = accuracy(out.labels, gold)
        elif gold is not None and inscope.any():
            q["accuracy_lrsl"] = accuracy(pick(out.labels), pick(gold))
            flagged = np.asarray(out.out_of_scope or [False] * len(gold))
            q["oos_recall"] = float(flagged[~inscope].mean()) if (~inscope).any() else None
    return q


def _breakdown(clocks: dict, texts, out: Output, b1_times, qps, batch_labels) -> dict:
    """Stage times summed by the ``on_run`` hook over the timed calls at batch 1 and at the largest
    batch, with the measured ``predict`` time of the same calls beside them."""
    res = {}
    n = len(out.labels)  # the full batches start with the texts in order
    for b, clock in clocks.items():
        if b == "1":
            measured, queries = 1e3 * float(np.mean(b1_times)), n
            same = 1.0
        else:
            queries = len(batch_labels[b])
            measured = 1e3 / qps[b]
            same = float(np.mean(np.asarray(batch_labels[b][:n]) == np.asarray(out.labels)))
        ms = {s: 1e3 * v / queries for s, v in clock.seconds.items()}
        res[b] = {
            "ms_per_query": ms,
            "predict_ms_per_query": measured,
            "unattributed_ms_per_query": measured - sum(ms.values()),
            "labels_agree_with_batch1_predict": same,
        }
    return res


def _rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
