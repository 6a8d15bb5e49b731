"""Tiny checkpoints trained by the real pipeline (``python -m train``) and their bundles, once per session.

``trained(arch, tmp_path_factory)`` builds a random ``arch`` base model (bert, roberta, distilbert),
trains it on the synthetic 4-class data with the real ``train`` entry point (1 epoch each), and
exports an fp32 and an int8 bundle with the real ``export`` entry point. Results are cached by
architecture for the session, so every test module that needs a trained checkpoint (the
model-agnostic tests, the data-set table, the levers) shares one build.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path

from tiny_models import make_tiny_bert, synthetic_dataset

_CACHE: dict[str, Trained] = {}
MAX_LENGTH = 32


@dataclass(frozen=True)
class Trained:
    arch: str
    base: Path
    data: Path  # train.jsonl, dev.jsonl, test.jsonl
    checkpoint: Path
    bundle_fp32: Path
    bundle_int8: Path


def write_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed, n in (("train", 0, 12), ("dev", 1, 6), ("test", 2, 6)):
        texts, labels = synthetic_dataset(n, seed=seed)
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": x, "label": y}) + "\n" for x, y in zip(texts, labels, strict=True)),
            encoding="utf-8",
        )
    return folder


def make_base(arch: str, folder: Path) -> Path:
    if arch == "bert":
        return make_tiny_bert(folder)
    from tiny_archs import make_tiny

    return make_tiny(arch, folder)


def trained(arch: str, tmp_path_factory) -> Trained:
    """Train and export a tiny ``arch`` model through the CLI entry points (cached per session).

    The entry points install their own SIGTERM handler (``lrsl_rt.signals``); the test process's is
    put back afterwards."""
    if arch in _CACHE:
        return _CACHE[arch]
    handler = signal.getsignal(signal.SIGTERM)
    try:
        _CACHE[arch] = _train_and_export(arch, tmp_path_factory)
    finally:
        signal.signal(signal.SIGTERM, handler)
    return _CACHE[arch]


def _train_and_export(arch: str, tmp_path_factory) -> Trained:
    from export.__main__ import main as export_main
    from train.__main__ import main as train_main

    work = tmp_path_factory.mktemp(f"trained_{arch}")
    base = make_base(arch, work / "base")
    data = write_data(work / "data")
    ckpt = work / "checkpoint"
    code = train_main(
        [
            *("--train", str(data / "train.jsonl"), "--dev", str(data / "dev.jsonl")),
            *("--test", str(data / "test.jsonl")),
            *("--classifier-model", str(base), "--embedder-model", str(base)),
            *("--epochs", "1", "--lr", "5e-3", "--batch-size", "8", "--max-length", str(MAX_LENGTH)),
            *("--embedder-epochs", "1", "--embedder-lr", "1e-3", "--embedder-batch-size", "4"),
            *("--seed", "3", "--out", str(ckpt)),
        ]
    )
    assert code == 0, f"python -m train failed for {arch}"
    bundles = {}
    for precision in ("fp32", "int8"):
        bundles[precision] = work / f"bundle-{precision}"
        code = export_main(
            [str(ckpt), str(bundles[precision]), "--precision", precision, "--max-accuracy-drop", "100"]
        )
        assert code == 0, f"python -m export --precision {precision} failed for {arch}"
    return Trained(arch, base, data, ckpt, bundles["fp32"], bundles["int8"])
