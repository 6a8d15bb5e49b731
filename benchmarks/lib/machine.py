"""The machine a benchmark ran on, and the int8 peak its cores could reach.

Peak int8 multiply-accumulates per second = cores used x clock x int8 MACs per cycle per core, with
the MACs per cycle taken from the best int8 instruction set the CPU flags show. These are stated
assumptions (throughput of the dot-product instruction on its ports), not measurements:

==============================  =========  ========================================================
ISA (flag)                      MACs/cyc   assumption
==============================  =========  ========================================================
AMX (amx_int8)                  1024       one TMUL per core: a 16x64 by 64x16 int8 tile product
                                           (16,384 MACs) every 16 cycles
AVX-512 VNNI, Intel             128        2 FMA units x one 512-bit VPDPBUSD (64 u8*s8 MACs)
AVX-512 VNNI, AMD Zen 4         64         512-bit ops run as two 256-bit halves: 2 pipes x 32 MACs
(family 25; Zen 5 counts 128)
AVX-VNNI (avx_vnni)             64         2 ports x one 256-bit VPDPBUSD (32 MACs)
AVX2                            32         VPMADDUBSW + VPMADDWD: 32 MACs per 2 instructions, 2 ports
ARM dot product (asimddp)       32         2 NEON pipes x one 128-bit SDOT (16 MACs)
==============================  =========  ========================================================

The clock is the one the (virtual) CPU reports in ``/proc/cpuinfo`` ("cpu MHz"), else lscpu's max;
turbo is not counted, so the true peak may be higher and the utilisation lower than shown.

MACs of a BERT-like classifier for one query of S tokens (L layers, hidden H, intermediate I,
C labels): linear layers, which dynamic quantization runs in int8, L x (4 S H^2 + 2 S H I) plus the
pooler and head (H^2 + H C, counted once); the attention products QK^T and AV, which stay float,
L x 2 S^2 H.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
_ISA = (  # (flag, "vendor/family" or None, name, MACs/cycle/core, assumption)
    ("amx_int8", None, "AMX-INT8", 1024, "one AMX TMUL per core: 16x64 by 64x16 int8 tiles (16,384 MACs) every 16 cycles"),
    ("avx512_vnni", "AuthenticAMD/25", "AVX-512 VNNI (AMD Zen 4)", 64,
     "Zen 4 runs a 512-bit VPDPBUSD as two 256-bit halves on its 2 multiply pipes: 2 x 32 u8*s8 MACs per cycle"),
    ("avx512_vnni", None, "AVX-512 VNNI", 128, "2 FMA units x 64 u8*s8 MACs (one 512-bit VPDPBUSD each) per cycle"),
    ("avx_vnni", None, "AVX-VNNI", 64, "2 ports x 32 u8*s8 MACs (one 256-bit VPDPBUSD each) per cycle"),
    ("avx2", None, "AVX2", 32, "VPMADDUBSW + VPMADDWD: 32 u8*s8 MACs per 2 instructions on 2 ports, ~32 per cycle"),
    ("asimddp", None, "ARM dot product", 32, "2 NEON pipes x 16 int8 MACs (one 128-bit SDOT each) per cycle"),
)  # fmt: skip


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """Model, vendor, clock (MHz), int8-relevant flags and core counts of this CPU."""
    fields: dict[str, str] = {}
    try:
        for line in Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:  # the first processor's entry
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    mhz = _float(fields.get("cpu MHz")) or _lscpu_max_mhz()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "vendor": fields.get("vendor_id", ""),
        "family": fields.get("cpu family", ""),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "clock_mhz": mhz,
        "clock_source": "/proc/cpuinfo cpu MHz" if _float(fields.get("cpu MHz")) else "lscpu CPU max MHz",
        "int8_flags": {f: f in flags for f in INT8_FLAGS},
    }


def int8_isa(cpu: dict) -> tuple[str, int, str]:
    """(ISA name, int8 MACs per cycle per core, assumption) for the best int8 path the flags show."""
    flags = {f for f, present in cpu["int8_flags"].items() if present}
    for flag, vendor, name, macs, why in _ISA:
        if flag in flags and (vendor is None or vendor == f"{cpu['vendor']}/{cpu['family']}"):
            return name, macs, why
    return "SSE4 / scalar", 16, "no int8 dot-product instruction found; 128-bit PMADDUBSW, ~16 MACs per cycle"


def int8_peak(cpu: dict, cores: int) -> dict:
    """Peak int8 MACs/s of ``cores`` cores, with the assumption spelled out."""
    name, per_cycle, why = int8_isa(cpu)
    mhz = cpu["clock_mhz"]
    peak = cores * mhz * 1e6 * per_cycle if mhz else None
    return {
        "isa": name,
        "macs_per_cycle_per_core": per_cycle,
        "clock_mhz": mhz,
        "cores": cores,
        "peak_macs_per_s": peak,
        "assumption": f"{cores} cores x {mhz} MHz ({cpu['clock_source']}, no turbo) x {per_cycle} int8 MACs/cycle "
        f"({name}: {why})",
    }


def classifier_macs(config: dict, seq_len: int) -> dict:
    """MACs of one query of ``seq_len`` tokens through a BERT-like classifier (see the module docstring).

    >>> classifier_macs({"num_hidden_layers": 1, "hidden_size": 2, "intermediate_size": 4, "id2label": {0: "a"}}, 3)
    {'int8_linear': 102, 'float_attention': 36}
    """
    layers = _first(config, "num_hidden_layers", "n_layers", "num_layers")
    hidden = _first(config, "hidden_size", "dim", "d_model")
    inter = _first(config, "intermediate_size", "hidden_dim", "ffn_dim") or 4 * hidden
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    s = seq_len
    linear = layers * (4 * s * hidden * hidden + 2 * s * hidden * inter) + hidden * hidden + hidden * labels
    return {"int8_linear": linear, "float_attention": layers * 2 * s * s * hidden}


def versions() -> dict:
    """Versions of the libraries that matter, read from package metadata (nothing heavy is imported)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (
        "lrsl-rt",
        "onnxruntime",
        "onnxruntime-gpu",
        "numpy",
        "tokenizers",
        "torch",
        "transformers",
        "optimum",
        "optimum-onnx",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    if out["lrsl-rt"] is None:
        from lrsl_rt import __version__

        out["lrsl-rt"] = f"{__version__} (checkout, not installed)"
    try:
        import onnxruntime

        out["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        out["onnxruntime_providers"] = []
    out["executable"] = sys.executable
    return out


def _first(config: dict, *keys):
    return next((config[k] for k in keys if config.get(k)), None)


def _float(value) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _lscpu_max_mhz() -> float | None:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CPU max MHz:\s*([\d.]+)", text)
    return float(m.group(1)) if m else None
