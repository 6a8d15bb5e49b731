"""Same text, same answer: a bundle's labels and logits do not depend on how texts are batched.

The property, for every text: its LRSL label, its classifier label and its logits (within
``LOGITS_ATOL``) are the same predicted alone, in a group of other texts of various lengths (one
padded model call), and in another order with other neighbours. Bundles state whether they keep it
(``manifest.metrics["quantization"]["batch_invariant"]``; fp32 carries no quantization and keeps it):
a bundle that claims it must pass; a bundle that disclaims it (dynamic int8, whose activation scales
come from the whole batch) must show the dependence, so a stale claim fails either way.

Also here: the static int8 preset (:mod:`export.static_quant`) -- its graph, its calibration and
its agreement with fp32 on the tiny models.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmarks.lib.batching import batching_runs, compare, describe
from export import ExportError, build_bundle
from export.calibration import calibration_texts, read_texts
from export.optimize import PRESETS, cpu_family, op_counts
from export.source import load_checkpoint
from export.static_quant import static_scale_zero_point
from lrsl_rt.manifest import read_manifest
from train.checkpoint import read_jsonl

LOGITS_ATOL = 1e-5  # float summation order may differ with the padded width; int8 sums are exact


def static_preset() -> str:
    """The static preset for this CPU (the AVX2 one on CPUs without VNNI and on ARM)."""
    return "static_avx512_vnni" if cpu_family() == "avx512_vnni" else "static_avx2_s8rr"


@pytest.fixture(scope="session")
def tiny_train_file(tmp_path_factory, tiny_data) -> Path:
    """The tiny training texts, and the dev texts too (the export must leave those out)."""
    (train_x, _), (dev_x, _), _ = tiny_data
    path = tmp_path_factory.mktemp("calib") / "train.txt"
    path.write_text("\n".join(train_x + dev_x) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_bundle_static(tmp_path_factory, tiny_checkpoint, tiny_train_file) -> Path:
    out = tmp_path_factory.mktemp("tiny_bundle_static") / "bundle"
    return build_bundle(
        tiny_checkpoint,
        out,
        precision="int8",
        preset=static_preset(),
        calibration_texts=tiny_train_file,
        max_accuracy_drop=1.0,
        log=lambda msg: None,
    )


def awkward_texts(ckpt: Path) -> list[str]:
    """Test texts plus very short and very long ones, so groups mix widths (and padding)."""
    texts, _ = read_jsonl(ckpt / "test.jsonl")
    return texts + [
        "card",
        "why",
        "exchange rate " * 12,
        "my card is lost " * 20,
        "top up failed please help",
    ]


@pytest.mark.parametrize("which", ["tiny_bundle_fp32", "tiny_bundle", "tiny_bundle_static"])
def test_bundle_keeps_its_batch_invariance_claim(which, request, tiny_checkpoint):
    bundle = request.getfixturevalue(which)
    claim = describe(bundle)["claims_batch_invariant"]
    result = compare(batching_runs(bundle, awkward_texts(tiny_checkpoint), batch_sizes=(7, 3), seed=1))
    assert set(result["runs"]) == {"mixed_7", "mixed_3"}
    if claim:
        assert result["labels_identical"] == 1.0, result
        assert result["max_abs_logit_diff"] <= LOGITS_ATOL, result
    else:  # dynamic int8: the logits move with the neighbours (labels of the tiny model may not)
        assert result["max_abs_logit_diff"] > LOGITS_ATOL, result


def test_presets_state_invariance():
    assert {name for name, p in PRESETS.items() if p.batch_invariant} == {
        "static_avx512_vnni",
        "static_avx2_s8rr",
    }
    assert all(
        p.calibration in ("minmax", "percentile", "entropy") for p in PRESETS.values() if p.batch_invariant
    )


def test_manifests_record_the_claim(tiny_bundle, tiny_bundle_static, tiny_bundle_fp32):
    dynamic, static = (read_manifest(b).metrics["quantization"] for b in (tiny_bundle, tiny_bundle_static))
    assert dynamic["batch_invariant"] is False and dynamic["activations"] == "dynamic"
    assert static["batch_invariant"] is True and static["activations"] == "static"
    assert static["calibration"]["method"] == PRESETS[static_preset()].calibration
    assert "quantization" not in read_manifest(tiny_bundle_fp32).metrics


def test_static_graph_has_constant_scales_and_fused_int8_matmuls(tiny_bundle, tiny_bundle_static, tmp_path):
    import onnxruntime as ort

    m = read_manifest(tiny_bundle_static)
    dynamic = read_manifest(tiny_bundle)
    for role, linear in (("classifier", 14), ("embedder", 12)):
        counts = op_counts(tiny_bundle_static / m.files[role].path)
        before = op_counts(tiny_bundle / dynamic.files[role].path)
        assert counts["DynamicQuantizeLinear"] == 0 and counts["MatMulInteger"] == 0, dict(counts)
        assert counts["QuantizeLinear"] == before["DynamicQuantizeLinear"] > 0
        assert counts["MatMulIntegerToFloat"] + 3 * counts["QAttention"] == linear, dict(counts)
        assert m.metrics["graphs"][role]["quantized_linear"] == linear
        # ONNX Runtime keeps the int8 kernels when it optimises the graph for this CPU
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"{role}.onnx")
        ort.InferenceSession(
            str(tiny_bundle_static / m.files[role].path), opts, providers=["CPUExecutionProvider"]
        )
        optimized = op_counts(tmp_path / f"{role}.onnx")
        assert optimized["MatMulIntegerToFloat"] == counts["MatMulIntegerToFloat"], dict(optimized)
        assert optimized["QAttention"] == counts["QAttention"] and optimized["MatMul"] == 0, dict(optimized)


def test_static_int8_agrees_with_fp32(tiny_bundle_static, tiny_bundle_fp32, tiny_checkpoint):
    from lrsl_rt import Reranker

    texts, _ = read_jsonl(tiny_checkpoint / "test.jsonl")
    q, f = Reranker.from_bundle(tiny_bundle_static), Reranker.from_bundle(tiny_bundle_fp32)
    assert np.mean(q.logits(texts).argmax(1) == f.logits(texts).argmax(1)) >= 0.9
    assert np.sum(q.embed(texts) * f.embed(texts), axis=1).min() > 0.99


def test_scale_and_zero_point_are_what_dynamic_quantization_computes():
    """A static range equal to a tensor's min/max gives DynamicQuantizeLinear's scale and zero point."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph(
        [node],
        "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [
            helper.make_tensor_value_info(n, t, s)
            for n, t, s in (
                ("y", TensorProto.UINT8, [None]),
                ("s", TensorProto.FLOAT, []),
                ("z", TensorProto.UINT8, []),
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for x in (rng.normal(size=50) * 3, rng.uniform(0.5, 4.0, size=20), np.array([-2.0, -0.5])):
        x = x.astype(np.float32)
        _, scale, zero = session.run(None, {"x": x})
        assert static_scale_zero_point(x.min(), x.max()) == (pytest.approx(float(scale), rel=1e-6), int(zero))
    assert static_scale_zero_point(-1.0, 3.0) == (pytest.approx(4 / 255), 64)
    del onnx


def test_calibration_leaves_out_dev_and_test_texts(tiny_checkpoint, tiny_train_file, tiny_data):
    ckpt = load_checkpoint(tiny_checkpoint)
    texts, summary = calibration_texts(ckpt, tiny_train_file)
    (train_x, _), (dev_x, _), _ = tiny_data
    assert not set(texts) & (set(dev_x) | set(ckpt.test.texts))
    assert set(texts) <= set(train_x) and summary["used"] == len(texts) > 0
    assert summary["held_out_removed"] == len(set(dev_x) - set(train_x))
    assert calibration_texts(ckpt, tiny_train_file)[0] == texts  # seeded: the same sample each export


def test_static_preset_without_calibration_texts_fails_before_exporting(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match=r"calib\.jsonl: not found; static int8 presets calibrate"):
        build_bundle(
            tiny_checkpoint, tmp_path / "b", precision="int8", preset="static_avx2_s8rr", log=lambda m: None
        )
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("t.csv", "sentence,label\nhi,a\n", r"t\.csv:1: header has no column 'text'"),
        (
            "t.jsonl",
            '{"text": "ok"}\n{"txt": "no"}\n',
            r"t\.jsonl:2: expected a JSON object with a string field 'text'",
        ),
        ("t.tsv", "hi\n", r"must be \.jsonl, \.csv or \.txt, got '\.tsv'"),
    ],
)
def test_bad_calibration_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ExportError, match=message):
        read_texts(path)


def test_checkpoint_calibration_sample_is_seeded_training_rows():
    from train.checkpoint import calibration_sample
    from train.data import Split

    split = Split([f"t{i}" for i in range(50)], ["a"] * 50, "x")
    texts, labels = calibration_sample(split, seed=3, n=10)
    assert len(texts) == 10 == len(set(texts)) and texts == calibration_sample(split, seed=3, n=10)[0]
    assert Counter(labels) == {"a": 10}
