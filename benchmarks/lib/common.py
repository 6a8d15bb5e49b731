"""Pieces both benchmarks share: reading texts, summary statistics, running a script in a subprocess.

Texts come from a ``.txt`` (one per line), ``.csv`` (column ``text``; labels from ``label`` or
``category`` when present) or ``.jsonl`` file (fields ``text`` and ``label``/``category``). The
default is the Banking77 test split in ``../shared/datasets`` beside the checkout.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEXTS = ROOT.parent / "shared" / "datasets" / "banking77" / "test.csv"
LABEL_KEYS = ("label", "category")
RESULT_PREFIX = "BENCH_RESULT "  # a worker's JSON result line on stdout


@dataclass(frozen=True)
class Texts:
    texts: list[str]
    labels: list[str] | None  # gold labels, None when the file has none
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def read_texts(path: str | Path) -> Texts:
    """Texts (and labels when the file has them) of a .txt, .csv or .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: texts file not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return Texts([t for t in lines if t.strip()], None, str(path))
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    elif suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        raise ValueError(f"{path}: expected a .txt, .csv or .jsonl file")
    if not rows or "text" not in rows[0]:
        raise ValueError(f"{path}: no 'text' column/field in the first record")
    key = next((k for k in LABEL_KEYS if k in rows[0]), None)
    labels = [str(r[key]) for r in rows] if key else None
    return Texts([str(r["text"]) for r in rows], labels, str(path))


def subsample(texts: Texts, n: int) -> Texts:
    """``n`` evenly spaced texts (all when n <= 0 or n >= len): deterministic and, for a file sorted by
    label like Banking77's test split, spread over the labels.

    >>> subsample(Texts(list("abcdef"), None, "x"), 3).texts
    ['a', 'c', 'e']
    """
    if n <= 0 or n >= len(texts):
        return texts
    idx = [int(i * len(texts) / n) for i in range(n)]
    labels = [texts.labels[i] for i in idx] if texts.labels else None
    return Texts([texts.texts[i] for i in idx], labels, texts.source)


def write_jsonl(path: Path, texts: Texts) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts.texts):
            rec = {"text": t} if texts.labels is None else {"text": t, "label": texts.labels[i]}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def full_batches(texts, b) -> list[list[str]]:
    """ceil(n/b) batches of exactly b texts, cycling through the texts in order.

    >>> full_batches(["a", "b", "c"], 2)
    [['a', 'b'], ['c', 'a']]
    """
    n = max(1, math.ceil(len(texts) / b))
    return [[texts[(i * b + j) % len(texts)] for j in range(b)] for i in range(n)]


def latency_stats(seconds: list[float]) -> dict:
    """p50/p95/p99/mean in milliseconds of per-query times in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(ms.mean())}


def median_range(values: list[float]) -> dict:
    """Median with min and max of the rounds' values.

    >>> median_range([3.0, 1.0, 2.0])
    {'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}
    """
    v = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": len(v)}


def accuracy(pred: list[str], gold: list[str] | None) -> float | None:
    if not gold:
        return None
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def bench_env(threads: int | None = None) -> dict:
    """Environment of a benchmark subprocess: offline, the checkout importable, one thread budget."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",  # tokenizers' own thread pool would exceed the budget
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_json(cmd: list[str], env: dict, timeout: float) -> dict:
    """Run a worker command and return the JSON it printed after RESULT_PREFIX; RuntimeError if it failed."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[1:4])} ... exited {proc.returncode}:\n  " + "\n  ".join(tail))
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def emit_result(result: dict) -> None:
    """What a worker prints last: one line the parent finds with RESULT_PREFIX."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
