"""The export (``python -m export``) on the tiny random checkpoint, and the bundle refusals it relies on.

Levels: PyTorch vs ONNX fp32 parity with explicit atol/rtol (through the runtime, so tokenization is
included); the int8 graph's structure (quantized MatMuls per linear layer); the manifest round trip;
each way a bundle must be refused at load time; the accuracy gate and the atomic write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export import AccuracyGateError, ExportError, build_bundle, detect_preset
from export import __main__ as export_main
from export.bundle import check_target, staged_bundle
from export.calibration import default_preset
from export.evaluate import calibrate, check_gate
from export.optimize import (
    PRESETS,
    QUANTIZED_OPS,
    QuantPreset,
    dynamic_twin,
    model_file_name,
    op_counts,
    quantized_linear_count,
)
from export.source import load_checkpoint, pooling_mode
from lrsl_rt.errors import BundleError, UsageError
from lrsl_rt.manifest import MANIFEST_NAME, Manifest, read_manifest, resolve_file, sha256_file
from train.checkpoint import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
FP32_ATOL, FP32_RTOL = 1e-5, 1e-4  # PyTorch vs ONNX fp32, tiny model (logits ~1e-2, embeddings ~1e-1)


def quiet(msg: str) -> None:
    pass


def torch_reference(ckpt: Path, texts: list[str], max_length: int):
    """Logits and unit embeddings straight from the checkpoint's PyTorch models (HF tokenizer)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt / "classifier")
    clf = AutoModelForSequenceClassification.from_pretrained(ckpt / "classifier").eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = clf(**enc).logits.numpy()
    st = SentenceTransformer(str(ckpt / "embedder"), device="cpu")
    st.max_seq_length = max_length
    emb = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return logits, emb


# ---- parity and graph structure ------------------------------------------------------------
def test_fp32_bundle_matches_pytorch(tiny_checkpoint, tiny_bundle_fp32):
    from lrsl_rt import Reranker

    texts, _ = read_jsonl(tiny_checkpoint / "dev.jsonl")
    texts += ["", "Éxchange RATE?! 💶", "card " * 100]  # empty, accents/emoji, truncated
    r = Reranker.from_bundle(tiny_bundle_fp32, batch_size=8)
    logits, emb = torch_reference(tiny_checkpoint, texts, r.manifest.tokenizer.max_length)
    np.testing.assert_allclose(r.logits(texts), logits, atol=FP32_ATOL, rtol=FP32_RTOL)
    np.testing.assert_allclose(r.embed(texts), emb, atol=FP32_ATOL, rtol=FP32_RTOL)
    np.testing.assert_allclose(np.linalg.norm(r.embed(texts), axis=1), 1.0, atol=1e-5)
    parity = r.manifest.metrics["parity"]
    assert parity["logits_max_abs_diff"] <= parity["logits_atol"] == 1e-3
    assert parity["embeddings_max_abs_diff"] <= parity["embeddings_atol"]


def test_int8_graphs_quantize_every_linear_layer(tiny_bundle):
    m = read_manifest(tiny_bundle)
    assert m.files["classifier"].path == model_file_name("classifier", "int8", m.preset)
    assert m.files["embedder"].path == f"embedder_int8_{m.preset}.onnx"
    counts = {role: op_counts(tiny_bundle / m.files[role].path) for role in ("classifier", "embedder")}
    for role, c in counts.items():
        assert sum(c[op] for op in QUANTIZED_OPS) > 0, f"{role}: no quantized op in {dict(c)}"
        assert c["DynamicQuantizeLinear"] > 0
    # tiny BERT: 2 layers x (Q, K, V, O, intermediate, output) = 12 linear layers, + pooler + head;
    # the embedder graph has no pooler and no head (mean pooling)
    for role, expected in (("classifier", 14), ("embedder", 12)):
        assert quantized_linear_count(counts[role]) == expected, dict(counts[role])
        graphs = m.metrics["graphs"][role]
        assert graphs["linear_layers"] == graphs["quantized_linear"] == expected


def test_int8_agrees_with_fp32(tiny_bundle, tiny_bundle_fp32, tiny_checkpoint):
    from lrsl_rt import Reranker

    texts, _ = read_jsonl(tiny_checkpoint / "test.jsonl")
    q, f = Reranker.from_bundle(tiny_bundle), Reranker.from_bundle(tiny_bundle_fp32)
    agree = np.mean(q.logits(texts).argmax(1) == f.logits(texts).argmax(1))
    assert agree >= 0.9
    cos = np.sum(q.embed(texts) * f.embed(texts), axis=1)
    assert cos.min() > 0.99
    shipped = q.manifest.metrics["shipped_vs_fp32"]
    assert shipped["top1_agreement"]["test"] >= 0.9 and shipped["embedding_cosine"]["min"] > 0.99


# ---- manifest ------------------------------------------------------------------------------
def test_manifest_round_trip(tiny_bundle, tiny_checkpoint):
    from lrsl_rt import Reranker

    text = (tiny_bundle / MANIFEST_NAME).read_text(encoding="utf-8")
    m = read_manifest(tiny_bundle)
    assert m.dumps() == text
    assert Manifest.from_dict(json.loads(text)) == m
    info = json.loads((tiny_checkpoint / "lrsl.json").read_text(encoding="utf-8"))
    assert list(m.labels) == info["labels"] and m.k == info["k"]
    assert m.precision == "int8" and m.preset in PRESETS
    assert m.tokenizer.max_length == info["max_length"]
    assert m.tokenizer.model_input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert set(m.created_by) == {
        "lrsl_rt",
        "torch",
        "transformers",
        "sentence_transformers",
        "onnx",
        "onnxruntime",
        "python",
    }
    cal = m.calibration
    assert cal["pytorch"] == {"threshold": info["threshold"], "fusion": info["fusion"]}
    assert cal["exported"]["threshold"] == m.threshold and cal["exported"]["fusion"] == m.fusion.to_dict()
    assert len(cal["exported"]["table"]) == 24
    assert m.metrics["gate"]["passed"] and set(m.metrics["bundle"]) == {"dev", "test"}
    for role, entry in m.files.items():
        assert entry.sha256 == sha256_file(tiny_bundle / entry.path), role
    # label embeddings: float32, unit rows, what the shipped embedder gives for the label texts
    emb = np.load(tiny_bundle / "label_embeddings.npy", allow_pickle=False)
    assert emb.dtype == np.float32 and emb.shape == (len(m.labels), m.embedding_dim)
    r = Reranker.from_bundle(tiny_bundle)
    np.testing.assert_allclose(emb, r.embed(list(m.label_texts)), atol=1e-6)
    assert sorted(p.name for p in tiny_bundle.iterdir()) == sorted(
        [MANIFEST_NAME] + [e.path for e in m.files.values()]
    )


def test_bundle_metrics_are_what_eval_computes(tiny_bundle, tiny_checkpoint):
    """manifest.metrics.bundle comes from Reranker.predict on the final bundle: recomputing gives the same."""
    from export.evaluate import predictions_report
    from export.source import load_checkpoint
    from lrsl_rt import Reranker

    ckpt = load_checkpoint(tiny_checkpoint)
    r = Reranker.from_bundle(tiny_bundle)
    report = predictions_report(r.predict(ckpt.test.texts), ckpt.test.gold)
    assert report == read_manifest(tiny_bundle).metrics["bundle"]["test"]


# ---- bundle refusals -----------------------------------------------------------------------
def _load_files(bundle: Path) -> None:
    m = read_manifest(bundle)
    for role, entry in m.files.items():
        resolve_file(bundle, role, entry)


def _load_reranker(bundle: Path) -> None:
    from lrsl_rt import Reranker

    Reranker.from_bundle(bundle)


LOADERS = [pytest.param(_load_files, id="manifest"), pytest.param(_load_reranker, id="reranker")]


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / MANIFEST_NAME
    d = json.loads(path.read_text(encoding="utf-8"))
    edit(d)
    path.write_text(json.dumps(d), encoding="utf-8")


def _refresh_entry(bundle: Path, d: dict, role: str) -> None:
    entry = d["files"][role]
    p = bundle / entry["path"]
    entry["size"], entry["sha256"] = p.stat().st_size, sha256_file(p)


@pytest.mark.parametrize("load", LOADERS)
def test_refuses_tampered_file(bundle_copy, load):
    name = read_manifest(bundle_copy).files["classifier"].path
    data = bytearray((bundle_copy / name).read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (bundle_copy / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"sha256 .* does not match"):
        load(bundle_copy)
    with (bundle_copy / name).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"size \d+ bytes, manifest expects"):
        load(bundle_copy)


@pytest.mark.parametrize("load", LOADERS)
def test_refuses_missing_file(bundle_copy, load):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"tokenizer\.json: file for 'tokenizer' .* is missing"):
        load(bundle_copy)


@pytest.mark.parametrize("load", LOADERS)
def test_refuses_unknown_manifest_key(bundle_copy, load):
    _edit_manifest(bundle_copy, lambda d: d.update(quantization="int4"))
    with pytest.raises(BundleError, match=r"unknown key\(s\) \['quantization'\]"):
        load(bundle_copy)


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("path", ["../tokenizer.json", "/etc/hostname", "sub/../../tokenizer.json"])
def test_refuses_path_outside_bundle(bundle_copy, load, path):
    _edit_manifest(bundle_copy, lambda d: d["files"]["tokenizer"].update(path=path))
    with pytest.raises(BundleError, match="must be a relative path inside the bundle"):
        load(bundle_copy)


@pytest.mark.parametrize("load", LOADERS)
def test_refuses_symlink_out_of_bundle(bundle_copy, load, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.copyfile(bundle_copy / "tokenizer.json", outside)
    (bundle_copy / "tokenizer.json").unlink()
    os.symlink(outside, bundle_copy / "tokenizer.json")
    with pytest.raises(BundleError, match="must be a plain file inside the bundle, not a link"):
        load(bundle_copy)


@pytest.mark.parametrize("load", LOADERS)
def test_refuses_newer_format_version(bundle_copy, load):
    from lrsl_rt.manifest import FORMAT_VERSION

    newer = FORMAT_VERSION + 1
    _edit_manifest(bundle_copy, lambda d: d.update(format_version=newer))
    with pytest.raises(BundleError, match=f"format_version {newer} is newer .* upgrade lrsl-rt"):
        load(bundle_copy)


def test_refuses_label_count_that_disagrees_with_classifier(bundle_copy):
    """Five labels in the manifest (label embeddings made to match) but a 4-wide classifier."""
    from lrsl_rt import Reranker

    emb = np.load(bundle_copy / "label_embeddings.npy")
    np.save(bundle_copy / "label_embeddings.npy", np.vstack([emb, emb[:1]]), allow_pickle=False)

    def edit(d):
        d["labels"].append("extra_label")
        d["label_texts"].append("extra label")
        _refresh_entry(bundle_copy, d, "label_embeddings")

    _edit_manifest(bundle_copy, edit)
    _load_files(bundle_copy)  # the manifest and the files are fine on their own
    with pytest.raises(BundleError, match=r"classifier output width is 4, expected 5"):
        Reranker.from_bundle(bundle_copy)


# ---- accuracy gate and atomic writing ------------------------------------------------------
def test_gate_worked_example():
    assert check_gate(0.92, 0.915, 0.005, "test", 100)["passed"]
    with pytest.raises(
        AccuracyGateError, match=r"91\.40%, 0\.60 points below PyTorch's 92\.00%.*--max-accuracy-drop"
    ):
        check_gate(0.92, 0.914, 0.005, "test", 100)


def test_gate_refusal_writes_nothing(tiny_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(
        AccuracyGateError, match=r"below PyTorch's .* no bundle was written.*--max-accuracy-drop"
    ):
        build_bundle(tiny_checkpoint, out, precision="fp32", max_accuracy_drop=-1.0, log=quiet)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its staging directory


# A killed export (SIGTERM, SIGKILL) is tested with a real process: tests/test_reliability.py.


def test_force_replaces_an_existing_bundle(tiny_checkpoint, tiny_bundle, tmp_path):
    out = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    with pytest.raises(ExportError, match="a bundle already exists there; pass --force"):
        build_bundle(tiny_checkpoint, out, precision="fp32", log=quiet)
    build_bundle(tiny_checkpoint, out, precision="fp32", max_accuracy_drop=1.0, force=True, log=quiet)
    assert read_manifest(out).precision == "fp32"
    assert sorted(p.name for p in out.iterdir())[:2] == ["classifier_fp32.onnx", "embedder_fp32.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_fusion_fixed_in_training_or_by_flag_is_kept(tiny_checkpoint, tmp_path):
    ckpt = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    info = json.loads((ckpt / "lrsl.json").read_text())
    info.update(fusion={"rule": "softmax_cos", "p": 6, "scope": "topk"}, fusion_fixed=True)
    (ckpt / "lrsl.json").write_text(json.dumps(info))
    out = build_bundle(ckpt, tmp_path / "b1", precision="fp32", max_accuracy_drop=1.0, log=quiet)
    m = read_manifest(out)
    assert m.fusion.spec == "softmax_cos:6:topk"
    assert m.calibration["exported"]["fusion_fixed"] is True
    assert len(m.calibration["exported"]["table"]) == 24  # the other rules are still reported
    out = build_bundle(
        ckpt, tmp_path / "b2", precision="fp32", max_accuracy_drop=1.0, fusion="logits_cos:3", log=quiet
    )
    assert read_manifest(out).fusion.spec == "logits_cos:3:all"
    with pytest.raises(UsageError, match=r"--fusion: fusion 'cos\^2': expected RULE:P"):
        build_bundle(ckpt, tmp_path / "b3", precision="fp32", fusion="cos^2", log=quiet)
    assert not (tmp_path / "b3").exists()


def test_refuses_to_overwrite_a_non_bundle_directory(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    for force in (False, True):
        with pytest.raises(ExportError, match="is not an lrsl-rt bundle"):
            check_target(out, force)
    check_target(tmp_path / "new", force=False)  # missing: fine
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty", force=False)  # empty directory: fine


def test_staging_removes_stale_and_failed_attempts(tmp_path):
    out = tmp_path / "bundle"
    stale = tmp_path / ".bundle.partial-999999999-abcdef"  # a pid that cannot be running
    stale.mkdir()
    with pytest.raises(RuntimeError), staged_bundle(out, force=False) as stage:
        (stage / "half.onnx").write_bytes(b"x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


# ---- checkpoint checks, presets, CLI -------------------------------------------------------
@pytest.fixture
def ckpt_copy(tiny_checkpoint, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


def test_refuses_non_mean_pooling(ckpt_copy):
    cfg = ckpt_copy / "embedder" / "1_Pooling" / "config.json"
    cfg.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "cls"}))
    with pytest.raises(ExportError, match="pooling mode 'cls' is not supported"):
        load_checkpoint(ckpt_copy)
    assert pooling_mode({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}) == "mean"


def test_refuses_different_tokenizers(ckpt_copy):
    path = ckpt_copy / "embedder" / "tokenizer.json"
    d = json.loads(path.read_text(encoding="utf-8"))
    d["normalizer"] = None
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(
        ExportError,
        match=r"different tokenizers \(.*classifier/tokenizer\.json and .*embedder/tokenizer\.json",
    ):
        load_checkpoint(ckpt_copy)


def test_refuses_classifier_with_labels_in_another_order(ckpt_copy, tmp_path):
    path = ckpt_copy / "classifier" / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    config["id2label"] = {str(i): name for i, name in enumerate(reversed(names))}
    config["label2id"] = {name: i for i, name in enumerate(reversed(names))}
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ExportError, match="id2label orders the labels"):
        build_bundle(ckpt_copy, tmp_path / "bundle", precision="fp32", log=quiet)
    assert not (tmp_path / "bundle").exists()


def test_refuses_do_lower_case_without_a_lowercasing_tokenizer(ckpt_copy):
    (ckpt_copy / "embedder" / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": True}))
    load_checkpoint(ckpt_copy)  # the tiny BERT tokenizer lowercases: fine
    for sub in ("classifier", "embedder"):
        path = ckpt_copy / sub / "tokenizer.json"
        d = json.loads(path.read_text(encoding="utf-8"))
        d["normalizer"]["lowercase"] = False
        path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ExportError, match="do_lower_case is true but .*tokenizer.json does not lowercase"):
        load_checkpoint(ckpt_copy)


def test_calibration_keeps_pytorch_threshold_when_exported_classifier_is_perfect():
    logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.9], [0.1, 0.0, 0.2]])
    gold = np.array([0, 1, 2])
    cos = np.eye(3)
    threshold, fusion, table, note = calibrate(logits, cos, gold, k=2, fallback_threshold=0.25)
    assert threshold == 0.25 and "right on all 3 calibration samples" in note
    assert len(table) == 24 and table[0]["accuracy"] == 1.0
    threshold, *_, note = calibrate(logits, cos, np.array([0, 2, 2]), k=2, fallback_threshold=0.25)
    assert threshold == pytest.approx(0.0025) and note is None  # sample 1: top-2 [2.0, 1.9], variance 0.05^2


def test_presets_follow_optimum():
    """Our presets named after optimum's are its AutoQuantizationConfig.<preset>(is_static=False)."""
    configuration = pytest.importorskip("optimum.onnxruntime.configuration")
    for name in ("avx512_vnni", "avx2", "arm64"):
        preset = PRESETS[name]
        q = getattr(configuration.AutoQuantizationConfig, name)(is_static=False)
        assert (q.weights_dtype.name, q.per_channel, q.reduce_range, q.weights_symmetric) == (
            preset.weight_type,
            preset.per_channel,
            preset.reduce_range,
            True,
        ), name
        assert q.activations_dtype.name == "QUInt8" and not q.activations_symmetric


def test_presets(tmp_path):
    cpu = tmp_path / "cpuinfo"
    cpu.write_text("flags\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert detect_preset(cpu, machine="x86_64") == "static_avx512_vnni"  # batch-invariant by default
    cpu.write_text("flags\t: fpu sse avx2\n")
    assert detect_preset(cpu, machine="x86_64") == "avx2_s8rr"
    assert detect_preset(cpu, machine="aarch64") == "arm64"
    assert PRESETS["avx2"].weight_type == "QUInt8" and PRESETS["avx512_vnni"].weight_type == "QInt8"
    # AVX2-only default: int8 weights in 7 bits, so u8 x s8 pair sums fit VPMADDUBSW's int16
    assert PRESETS["avx2_s8rr"] == QuantPreset("avx2_s8rr", "QInt8", per_channel=True, reduce_range=True)
    assert all(p.name == name for name, p in PRESETS.items())
    action = next(a for a in export_main.parser()._actions if a.dest == "preset")
    assert action.choices == tuple(PRESETS)
    with pytest.raises(UsageError, match="only applies to --precision int8"):
        build_bundle("nowhere", tmp_path / "b", precision="fp32", preset="avx2")


def test_a_static_preset_falls_back_to_the_dynamic_one_with_the_same_weights():
    for name, p in PRESETS.items():
        twin = PRESETS[dynamic_twin(name)]
        assert twin.activations == "dynamic" and (twin == p) == (not p.batch_invariant), name
        assert (twin.weight_type, twin.per_channel, twin.reduce_range) == (
            p.weight_type,
            p.per_channel,
            p.reduce_range,
        ), name


def test_the_static_default_needs_calibration_texts_else_it_is_dynamic(ckpt_copy, tmp_path):
    """A checkpoint without calib.jsonl (older or hand-made) gets the dynamic twin and a note, not a
    failed export; with calib.jsonl or --calibration-texts it keeps the static default."""
    ckpt = load_checkpoint(ckpt_copy)
    preset, note = default_preset(ckpt, "static_avx512_vnni", None)
    assert preset == "avx512_vnni"
    assert "calib.jsonl not found: preset avx512_vnni (dynamic; answers can depend on batch" in note
    assert "--calibration-texts FILE" in note
    assert default_preset(ckpt, "static_avx512_vnni", tmp_path / "train.txt") == ("static_avx512_vnni", None)
    assert default_preset(ckpt, "avx2_s8rr", None) == ("avx2_s8rr", None)
    texts, labels = read_jsonl(ckpt_copy / "test.jsonl")  # any texts: only the file's presence counts
    write_jsonl(ckpt_copy / "calib.jsonl", texts, labels)
    assert default_preset(ckpt, "static_avx512_vnni", None) == ("static_avx512_vnni", None)


def test_a_named_static_preset_without_calibration_texts_is_an_error(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="calib.jsonl: not found; static int8 presets calibrate"):
        build_bundle(tiny_checkpoint, tmp_path / "b", preset="static_avx512_vnni", log=quiet)
    assert not (tmp_path / "b").exists()


def test_the_static_default_without_calibration_texts_exports_dynamic_int8(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """On a VNNI CPU (made so here, for AVX2-only CI machines too) the tiny checkpoint, which has no
    calib.jsonl, exports the dynamic avx512_vnni and says so in one line of the log."""
    monkeypatch.setattr("export.optimize.cpu_family", lambda *a, **k: "avx512_vnni")
    lines = []
    out = build_bundle(tiny_checkpoint, tmp_path / "b", max_accuracy_drop=1.0, threads=1, log=lines.append)
    notes = [line for line in lines if "note:" in line]
    assert len(notes) == 1 and "instead of this CPU's default static_avx512_vnni" in notes[0], notes
    m = read_manifest(out)
    assert m.preset == "avx512_vnni" and m.metrics["quantization"]["batch_invariant"] is False


def test_tiny_bundle_has_this_cpus_default_or_its_dynamic_twin(tiny_bundle):
    """The conftest's tiny checkpoint has no calib.jsonl: ``tiny_bundle`` is dynamic int8 on every CPU."""
    m = read_manifest(tiny_bundle)
    assert m.preset == dynamic_twin(detect_preset()) and not PRESETS[m.preset].batch_invariant


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_exit_codes(tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    r = _cli(str(tmp_path / "no_ckpt"), str(target))
    last = r.stderr.splitlines()[-1]  # progress lines come first, on stderr too
    assert r.returncode == 1 and last.startswith("Error: ") and "not an lrsl-rt bundle" in last
    r = _cli(str(tmp_path / "no_ckpt"), str(tmp_path / "b"), "--precision", "fp32", "--preset", "avx2")
    assert r.returncode == 2 and "Error: --preset avx2 only applies" in r.stderr
    r = _cli(str(tmp_path / "no_ckpt"), str(tmp_path / "b"))
    assert r.returncode == 1 and "checkpoint directory not found" in r.stderr
    assert not (tmp_path / "b").exists()


def test_cli_flags_match_the_runtime_and_help_shows_defaults():
    """--provider as in lrsl-rt (the old --providers still parses); --help names every default."""
    from lrsl_rt.defaults import DEFAULT_BATCH_SIZE

    args = export_main.parser().parse_args(["ckpt", "out"])
    assert args.provider == "cpu" and args.batch_size == DEFAULT_BATCH_SIZE
    assert export_main.parser().parse_args(["ckpt", "out", "--providers", "cuda"]).provider == "cuda"
    text = " ".join(export_main.parser().format_help().split())
    assert f"(default: {DEFAULT_BATCH_SIZE})" in text and "(default: cpu)" in text
    assert "default: detected from this CPU: static_avx512_vnni on AVX-512 VNNI CPUs" in text
    assert "--providers" not in text
