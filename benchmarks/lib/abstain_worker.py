"""One worker of ``abstain_cost.py``: one bundle, one thread pool, abstain on and off in alternating rounds.

Both modes run in the same process on the same loaded Reranker (``predict(texts, abstain=...)``), so
the ratio of the two compares like with like on a drifting machine: each round times abstain on,
then off (the order flips every round), at batch 1 (one text per call, tokenization included) and
at the largest batch size (full batches of consecutive texts). The Reranker's ``on_run`` hook sums
each stage's seconds over exactly the timed calls, so the stage table adds up against the measured
time; what no stage covers (records, bookkeeping) is ``unattributed``.
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict

import numpy as np

from benchmarks.lib.common import full_batches


class StageClock:
    """The ``on_run`` hook: seconds per stage, summed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


def timed_calls(r, calls: list[list[str]], abstain: bool) -> tuple[list[float], dict, list]:
    """(seconds per call, stage seconds summed over the calls, predictions) of ``r.predict``."""
    clock = StageClock()
    r.on_run = clock
    gc.collect()
    gc.disable()
    try:
        times, preds = [], []
        for texts in calls:
            t0 = time.perf_counter()
            preds += r.predict(texts, abstain=abstain)
            times.append(time.perf_counter() - t0)
    finally:
        gc.enable()
        r.on_run = None
    return times, dict(clock.seconds), preds


def stage_row(times: list[float], stages: dict, n_texts: int) -> dict:
    """Milliseconds per text of each stage and of the measured calls, and what no stage covers."""
    total = 1e3 * sum(times) / n_texts
    ms = {s: 1e3 * v / n_texts for s, v in stages.items()}
    return {
        "ms_per_text": ms,
        "measured_ms_per_text": total,
        "unattributed_ms_per_text": total - sum(ms.values()),
    }


def quality(preds, gold: list[str] | None, labels) -> dict:
    """In-scope accuracy (an abstained in-scope text counts wrong) and out-of-scope recall; a text
    whose gold label is not one of the bundle's is out of scope."""
    if gold is None:
        return {}
    known = set(labels)
    inscope = np.array([g in known for g in gold])
    right = np.array([p.label == g for p, g in zip(preds, gold, strict=True)])
    flagged = np.array([bool(p.out_of_scope) for p in preds])
    return {
        "inscope_texts": int(inscope.sum()),
        "oos_texts": int((~inscope).sum()),
        "inscope_accuracy": float(right[inscope].mean()) if inscope.any() else None,
        "oos_recall": float(flagged[~inscope].mean()) if (~inscope).any() else None,
        "hard_share": float(np.mean([p.hard for p in preds])),
    }


def run_worker(bundle: str, texts: list[str], gold, threads: int, pool: str, batch: int, rounds: int) -> dict:
    """Every figure of one (bundle, thread pool) pair."""
    from lrsl_rt import Reranker

    r = Reranker.from_bundle(bundle, threads=threads, thread_pool=pool)
    calls = {1: [[t] for t in texts], batch: full_batches(texts, batch)}
    for abstain in (True, False):  # warm-up: every code path once
        for c in calls.values():
            r.predict(c[0], abstain=abstain)
    out = {"pool": pool, "rounds": {"on": defaultdict(list), "off": defaultdict(list)}, "quality": {}}
    for i in range(rounds):
        modes = ("on", "off") if i % 2 == 0 else ("off", "on")
        for b, cs in calls.items():
            for mode in modes:
                times, stages, preds = timed_calls(r, cs, abstain=mode == "on")
                n = sum(len(c) for c in cs)
                rec = stage_row(times, stages, n)
                rec["p50_ms"] = 1e3 * float(np.median(times)) if b == 1 else None
                rec["qps"] = n / sum(times)
                out["rounds"][mode][str(b)].append(rec)
                if i == 0 and b == 1:
                    out["quality"][mode] = quality(preds, gold, r.labels)
                    out["embedded_share_" + mode] = _embedded_share(r, texts, mode == "on")
    out["rounds"] = {m: dict(v) for m, v in out["rounds"].items()}
    return out


def _embedded_share(r, texts: list[str], abstain: bool) -> float:
    """Share of the texts the embedder ran on (one text per call, as timed)."""
    rows = {"n": 0}
    real = r.embedder

    class Counting:
        def run(self, arrays):
            rows["n"] += len(arrays["input_ids"])
            return real.run(arrays)

        def __getattr__(self, name):
            return getattr(real, name)

    r.embedder = Counting()
    try:
        for t in texts:
            r.predict([t], abstain=abstain)
    finally:
        r.embedder = real
    return rows["n"] / max(len(texts), 1)
