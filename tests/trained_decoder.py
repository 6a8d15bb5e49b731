"""Tiny decoder-only classifiers trained by the real pipeline, with and without LoRA, and their bundles.

``decoder_built(arch, tmp_path_factory)`` builds a random ``arch`` causal LM (``tiny_archs``: llama,
qwen2, mistral) and trains it twice with ``python -m train`` on the synthetic 4-class data, one
epoch each: with LoRA adapters of rank 4 and with full fine-tuning (``--lora-rank 0``). The embedder
is a tiny BERT sentence embedder, trained once (beside the first LoRA run) and reused by every other
run through ``--embedder-from``, as a user who tries several classifiers would. The LoRA checkpoint
is exported at fp32 and int8 with ``python -m export``; merged adapters make it an ordinary model,
so exporting the full fine-tuning checkpoint as well would test nothing more. Cached per session.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from tiny_models import make_tiny_bert
from trained_tiny import write_data

MAX_LENGTH = 32
LORA_RANK = 4
_CACHE: dict[str, DecoderBuilt] = {}
_SHARED: dict[str, Path] = {}


@dataclass(frozen=True)
class DecoderBuilt:
    arch: str
    base: Path
    data: Path
    lora: Path  # checkpoint trained with LoRA (merged)
    full: Path  # checkpoint trained with every weight
    bundle_fp32: Path
    bundle_int8: Path


def decoder_built(arch: str, tmp_path_factory) -> DecoderBuilt:
    if arch not in _CACHE:
        handler = signal.getsignal(signal.SIGTERM)  # the entry points install their own
        try:
            _CACHE[arch] = _build(arch, tmp_path_factory)
        finally:
            signal.signal(signal.SIGTERM, handler)
    return _CACHE[arch]


def train_args(data: Path, base: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("--train", str(data / "train.jsonl"), "--dev", str(data / "dev.jsonl")),
        *("--test", str(data / "test.jsonl"), "--classifier-model", str(base)),
        *("--epochs", "1", "--lr", "5e-3", "--batch-size", "8", "--max-length", str(MAX_LENGTH)),
        *("--seed", "3", "--threads", "1", "--out", str(out), *extra),
    ]


def _shared(tmp_path_factory) -> dict[str, Path]:
    if not _SHARED:
        work = tmp_path_factory.mktemp("decoder_shared")
        _SHARED["data"] = write_data(work / "data")
        _SHARED["embedder_base"] = make_tiny_bert(work / "bert")
    return _SHARED


def _build(arch: str, tmp_path_factory) -> DecoderBuilt:
    from tiny_archs import make_tiny

    from export.__main__ import main as export_main
    from train.__main__ import main as train_main

    shared = _shared(tmp_path_factory)
    work = tmp_path_factory.mktemp(f"decoder_{arch}")
    base, data = make_tiny(arch, work / "base"), shared["data"]
    if "embedder_from" in shared:
        embedder = ("--embedder-from", str(shared["embedder_from"]))
    else:
        embedder = ("--embedder-model", str(shared["embedder_base"]), "--embedder-epochs", "1")
        embedder += ("--embedder-lr", "1e-3", "--embedder-batch-size", "16")
    ckpt = {"lora": work / "ckpt-lora", "full": work / "ckpt-full"}
    code = train_main(train_args(data, base, ckpt["lora"], "--lora-rank", str(LORA_RANK), *embedder))
    assert code == 0, f"python -m train --lora-rank {LORA_RANK} failed for {arch}"
    shared.setdefault("embedder_from", ckpt["lora"])
    code = train_main(
        train_args(data, base, ckpt["full"], "--lora-rank", "0", "--embedder-from", str(ckpt["lora"]))
    )
    assert code == 0, f"python -m train --lora-rank 0 failed for {arch}"
    bundles = {}
    for precision in ("fp32", "int8"):
        bundles[precision] = work / f"bundle-{precision}"
        args = [str(ckpt["lora"]), str(bundles[precision]), "--precision", precision]
        code = export_main([*args, "--max-accuracy-drop", "100", "--threads", "1"])
        assert code == 0, f"python -m export --precision {precision} failed for {arch}"
    return DecoderBuilt(arch, base, data, ckpt["lora"], ckpt["full"], bundles["fp32"], bundles["int8"])
