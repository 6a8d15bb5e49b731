"""Measuring one contender of ``latency.py`` inside its own worker process.

:func:`measure` runs, in order: library import, load, warm-up (``--warmup`` queries at batch 1 and one
batch of each size), batch-1 latency with tokenization (these predictions give the accuracy and the
hard share), batch-1 latency without tokenization, throughput at each batch size (full batches,
texts cycled when there are fewer than a batch), then the peak RSS of the process. The garbage
collector is paused inside the timed loops.

Shortcut: an int8 model's answers depend on the batch (dynamic quantization scales activations per
batch), so the accuracy reported is that of the batch-1 run.
"""

from __future__ import annotations

import gc
import resource
import sys
import time

import numpy as np

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
    b1_times, out = _batch1(c, texts)
    model_times = _model_only(c, texts, opts.warmup)
    qps = {str(b): _throughput(c, texts, b) for b in opts.batch_sizes}
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
    if isinstance(c, LrslFull):
        result["breakdown"] = _breakdown(c, texts, opts.batch_sizes, out, b1_times, qps)
    return result


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
    return times, merged


def _model_only(c, texts, warmup) -> list[float]:
    inputs = [c.encode(t) for t in texts]
    for x in inputs[:warmup]:
        c.run_encoded(x)
    return _timed(c.run_encoded, inputs)[0]


def _throughput(c, texts, b) -> float:
    batches = full_batches(texts, b)
    times, _ = _timed(c.classify, batches)
    return b * len(batches) / sum(times)


def _quality(out: Output, gold, model_labels) -> dict:
    """Accuracy (when the texts' labels are the model's) and the hard share, from the batch-1 run."""
    known = gold is not None and set(gold) <= set(model_labels)
    q = {
        "n": len(out.labels),
        "labels_match_model": known,
        "accuracy_classifier": accuracy(out.classifier_labels or out.labels, gold) if known else None,
        "accuracy_lrsl": None,
        "hard_share": None,
    }
    if out.hard is not None:
        q["accuracy_lrsl"] = accuracy(out.labels, gold) if known else None
        q["hard_share"] = float(np.mean(out.hard)) if out.hard else None
    return q


def _breakdown(c: LrslFull, texts, batch_sizes, out: Output, b1_times, qps) -> dict:
    """Stage times at batch 1 and at the largest batch, with the measured predict() time beside them."""
    res = {}
    for b in sorted({1, max(batch_sizes)}):
        gc.collect()
        gc.disable()
        try:
            d = c.breakdown(full_batches(texts, b))
        finally:
            gc.enable()
        measured = (
            1e3 * float(np.mean(b1_times)) if b == 1 else (1e3 / qps[str(b)] if str(b) in qps else None)
        )
        n = len(out.labels)  # the full batches start with the texts in order
        res[str(b)] = {
            "ms_per_query": d["ms_per_query"],
            "predict_ms_per_query": measured,
            "labels_agree_with_batch1_predict": float(
                np.mean(np.asarray(d["labels"][:n]) == np.asarray(out.labels))
            ),
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
