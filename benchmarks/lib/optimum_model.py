"""Optimum's int8 classifier for the ``optimum_int8`` contender, exported and quantized once.

``ORTModelForSequenceClassification.from_pretrained(CKPT/classifier, export=True)`` exports the
classifier; ``ORTQuantizer`` quantizes it dynamically with ``AutoQuantizationConfig.<preset>(is_static=False,
per_channel=True)`` -- Optimum's documented recipe, without its optional graph optimizer. The preset is
the int8 bundle's (so both use the same int8 kernels), else the one matching this CPU. The result is
cached in a directory keyed by the classifier's files and the preset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

OPTIMUM_FILE = "model_quantized.onnx"


def optimum_available() -> bool:
    """Whether optimum.onnxruntime (the optimum-onnx package) is installed, without importing it."""
    from importlib.util import find_spec

    spec = find_spec("optimum")
    return bool(spec and spec.submodule_search_locations) and any(
        (Path(p) / "onnxruntime").is_dir() for p in spec.submodule_search_locations
    )


def optimum_preset(flags: dict, machine: str, bundle_preset: str | None) -> str:
    """The AutoQuantizationConfig preset: the int8 bundle's, else the one matching this CPU."""
    if bundle_preset in ("avx512_vnni", "avx2", "arm64"):
        return bundle_preset
    if machine.lower() in ("aarch64", "arm64"):
        return "arm64"
    if flags.get("avx512_vnni"):
        return "avx512_vnni"
    return "avx512" if flags.get("avx512f") and flags.get("avx512bw") else "avx2"


def prepare_optimum(checkpoint: str, out_dir: str, preset: str) -> dict:
    """Export CKPT/classifier with Optimum and quantize it (dynamic int8, ``preset``) into ``out_dir``.

    A finished ``out_dir`` (holding ``model_quantized.onnx``) is reused; a run builds in a ``.partial``
    sibling and renames it into place.
    """
    from optimum.onnxruntime import AutoQuantizationConfig, ORTModelForSequenceClassification, ORTQuantizer

    out = Path(out_dir)
    if (out / OPTIMUM_FILE).is_file():
        return {"cached": True, "dir": str(out), "preset": preset}
    t = time.perf_counter()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = ORTModelForSequenceClassification.from_pretrained(Path(checkpoint) / "classifier", export=True)
    model.save_pretrained(tmp / "fp32")
    config = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=True)
    ORTQuantizer.from_pretrained(tmp / "fp32").quantize(quantization_config=config, save_dir=tmp / "int8")
    (tmp / "int8" / "benchmark.json").write_text(
        json.dumps({"preset": preset, "checkpoint": str(checkpoint)}) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    (tmp / "int8").rename(out)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"cached": False, "dir": str(out), "preset": preset, "seconds": time.perf_counter() - t}


def cache_dir(checkpoint: str, root: Path, preset: str) -> Path:
    """``root/optimum_<preset>_<hash of the classifier's files>``."""
    h = hashlib.sha256(preset.encode())
    for f in sorted((Path(checkpoint) / "classifier").iterdir()):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return root / f"optimum_{preset}_{h.hexdigest()[:12]}"
