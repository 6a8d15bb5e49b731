"""Static int8: the dynamic int8 graph with activation scales calibrated once, so a text's result
does not depend on the other texts of its batch.

Dynamic quantization (``quantize_dynamic``) puts a ``DynamicQuantizeLinear`` in front of every int8
MatMul/Attention: it scales the activations by the min and max of the *whole batch tensor*, padding
rows included, so a text's logits move with its batch neighbours. Here each of those nodes becomes a
``QuantizeLinear`` with a constant scale and zero point (uint8, asymmetric, as the dynamic node would
compute them) taken from activation ranges measured on calibration texts. Everything else of the
dynamic graph stays: int8 weights (per channel), ``QAttention`` for the Q/K/V projections,
``MatMulInteger`` for the other linear layers, layer norms, GELU and softmax in fp32. With fixed
scales each row is quantized alone and int8 products are summed exactly in int32, so a row's
result is the same in any batch up to the float summation order of the fp32 operators.

Calibration (:func:`activation_ranges`): the fp32 graph runs on each calibration text alone (no
padding, so pad positions never widen a range) with the quantized tensors exposed as outputs; the
range of each tensor is its min/max over all texts (``minmax``), or what ONNX Runtime's
``HistogramCollector`` chooses (``percentile``: the central 99.999 %, ``entropy``: the KL-optimal
clip). Values outside the range saturate at run time.

>>> static_scale_zero_point(-1.0, 3.0)  # 4 / 255 per step; zero sits at step 64 (rounded)
(0.01568627543747425, 64)
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import ExportError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
PERCENTILE = 99.999


def activation_tensors(dynamic_graph) -> list[str]:
    """Names of the float tensors that the dynamic graph quantizes at run time (inputs of its
    DynamicQuantizeLinear nodes), in graph order."""
    return [n.input[0] for n in dynamic_graph.graph.node if n.op_type == "DynamicQuantizeLinear"]


def collect_activations(fp32_path: Path, tensors: list[str], feeds: Iterable[dict], chunk: int = 32):
    """Yield ``{tensor: [array per feed]}`` for chunks of ``chunk`` feeds, running the fp32 graph
    with ``tensors`` added as outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fp32_path))
    have = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}  # a stage graph quantizes its hidden_states input
    produced = {o for n in model.graph.node for o in n.output} | inputs
    missing = [t for t in tensors if t not in produced]
    if missing:
        raise ExportError(
            f"{fp32_path.name}: no tensor(s) {missing[:3]} to calibrate; graph and fp32 source differ"
        )
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
        for t in tensors
        if t not in have and t not in inputs
    )
    computed = [t for t in tensors if t not in inputs]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calibration.onnx"
        onnx.save(model, str(path))
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    batch: dict[str, list] = {t: [] for t in tensors}
    n = 0
    for feed in feeds:
        values = dict(zip(computed, session.run(computed, {k: feed[k] for k in names}), strict=True))
        for t in tensors:
            batch[t].append(values[t] if t in values else np.asarray(feed[t]))
        n += 1
        if n % chunk == 0:
            yield batch
            batch = {t: [] for t in tensors}
    if batch[tensors[0]] if tensors else False:
        yield batch
    if n == 0:
        raise ExportError("no calibration texts: static quantization needs some to measure activation ranges")


def activation_ranges(
    fp32_path: Path, tensors: list[str], feeds: Iterable[dict], method: str = "minmax"
) -> dict[str, tuple[float, float]]:
    """(min, max) to quantize each tensor with, measured on ``feeds`` (one text each) by ``method``."""
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if method == "minmax":
        lo = {t: np.inf for t in tensors}
        hi = {t: -np.inf for t in tensors}
        for batch in collect_activations(fp32_path, tensors, feeds):
            for t, arrays in batch.items():
                lo[t] = min(lo[t], *(float(a.min()) for a in arrays))
                hi[t] = max(hi[t], *(float(a.max()) for a in arrays))
        return {t: (lo[t], hi[t]) for t in tensors}
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(
        method=method,
        symmetric=False,
        num_bins=2048 if method == "percentile" else 128,
        num_quantized_bins=128,
        percentile=PERCENTILE,
        scenario="same",
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the collector prints progress
        for batch in collect_activations(fp32_path, tensors, feeds):
            collector.collect(
                {t: [np.concatenate([a.ravel() for a in arrays])] for t, arrays in batch.items()}
            )
        result = collector.compute_collection_result()
    return {t: (float(result[t][0]), float(result[t][1])) for t in tensors}


def static_scale_zero_point(rmin: float, rmax: float) -> tuple[float, int]:
    """uint8 scale and zero point for the range [rmin, rmax], widened to hold 0 -- what
    DynamicQuantizeLinear computes from a tensor with that min and max."""
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    scale = np.float32((rmax - rmin) / 255.0) if rmax > rmin else np.float32(1.0)
    zero_point = int(np.clip(np.rint(-rmin / scale), 0, 255))
    return float(scale), zero_point


def make_static(dynamic_path: Path, dst: Path, ranges: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Write ``dynamic_path`` to ``dst`` with each DynamicQuantizeLinear replaced by a QuantizeLinear
    of constant scale and zero point from ``ranges``, and each ``MatMulInteger -> Cast -> Mul(scale
    product)`` chain fused into one ``MatMulIntegerToFloat`` (ONNX Runtime fuses that chain itself
    only while the scales come from a DynamicQuantizeLinear; once constant, its constant folding
    runs first and the chain would stay three operators). Returns the counts of both rewrites."""
    import onnx

    model = onnx.load(str(dynamic_path))
    graph = model.graph
    replaced = _static_quantize_nodes(graph, ranges, dynamic_path.name)
    fused = _fuse_matmul_integer(graph)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return {"static_quantize": replaced, "matmul_integer_to_float": fused}


def _static_quantize_nodes(graph, ranges: dict, where: str) -> int:
    from onnx import helper, numpy_helper

    nodes, replaced = [], 0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x, (y, y_scale, y_zero) = node.input[0], node.output
        if x not in ranges:
            raise ExportError(f"{where}: no calibrated range for {x!r}")
        scale, zero = static_scale_zero_point(*ranges[x])
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, np.float32), y_scale),
                numpy_helper.from_array(np.array(zero, np.uint8), y_zero),
            ]
        )
        nodes.append(
            helper.make_node("QuantizeLinear", [x, y_scale, y_zero], [y], name=node.name + "_static")
        )
        replaced += 1
    _replace_nodes(graph, nodes)
    return replaced


def _fuse_matmul_integer(graph) -> int:
    """MatMulInteger(A, B, a_zp, b_zp) -> Cast -> Mul(., Mul(a_scale, b_scale)) becomes
    MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zp, b_zp), as quantize_dynamic wrote the chain."""
    from onnx import helper

    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    initializers = {t.name: t for t in graph.initializer}
    drop, fused = set(), {}
    for mm in graph.node:
        if mm.op_type != "MatMulInteger" or len(mm.input) != 4:
            continue
        (cast,) = consumers.get(mm.output[0], [None])[:1] or [None]
        if cast is None or cast.op_type != "Cast" or len(consumers[mm.output[0]]) != 1:
            continue
        muls = consumers.get(cast.output[0], [])
        if len(muls) != 1 or muls[0].op_type != "Mul":
            continue
        out_mul = muls[0]
        scales = producer.get(next(i for i in out_mul.input if i != cast.output[0]))
        if scales is None or scales.op_type != "Mul" or len(consumers[scales.output[0]]) != 1:
            continue
        a, b, a_zero, b_zero = mm.input
        a_scale, b_scale = scales.input
        inputs, output = [a, b, a_scale, b_scale, a_zero, b_zero], out_mul.output[0]
        add = _bias_add(consumers.get(output, []), output, initializers)
        if add is not None:  # a following bias Add with a constant 1-D bias joins the fused node
            inputs.append(next(i for i in add.input if i != output))
            output = add.output[0]
            drop.add(id(add))
        fused[id(mm)] = helper.make_node(
            "MatMulIntegerToFloat", inputs, [output], name=mm.name + "_to_float", domain="com.microsoft"
        )
        drop |= {id(cast), id(out_mul), id(scales)}
    nodes = [fused.get(id(n), n) for n in graph.node if id(n) not in drop]
    _replace_nodes(graph, nodes)
    return len(fused)


def _bias_add(consumers: list, output: str, initializers: dict):
    """The single Add that adds a constant 1-D bias to ``output``, or None."""
    if len(consumers) != 1 or consumers[0].op_type != "Add":
        return None
    other = [i for i in consumers[0].input if i != output]
    bias = initializers.get(other[0]) if len(other) == 1 else None
    return consumers[0] if bias is not None and len(bias.dims) == 1 else None


def _replace_nodes(graph, nodes: list) -> None:
    nodes = list(nodes)
    del graph.node[:]
    graph.node.extend(nodes)


def quantize_static_graph(src: Path, dst: Path, quantize_dynamic, feeds: list[dict], method: str) -> Path:
    """``quantize_dynamic(path)`` writes the dynamic int8 graph of ``src``; its activation scales are
    then calibrated on ``src`` (fp32) with ``feeds`` and frozen into ``dst``."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        dynamic = quantize_dynamic(Path(tmp) / "dynamic.onnx")
        tensors = activation_tensors(onnx.load(str(dynamic), load_external_data=False))
        ranges = activation_ranges(Path(src), tensors, feeds, method)
        make_static(dynamic, dst, ranges)
    return dst
