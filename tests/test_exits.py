"""Early exits: the stage chain, the threshold calibration, and a bundle with exits end to end.

- hand-worked: a row leaves a stage exactly when its sureness is above the exit's threshold;
  the calibration keeps the thresholds that save the most layers within the budget;
- parity: an fp32 stage chain in which nobody leaves gives the single graph's logits (1e-4);
- a 4-layer tiny classifier with heads after layers 1 and 2: fp32 and int8 bundles with exits load,
  predict and say where each text left; a checkpoint without heads (or ``exits=False``) still
  exports the single graph;
- batch invariance of the stage path with a static int8 preset, and that preset as the default on
  VNNI CPUs for every stage graph and the embedder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lrsl_rt import Reranker
from lrsl_rt.exit_calibration import CLOSED, choose_exit_thresholds
from lrsl_rt.exits import StageChain
from lrsl_rt.manifest import ExitPoint, read_manifest
from lrsl_rt.tokenize import Tokens

PARITY_ATOL = 1e-4


# ---- hand-worked ---------------------------------------------------------------------------------
class FakeStage:
    """A stage that returns fixed logits per row, keyed by the row's first token id."""

    def __init__(self, logits_by_id: dict[int, list[float]], last: bool):
        self.logits_by_id, self.last, self.seen = logits_by_id, last, []
        self.path = Path("fake.onnx")

    def run_outputs(self, feeds, outputs):
        ids = (
            feeds["input_ids"][:, 0] if "input_ids" in feeds else feeds["hidden_states"][:, 0, 0].astype(int)
        )
        self.seen.append(sorted(int(i) for i in ids))
        logits = np.array([self.logits_by_id[int(i)] for i in ids], dtype=np.float32)
        hidden = np.repeat(ids.astype(np.float32)[:, None, None], feeds["attention_mask"].shape[1], axis=1)
        return [logits] if self.last else [logits, hidden]


def _pad(rows):
    width = max(len(r) for r in rows)
    ids = np.array([list(r.ids) + [0] * (width - len(r)) for r in rows], dtype=np.int64)
    mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask}


def test_a_row_leaves_exactly_when_its_sureness_passes_the_threshold():
    """variance of the top-3 logits, exit after layer 2 of 4 at threshold 2.0:
    row 1: [4, 0, 0] -> mean 4/3, variance ((8/3)^2 + 2 (4/3)^2) / 3 = 3.556 > 2: leaves at layer 2
    with the head's logits; row 2: [3, 0, 0] -> variance (4 + 1 + 1) / 3 = 2.0 <= 2 (unsure): goes
    on, exit_layer 4, the final logits; row 3: [1, 0, 0] -> 2/9: goes on. Only rows 2 and 3 reach
    stage 2."""
    first = {1: [4.0, 0.0, 0.0], 2: [3.0, 0.0, 0.0], 3: [1.0, 0.0, 0.0]}
    final = {2: [0.0, 5.0, 0.0], 3: [0.0, 0.0, 5.0]}
    stages = [FakeStage(first, last=False), FakeStage(final, last=True)]
    chain = StageChain(stages, _pad, depth=4)
    rows = [Tokens((1, 7, 7), (0, 0, 0)), Tokens((2, 7), (0, 0)), Tokens((3,), (0,))]
    logits, exit_layer = chain.run(rows, 8, (ExitPoint(2, 2.0),), "variance", 3)
    assert exit_layer.tolist() == [2, 4, 4]
    assert logits.argmax(1).tolist() == [0, 1, 2]
    assert np.allclose(logits[0], first[1])
    assert stages[1].seen == [[2, 3]]  # the row that left never reached stage 2


def test_the_calibration_keeps_the_thresholds_that_save_most_within_the_budget():
    """The module docstring's example: threshold 0.9 lets rows 0 and 1 leave, right; 0.55 would let
    row 2 leave too, where the head is wrong (3/4, outside a 0.2-point budget)."""
    probs = np.array([[0.99, 0.01], [0.95, 0.05], [0.6, 0.4], [0.5, 0.5]])
    gold, base_ok = np.array([0, 0, 1, 0]), np.ones(4, dtype=bool)
    (t,), report = choose_exit_thresholds([np.log(probs)], [2], 4, gold, base_ok, "max_prob", 2, 0.002)
    assert 0.6 <= t < 0.95
    assert report["share"] == {"2": 0.5} and report["accuracy_with_exits"] == 1.0
    (t,), report = choose_exit_thresholds([np.log(probs)], [2], 4, gold, base_ok, "max_prob", 2, 0.3)
    assert t < 0.6 and report["accuracy_with_exits"] == 0.75
    (t,), report = choose_exit_thresholds(
        [np.log(probs[[2, 3]])], [2], 4, gold[[2, 3]], base_ok[:2], "max_prob", 2, 0.0
    )
    assert t == CLOSED and report["share"] == {"2": 0.0}


# ---- a tiny classifier with heads ----------------------------------------------------------------
@pytest.fixture(scope="module")
def exits_checkpoint(tmp_path_factory, tiny_data) -> Path:
    """A 4-layer tiny checkpoint with exit heads after layers 1 and 2 (the heads started as the
    final head and nudged, so the exits differ from it)."""
    import torch
    from conftest import LABELS
    from sentence_transformers import SentenceTransformer
    from tiny_models import make_tiny_bert
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from train.checkpoint import CheckpointInfo, write_info, write_jsonl
    from train.exit_heads import EXITS_DIR, initial_head, save_heads

    work = tmp_path_factory.mktemp("exits_ckpt")
    base = make_tiny_bert(work / "base", layers=4)
    ckpt = work / "ckpt"
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(3)
    clf = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(LABELS))
    clf.save_pretrained(ckpt / "classifier")
    tok.save_pretrained(ckpt / "classifier")
    SentenceTransformer(str(base), device="cpu").save(str(ckpt / "embedder"))
    (_, _), (dev_x, dev_y), (test_x, test_y) = tiny_data
    write_jsonl(ckpt / "dev.jsonl", dev_x, dev_y)
    write_jsonl(ckpt / "test.jsonl", test_x, test_y)
    info = CheckpointInfo(LABELS, [x.replace("_", " ") for x in LABELS], 3, 32, 0.01,
                          {"rule": "logits_cos", "p": 2, "scope": "all"}, 0)  # fmt: skip
    write_info(ckpt, info)
    (ckpt / "metrics.json").write_text("{}\n", encoding="utf-8")
    heads = {}
    for layer in (1, 2):
        heads[layer] = initial_head(clf, len(LABELS))
        with torch.no_grad():
            heads[layer].out.weight.mul_(20.0)  # sure enough that some rows leave
    (ckpt / EXITS_DIR).mkdir()
    save_heads(ckpt / EXITS_DIR, heads, {"classifier_layers": 4, "training": "by hand"})
    return ckpt


def _build(ckpt, out, **kw):
    from export import build_bundle

    return build_bundle(ckpt, out, max_accuracy_drop=1.0, threads=1, log=lambda msg: None, **kw)


@pytest.fixture(scope="module")
def exits_bundle_fp32(tmp_path_factory, exits_checkpoint) -> Path:
    return _build(exits_checkpoint, tmp_path_factory.mktemp("eb") / "b", precision="fp32", exit_budget=0.5)


@pytest.fixture(scope="module")
def plain_bundle_fp32(tmp_path_factory, exits_checkpoint) -> Path:
    return _build(exits_checkpoint, tmp_path_factory.mktemp("pb") / "b", precision="fp32", exits=False)


def test_manifest_lists_the_stages_and_their_exits(exits_bundle_fp32, plain_bundle_fp32):
    m = read_manifest(exits_bundle_fp32)
    assert m.format_version == 2 and m.classifier_layers == 4
    assert [e.layer for e in m.exits] == [1, 2]
    assert "classifier" not in m.files and set(m.stage_roles) <= set(m.files) and len(m.stage_roles) == 3
    assert "exits" in m.calibration["exported"]
    plain = read_manifest(plain_bundle_fp32)
    assert plain.format_version == 1 and "classifier" in plain.files and not plain.exits


def test_fp32_chain_with_no_exit_equals_the_single_graph(exits_bundle_fp32, plain_bundle_fp32, tiny_data):
    (train_x, _), (dev_x, _), _ = tiny_data
    texts = train_x + dev_x
    chained = Reranker.from_bundle(exits_bundle_fp32, threads=1)
    single = Reranker.from_bundle(plain_bundle_fp32, threads=1)
    np.testing.assert_allclose(chained.logits(texts), single.logits(texts), atol=PARITY_ATOL, rtol=0)
    rows = chained.tokenizer.tokenize(texts)
    never = tuple(ExitPoint(e.layer, float("inf")) for e in chained.manifest.exits)
    logits, where = chained.classifier.run(rows, 3, never, "variance", 3)
    np.testing.assert_allclose(logits, single.logits(texts), atol=PARITY_ATOL, rtol=0)
    assert (where == 4).all()


def test_predictions_say_where_each_text_left(exits_bundle_fp32, tiny_data):
    r = Reranker.from_bundle(exits_bundle_fp32, threads=1)
    texts = tiny_data[2][0]
    preds = r.predict(texts)
    layers = [p.exit_layer for p in preds]
    assert set(layers) <= {1, 2, 4}
    left = [p for p in preds if p.exit_layer < 4]
    assert all(not p.hard for p in left)  # a row settled at an exit is never reranked
    assert all("exit_layer" in p.to_dict() for p in preds)


def test_cli_record_has_exit_layer(exits_bundle_fp32, tmp_path, capsys):
    from lrsl_rt.cli import main

    code = main(["predict", "--bundle", str(exits_bundle_fp32), "--format", "jsonl", "--threads", "1",
                 "card payment", "weather tomorrow in paris"])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(records) == 2 and all(rec["exit_layer"] in (1, 2, 4) for rec in records)


def test_without_heads_exits_true_is_refused(tiny_checkpoint, tmp_path):
    from export import ExportError

    with pytest.raises(ExportError, match="has no exit heads.*python -m train.exits"):
        _build(tiny_checkpoint, tmp_path / "b", precision="fp32", exits=True)


def test_int8_static_stage_path_is_batch_invariant(tmp_path_factory, exits_checkpoint, tiny_data):
    """With a static preset, a text's label and logits do not depend on which rows left before it."""
    from test_batch_invariance import static_preset

    (train_x, _), (dev_x, _), (test_x, _) = tiny_data
    calib = tmp_path_factory.mktemp("calib_exits") / "train.txt"
    calib.write_text("\n".join(train_x) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("eb_static") / "b"
    bundle = _build(exits_checkpoint, out, precision="int8", preset=static_preset(),
                    calibration_texts=calib, exit_budget=0.5)  # fmt: skip
    texts = test_x + dev_x
    r = _median_exits(Reranker.from_bundle(bundle, threads=1), texts)
    together = r.predict(texts)
    alone = [r.predict([t])[0] for t in texts]
    assert {p.exit_layer for p in together} == {1, 2, 4}  # every stage runs on a changed batch
    assert [p.label for p in together] == [p.label for p in alone]
    assert [p.exit_layer for p in together] == [p.exit_layer for p in alone]
    np.testing.assert_allclose(
        [p.classifier_prob for p in together], [p.classifier_prob for p in alone], atol=1e-5
    )


def test_the_static_default_quantizes_every_stage_and_the_embedder(
    tmp_path_factory, exits_checkpoint, tiny_data, monkeypatch
):
    """On a VNNI CPU (made so here, for AVX2-only CI machines too) a checkpoint with calib.jsonl gets
    static_avx512_vnni by default, for each stage graph and the embedder."""
    import shutil

    from export.optimize import op_counts
    from train.checkpoint import write_jsonl

    monkeypatch.setattr("export.optimize.cpu_family", lambda *a, **k: "avx512_vnni")
    ckpt = Path(shutil.copytree(exits_checkpoint, tmp_path_factory.mktemp("exits_calib") / "ckpt"))
    write_jsonl(ckpt / "calib.jsonl", *tiny_data[0])
    bundle = _build(ckpt, tmp_path_factory.mktemp("eb_default") / "b", precision="int8", exit_budget=0.5)
    m = read_manifest(bundle)
    assert m.preset == "static_avx512_vnni" and m.metrics["quantization"]["batch_invariant"] is True
    assert m.metrics["quantization"]["calibration"]["source"] == str(ckpt / "calib.jsonl")
    roles = [*m.stage_roles, "embedder"]
    assert len(roles) == 4
    for role in roles:
        counts = op_counts(bundle / m.files[role].path)
        assert counts["DynamicQuantizeLinear"] == 0 < counts["QuantizeLinear"], (role, dict(counts))
    preds = Reranker.from_bundle(bundle, threads=1).predict(tiny_data[2][0])
    assert {p.exit_layer for p in preds} <= {1, 2, 4}


def _median_exits(r: Reranker, texts: list[str]) -> Reranker:
    """``r`` with each exit's threshold at the median sureness of the rows reaching it, so about half
    leave at each exit."""
    from dataclasses import replace

    from lrsl_rt.gate import sureness

    m, stage_logits = r.manifest, []
    never = tuple(ExitPoint(e.layer, float("inf")) for e in m.exits)
    r.classifier.run(r.tokenizer.tokenize(texts), 8, never, m.measure, m.k, collect=stage_logits)
    exits, alive = [], np.ones(len(texts), dtype=bool)
    for e, z in zip(m.exits, stage_logits, strict=False):
        s = sureness(z, m.measure, m.k)
        t = float(np.median(s[alive]))
        exits.append(ExitPoint(e.layer, t))
        alive &= s <= t
    manifest = replace(m, exits=tuple(exits))
    return Reranker(
        manifest, r.tokenizer, r.classifier, r.embedder, r.label_embeddings, batch_size=r.batch_size
    )


def test_info_and_metrics_show_the_exits(exits_bundle_fp32, tiny_data):
    from lrsl_rt.info import bundle_summary, format_bundle
    from lrsl_rt.serve.metrics import ServeMetrics

    summary = bundle_summary(exits_bundle_fp32)
    assert [e["layer"] for e in summary["exits"]] == [1, 2]
    assert "exits:       layer 1 (variance > " in format_bundle(summary)
    metrics = ServeMetrics()
    r = Reranker.from_bundle(exits_bundle_fp32, threads=1)
    r.on_run = metrics.model_run  # the server's timing hook: each stage run counts as the classifier
    texts = tiny_data[2][0]
    predictions = r.predict(texts)
    metrics.batch(len(texts), 0, 0.0, predictions)
    text = metrics.render()[0].decode()
    for layer in {p.exit_layer for p in predictions}:
        n = sum(p.exit_layer == layer for p in predictions)
        assert f'lrsl_exit_texts_total{{layer="{layer}"}} {float(n)}' in text
    runs = re.search(r'lrsl_model_run_seconds_count\{stage="classifier"\} (\S+)', text)
    assert runs and float(runs.group(1)) >= 2  # stage 1 and at least one later stage ran


def test_frontier_benchmark_measures_each_bundle_and_the_exit_shares(
    exits_bundle_fp32, plain_bundle_fp32, exits_checkpoint, tmp_path
):
    from benchmarks.frontier import main
    from benchmarks.lib.results_render import kind_of

    out = tmp_path / "frontier.json"
    args = ["--texts", str(exits_checkpoint / "test.jsonl"), "--out", str(out), "--threads", "1"]
    args += ["--rounds", "2", "--n-latency", "4", "--n-throughput", "8", "--per-call", "4"]
    assert (
        main([*args, "--bundle", f"plain={plain_bundle_fp32}", "--bundle", f"exits={exits_bundle_fp32}"]) == 0
    )
    doc = json.loads(out.read_text())
    assert kind_of(doc) == "frontier" and out.with_suffix(".md").is_file()
    plain, exits = doc["results"]["plain"], doc["results"]["exits"]
    assert "exit_share" not in plain and sum(exits["exit_share"].values()) == pytest.approx(1.0)
    for r in (plain, exits):
        assert 0 <= r["accuracy_lrsl"] <= 1 and r["b1_p50_ms"]["n"] == 2 and r["qps_4"]["median"] > 0
    assert "| exits | 4 |" in doc["markdown"]
    from lrsl_rt.manifest import read_manifest

    manifest = read_manifest(plain_bundle_fp32)  # the export's record of the PyTorch models rides along
    pt = manifest.metrics["pytorch"]
    assert plain["preset"] == manifest.preset and plain["pytorch"]["accuracy_lrsl"] == pt["accuracy_lrsl"]
    assert f"LRSL {100 * pt['accuracy_lrsl']:.2f} %, classifier alone" in doc["markdown"]
    assert (
        "Exit targets against the first row" in doc["markdown"] and "- exits: accuracy_pt " in doc["markdown"]
    )


def test_frontier_gains_and_targets_hand_worked():
    from benchmarks.frontier import _verdict, gains

    def row(acc, b1, qps):
        return {"accuracy_lrsl": acc, "b1_p50_ms": {"median": b1}, "qps_32": {"median": qps}}

    base, fast = row(0.9300, 1.2, 800.0), row(0.9280, 0.8, 1280.0)
    g = gains(fast, base, 32)
    assert g["accuracy_pt"] == pytest.approx(-0.2) and g["b1_speedup"] == pytest.approx(1.5)
    assert g["qps_speedup"] == pytest.approx(1.6)
    assert _verdict("accuracy_pt", g) == "-0.20 pt (met)" and _verdict("qps_speedup", g) == "1.60x (met)"
    slow = gains(row(0.9260, 1.0, 900.0), base, 32)  # -0.4 pt, 1.2x, 1.125x: none met
    assert [
        _verdict(k, slow).endswith("(NOT met)") for k in ("accuracy_pt", "b1_speedup", "qps_speedup")
    ] == [
        True,
        True,
        True,
    ]


def test_command_lines_offer_exactly_the_gate_measures():
    """export and train offer the gate's measures as --measure choices."""
    from export.__main__ import parser as export_parser
    from lrsl_rt.gate import MEASURES
    from train.__main__ import parser as train_parser

    for p in (export_parser(), train_parser()):
        action = next(a for a in p._actions if a.dest == "measure")
        assert tuple(action.choices) == MEASURES and action.default in (None, "variance")


def test_a_stage_graph_in_the_wrong_place_is_refused(exits_bundle_fp32, tmp_path):
    """Stage 1 and stage 2 swapped in the manifest (checksums still match their files)."""
    import shutil

    from lrsl_rt.errors import BundleError

    bundle = tmp_path / "b"
    shutil.copytree(exits_bundle_fp32, bundle)
    path = bundle / "manifest.json"
    d = json.loads(path.read_text())
    files = d["files"]
    files["classifier_stage_1"], files["classifier_stage_2"] = (
        files["classifier_stage_2"],
        files["classifier_stage_1"],
    )
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="classifier_stage_1 must take inputs .*input_ids.* got inputs"):
        Reranker.from_bundle(bundle, threads=1)
