"""Graph optimisation, int8 quantization presets and fp16 conversion of the exported fp32 graphs.

- :func:`optimize_graph`: ONNX Runtime's transformer optimizer (``model_type="bert"``, heads and width
  from the HF config, ``opt_level=0`` so only portable fusions are written: EmbedLayerNormalization,
  Attention, SkipLayerNormalization, BiasGelu). Graphs it does not recognise come out unfused.
- :func:`quantize_graph`: dynamic int8 quantization (weights int8 offline, activations uint8 at run
  time), with a named preset per CPU family. ``avx512_vnni``, ``avx2`` and ``arm64`` copy optimum's
  ``AutoQuantizationConfig.<preset>(is_static=False)``: all operators of ONNX Runtime's IntegerOps
  registry, symmetric weights, asymmetric uint8 activations, per-channel weights and

  ============  ============  ============  =====================================================
  preset        weights       reduce_range  why
  ============  ============  ============  =====================================================
  avx512_vnni   QInt8 (U8S8)  False         VPDPBUSD computes u8 x s8 without saturation
  avx2          QUInt8 (U8U8) False         AVX2's u8 x s8 path (VPMADDUBSW) can saturate;
                                            optimum avoids it with uint8 weights
  avx2_s8rr     QInt8 (U8S8)  True          ours, the default on AVX2-only CPUs: 7-bit weights
                                            keep VPMADDUBSW's pair sums in int16 (255 x 63 x 2
                                            < 32767), so the faster u8 x s8 kernel runs without
                                            saturation (ONNX Runtime's advice for AVX2)
  arm64         QInt8 (U8S8)  False         NEON/SDOT kernels
  ============  ============  ============  =====================================================

  ``avx2_s8rr`` against ``avx2`` in speed and accuracy: docs/results/ (``benchmarks/int8_variants.py``).

  ``DefaultTensorType=FLOAT`` lets the quantizer type the outputs of the fused com.microsoft ops,
  which ONNX shape inference cannot.

  ``static_avx512_vnni`` and ``static_avx2_s8rr`` are the same int8 graphs with *static* activation
  scales calibrated on training texts (:mod:`export.static_quant`): a text's logits do not depend on
  the other texts of its batch (``QuantPreset.batch_invariant``; dynamic scales are computed over
  the whole batch tensor, padding included). They need calibration texts
  (:mod:`export.calibration`). Which preset a CPU gets when none is named: :data:`DEFAULT_PRESETS`
  (static on VNNI CPUs, dynamic elsewhere).
- :func:`to_fp16`: fp16 weights and compute for GPUs, inputs and outputs kept as they were (logits
  and embeddings stay float32).

The int8/fp16 file names carry precision and preset (``classifier_int8_avx2.onnx``), see
:func:`model_file_name`.
"""

from __future__ import annotations

import logging
import platform
import shutil
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from lrsl_rt.defaults import PRECISIONS
from lrsl_rt.errors import UsageError

from .errors import ExportError

# ops that carry int8 weights after dynamic quantization; QAttention holds the Q, K and V projections
QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "QGemm")


@dataclass(frozen=True)
class QuantPreset:
    name: str
    weight_type: str  # "QInt8" or "QUInt8" (onnxruntime.quantization.QuantType member)
    per_channel: bool
    reduce_range: bool
    activations: str = "dynamic"  # "dynamic": scaled per batch at run time; "static": calibrated once
    calibration: str | None = None  # static only: minmax, percentile or entropy (export.static_quant)

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's result is independent of the other texts in its batch."""
        return self.activations == "static"


PRESETS = {
    "avx512_vnni": QuantPreset("avx512_vnni", "QInt8", per_channel=True, reduce_range=False),
    "avx2": QuantPreset("avx2", "QUInt8", per_channel=True, reduce_range=False),
    "avx2_s8rr": QuantPreset("avx2_s8rr", "QInt8", per_channel=True, reduce_range=True),
    "arm64": QuantPreset("arm64", "QInt8", per_channel=True, reduce_range=False),
    # entropy rather than min-max: the choice of benchmarks/quant_presets.py (docs/guide/quantization.md)
    "static_avx512_vnni": QuantPreset(
        "static_avx512_vnni", "QInt8", True, False, activations="static", calibration="entropy"
    ),
    "static_avx2_s8rr": QuantPreset(
        "static_avx2_s8rr", "QInt8", True, True, activations="static", calibration="minmax"
    ),
}

# The preset each CPU family gets when none is named -- the one place to change the default
# (docs/guide/quantization.md says why these). VNNI CPUs get the static, batch-invariant preset: it was
# measured there against the dynamic one; the others keep a dynamic preset until the static one is
# measured on such a CPU. A static default falls back to its dynamic twin for a checkpoint without
# calibration texts (export.calibration.default_preset).
DEFAULT_PRESETS = {"avx512_vnni": "static_avx512_vnni", "avx2": "avx2_s8rr", "arm64": "arm64"}


def cpu_family(cpuinfo: str | Path = "/proc/cpuinfo", machine: str | None = None) -> str:
    """arm64 on aarch64/arm64, avx512_vnni when the CPU flags have it, else avx2."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    try:
        flags = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        flags = ""
    return "avx512_vnni" if "avx512_vnni" in flags.split() else "avx2"


def detect_preset(cpuinfo: str | Path = "/proc/cpuinfo", machine: str | None = None) -> str:
    """The default preset for this machine: ``DEFAULT_PRESETS[cpu_family()]``."""
    return DEFAULT_PRESETS[cpu_family(cpuinfo, machine)]


def dynamic_twin(preset: str) -> str:
    """The dynamic preset with the same int8 weights as ``preset`` (``preset`` itself when dynamic).

    >>> dynamic_twin("static_avx512_vnni"), dynamic_twin("arm64")
    ('avx512_vnni', 'arm64')
    """
    return preset.removeprefix("static_")


def resolve_precision(precision: str, preset: str | None) -> str | None:
    """Checked (precision, preset) combination; returns the preset to use (None unless int8)."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "int8":
        if preset is not None:
            raise UsageError(f"--preset {preset} only applies to --precision int8, not {precision}")
        return None
    preset = preset or detect_preset()
    if preset not in PRESETS:
        raise UsageError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return preset


def model_file_name(role: str, precision: str, preset: str | None) -> str:
    """File name of a shipped graph: role, precision and, for int8, the preset.

    >>> model_file_name("classifier", "int8", "avx512_vnni"), model_file_name("embedder", "fp32", None)
    ('classifier_int8_avx512_vnni.onnx', 'embedder_fp32.onnx')
    """
    return f"{role}_{precision}{'_' + preset if preset else ''}.onnx"


def optimize_graph(src: Path, dst: Path, hf_config, use_gpu: bool = False) -> dict[str, int]:
    """Fuse the transformer blocks of ``src`` into ``dst``; returns the fused-operator counts (non-zero only)."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads = getattr(hf_config, "num_attention_heads", None)
    hidden = getattr(hf_config, "hidden_size", None)
    if not heads or not hidden:
        raise ExportError(
            f"{type(hf_config).__name__} has no num_attention_heads/hidden_size; use --no-optimize"
        )
    with _quiet_logging():  # the fusion passes warn about table sizes of tiny test models
        model = optimize_model(
            str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0, use_gpu=use_gpu
        )
        stats = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(dst))
    return stats


def quantize_graph(
    src: Path, dst: Path, preset: str | QuantPreset, nodes_to_exclude=(), calibration_feeds=None
) -> Path:
    """int8 quantization of ``src`` with a named preset (see the module docstring) or a
    :class:`QuantPreset` of one's own; ``nodes_to_exclude`` stay fp32 (benchmarks/int8_variants.py).
    Static presets need ``calibration_feeds``: model inputs of one text each (export.calibration)."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    if p.activations == "static":
        from .static_quant import quantize_static_graph

        if not calibration_feeds:
            raise ExportError(f"preset {p.name} calibrates activation scales and needs calibration texts")
        dynamic = replace(p, activations="dynamic", calibration=None)
        return quantize_static_graph(
            src,
            dst,
            lambda d: quantize_graph(src, d, dynamic, nodes_to_exclude),
            calibration_feeds,
            p.calibration,
        )
    return _quantize_dynamic(src, dst, p, nodes_to_exclude)


def _quantize_dynamic(src: Path, dst: Path, p: QuantPreset, nodes_to_exclude) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic warns on the root logger about optional pre-processing
    with _quiet_logging():
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=p.per_channel,
            reduce_range=p.reduce_range,
            weight_type=getattr(QuantType, p.weight_type),
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
                "MatMulConstBOnly": True,
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
        )
    return dst


def to_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and compute; graph inputs/outputs keep their types (logits stay float32)."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
    return dst


@contextmanager
def _quiet_logging():
    """Drop WARNING and below while ONNX Runtime's tools run (they log through module-level loggers
    whose names depend on how onnxruntime.transformers was imported); errors still show."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def convert(src: Path, dst: Path, precision: str, preset: str | None, calibration_feeds=None) -> Path:
    """The shipped graph: ``src`` (fp32) quantized, converted to fp16, or copied as is."""
    if precision == "int8":
        return quantize_graph(src, dst, preset, calibration_feeds=calibration_feeds)
    if precision == "fp16":
        return to_fp16(src, dst)
    shutil.copyfile(src, dst)
    return dst


def graph_summary(raw: Path, shipped: Path, fused: dict) -> dict:
    """Size, node count and linear layers of a shipped graph (for manifest.metrics["graphs"]).

    ``linear_layers`` counts MatMul/Gemm nodes with a constant weight in the unoptimised export
    ``raw`` (what int8 should quantize; layers whose output the graph never uses are pruned);
    ``quantized_linear`` counts those running in int8 in ``shipped``.
    """
    import onnx

    model = onnx.load(str(raw), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    linear = sum(n.op_type in ("MatMul", "Gemm") and n.input[1] in weights for n in model.graph.node)
    counts = op_counts(shipped)
    return {
        "file": shipped.name,
        "size": shipped.stat().st_size,
        "nodes": sum(counts.values()),
        "linear_layers": linear,
        "quantized_linear": quantized_linear_count(counts),
        "fused": fused,
    }


def op_counts(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def quantized_linear_count(counts: Counter) -> int:
    """Linear layers that run in int8: one per quantized MatMul/Gemm, three (Q, K, V) per QAttention."""
    return sum(counts[op] for op in QUANTIZED_OPS if op != "QAttention") + 3 * counts["QAttention"]
