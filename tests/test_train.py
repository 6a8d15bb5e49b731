"""train/: strict data reading, the stratified split, triplet mining, batching, and a tiny end-to-end run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from train import data as D
from train.classifier import grouped_batches
from train.embedder import distinct_label_batches, mine_triplets


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


# ---- reading -------------------------------------------------------------------------------
def test_read_csv_and_jsonl(tmp_path):
    csv_path = write(tmp_path / "a.csv", 'text,label\n"hello, world",greet\nbye,leave\n')
    s = D.read_labelled(csv_path)
    assert s.texts == ["hello, world", "bye"] and s.labels == ["greet", "leave"] and s.lines == [2, 3]
    jl = write(tmp_path / "a.jsonl", '{"t": "x", "y": "a"}\n{"t": "z", "y": "b"}\n')
    s = D.read_labelled(jl, "t", "y")
    assert s.texts == ["x", "z"] and s.labels == ["a", "b"]


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("m.csv", "text,category\nhi,a\n", r"m\.csv:1: header has no column 'label'"),
        ("e.csv", "text,label\nhi,a\n  ,b\n", r"e\.csv:3: field 'text' is empty"),
        ("x.csv", "text,label\nhi,a,extra\n", r"x\.csv:2: more values than header columns"),
        (
            "n.jsonl",
            '{"text": "a", "label": "x"}\n{"text": 3, "label": "x"}\n',
            r"n\.jsonl:2: field 'text' must be a string, got int",
        ),
        ("o.jsonl", '["a", "x"]\n', r"o\.jsonl:1: expected a JSON object, got list"),
        ("j.jsonl", '{"text": "a", "label": "x"}\n{"text": \n', r"j\.jsonl:2: not valid JSON"),
        ("f.jsonl", '{"text": "a"}\n', r"f\.jsonl:1: missing field 'label'"),
        ("b.jsonl", '{"text": "a", "label": "x"}\n\n', r"b\.jsonl:2: empty line"),
        ("t.txt", "a\n", r"expected a \.csv or \.jsonl file"),
    ],
)
def test_bad_input_names_file_line_field(tmp_path, name, content, match):
    with pytest.raises(D.DataError, match=match):
        D.read_labelled(write(tmp_path / name, content))


def test_non_utf8_is_refused(tmp_path):
    p = write(tmp_path / "l.csv", "text,label\ncaf\xe9,a\n", encoding="latin-1")
    with pytest.raises(D.DataError, match=r"l\.csv: not UTF-8"):
        D.read_labelled(p)


def test_unseen_dev_label_is_refused(tmp_path):
    dev = D.read_labelled(write(tmp_path / "dev.csv", "text,label\nhi,a\nyo,zzz\n"))
    with pytest.raises(D.DataError, match=r"dev\.csv:3: field 'label': label 'zzz' does not occur in train"):
        D.check_known_labels(dev, ["a", "b"], "label")


def test_stratified_split_is_seeded_complete_and_refuses_tiny_classes():
    texts = [f"t{i}" for i in range(40)]
    labels = ["a"] * 30 + ["b"] * 10
    s = D.Split(texts, labels, "mem")
    tr1, dv1 = D.stratified_split(s, 0.2, seed=1)
    tr2, dv2 = D.stratified_split(s, 0.2, seed=1)
    assert dv1.texts == dv2.texts and tr1.texts == tr2.texts
    assert sorted(tr1.texts + dv1.texts) == sorted(texts)  # nothing dropped, nothing twice
    assert dv1.labels.count("a") == 6 and dv1.labels.count("b") == 2
    with pytest.raises(D.DataError, match=r"class 'c' has 1 sample\(s\)"):
        D.stratified_split(D.Split(texts + ["x"], labels + ["c"], "mem"), 0.2, seed=1)


def test_label_texts_default_and_descriptions(tmp_path):
    assert D.label_texts(["card_arrival", "top-up"], None) == ["card arrival", "top up"]
    p = write(tmp_path / "d.json", json.dumps({"a": "the letter a", "c": "extra"}))
    with pytest.raises(D.DataError, match=r"missing from the file: \['b'\]; labels not in train: \['c'\]"):
        D.label_texts(["a", "b"], p)
    p = write(tmp_path / "ok.json", json.dumps({"a": "the letter a", "b": "bee"}))
    assert D.label_texts(["a", "b"], p) == ["the letter a", "bee"]


def test_named_dataset_missing_files_say_where(tmp_path):
    with pytest.raises(D.DataError, match=r"banking77/train\.csv: not found; set --datasets-dir"):
        D.resolve_named("banking77", tmp_path)


# ---- mining and batching -------------------------------------------------------------------
def test_mine_triplets_hand_example():
    """Sample 0 (gold 0): top-3 [1, 0, 2] -> negative 1 (the best wrong label).
    Sample 1 (gold 2): top-2 [2, 1]         -> negative 1.
    With k=1 sample 0's top-1 is wrong (1) but sample 2's top-1 is its gold -> random other label."""
    logits = np.array([[2.0, 3.0, 1.0, 0.0], [0.0, 1.0, 5.0, -1.0], [9.0, 0.0, 0.0, 0.0]])
    trip, counts = mine_triplets(["a", "b", "c"], [0, 2, 0], logits, ["A", "B", "C", "D"], k=3, seed=0)
    assert [t[2] for t in trip[:2]] == [1, 1]
    assert counts == {"topk_negative": 3, "random_negative": 0}
    trip, counts = mine_triplets(["a", "b", "c"], [0, 2, 0], logits, ["A", "B", "C", "D"], k=1, seed=0)
    assert counts == {"topk_negative": 1, "random_negative": 2}
    assert all(t[2] != t[1] for t in trip)


def test_mine_triplets_more_negatives_per_text_in_rank_order():
    """negatives=2: sample 0 (gold 0, top-3 [1, 0, 2]) -> 1 then 2; sample 1 (gold 2, top-3 [2, 1, 0])
    -> 1 then 0; sample 2 (gold 0, top-3 [0, 1, 2] by index order of the ties) -> two of 1..3."""
    logits = np.array([[2.0, 3.0, 1.0, 0.0], [0.5, 1.0, 5.0, -1.0], [9.0, 0.0, 0.0, 0.0]])
    trip, counts = mine_triplets(
        ["a", "b", "c"], [0, 2, 0], logits, ["A", "B", "C", "D"], k=3, seed=0, negatives=2
    )
    assert [(t[0], t[2]) for t in trip[:4]] == [("a", 1), ("a", 2), ("b", 1), ("b", 0)]
    assert len(trip) == 6 and counts == {"topk_negative": 6, "random_negative": 0}
    assert all(t[2] != t[1] for t in trip)
    # more negatives than the top-k holds: what it holds, no padding with random labels
    trip, _ = mine_triplets(["a"], [0], logits[:1], ["A", "B", "C", "D"], k=2, seed=0, negatives=5)
    assert [t[2] for t in trip] == [1]
    with pytest.raises(ValueError, match="expected >= 1, got 0"):
        mine_triplets(["a"], [0], logits[:1], ["A", "B", "C", "D"], k=3, seed=0, negatives=0)


def test_embedder_negatives_flag_reaches_the_config_and_rejects_zero():
    from lrsl_rt.errors import UsageError
    from train.__main__ import config_from_args, parser

    cfg = config_from_args(parser().parse_args(["--embedder-negatives", "2", "--out", "x"]))
    assert cfg.embedder.negatives == 2
    assert config_from_args(parser().parse_args(["--out", "x"])).embedder.negatives == 1
    with pytest.raises(UsageError, match="--embedder-negatives: expected a positive integer, got '0'"):
        parser().parse_args(["--embedder-negatives", "0", "--out", "x"])


def test_distinct_label_batches_cover_everything_once_without_label_clashes():
    rng = random.Random(0)
    trip = []
    for i in range(500):
        y = rng.randrange(20)
        trip.append((str(i), y, (y + 1 + rng.randrange(19)) % 20))
    batches = distinct_label_batches(trip, 8, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        golds = [trip[i][1] for i in b]
        negs = {trip[i][2] for i in b}
        assert len(golds) == len(set(golds)) <= 8
        assert not set(golds) & negs


def test_grouped_batches_cover_everything_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 65, size=1000)
    plain = grouped_batches(lengths, 32, 0, np.random.default_rng(1))
    grouped = grouped_batches(lengths, 32, 10, np.random.default_rng(1))
    for batches in (plain, grouped):
        assert sorted(int(i) for b in batches for i in b) == list(range(1000))
        assert len(batches) == 32  # ceil(1000 / 32): only one batch is short
        assert sorted(len(b) for b in batches)[1:] == [32] * 31
    padded = lambda bs: sum(len(b) * int(lengths[b].max()) for b in bs)  # noqa: E731
    assert padded(grouped) < 0.7 * padded(plain)  # hand-checked: ~0.55 with these lengths
    again = grouped_batches(lengths, 32, 10, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(grouped, again, strict=True))  # seeded
    # the batches are not in length order: the short ones are not all at the start
    maxima = [int(lengths[b].max()) for b in grouped]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_distinct_label_batches_grouped_by_length_keep_their_guarantees():
    rng = random.Random(0)
    trip = []
    for _ in range(500):
        y = rng.randrange(20)
        trip.append(("w " * rng.randrange(1, 40), y, (y + 1 + rng.randrange(19)) % 20))
    plain = distinct_label_batches(trip, 8, random.Random(1))
    grouped = distinct_label_batches(trip, 8, random.Random(1), group_size=50)
    assert sorted(i for b in grouped for i in b) == list(range(500))
    for b in grouped:
        golds = [trip[i][1] for i in b]
        assert len(golds) == len(set(golds)) <= 8 and not set(golds) & {trip[i][2] for i in b}
    padded = lambda bs: sum(len(b) * max(len(trip[i][0]) for i in b) for b in bs)  # noqa: E731
    assert padded(grouped) < 0.8 * padded(plain)


# ---- the whole pipeline on a tiny model ----------------------------------------------------
def test_tiny_pipeline_writes_a_complete_checkpoint(tmp_path, tiny_base, tiny_data):
    from train.checkpoint import read_info, read_jsonl
    from train.classifier import ClassifierConfig
    from train.embedder import EmbedderConfig
    from train.pipeline import TrainConfig, run

    (tx, ty), (dx, dy), (sx, sy) = tiny_data
    files = {}
    for name, xs, ys in (("train", tx, ty), ("dev", dx, dy), ("test", sx, sy)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text(
            "".join(json.dumps({"text": x, "label": y}) + "\n" for x, y in zip(xs, ys, strict=True))
        )
    cfg = TrainConfig(
        out=str(tmp_path / "ckpt"),
        train=str(files["train"]),
        dev=str(files["dev"]),
        test=str(files["test"]),
        classifier_model=str(tiny_base),
        embedder_model=str(tiny_base),
        seed=3,
        classifier=ClassifierConfig(epochs=2, lr=5e-3, batch_size=8, max_length=32, seed=3),
        embedder=EmbedderConfig(epochs=1, lr=1e-3, batch_size=4, seed=3),
    )
    logs = []
    out = run(cfg, log=logs.append)
    info = read_info(out)
    assert info.labels == sorted(set(ty)) and info.k == 3 and info.max_length == 32
    assert info.threshold >= 0
    assert read_jsonl(out / "dev.jsonl") == (dx, dy)
    calib_x, calib_y = read_jsonl(out / "calib.jsonl")  # the static int8 presets' calibration texts
    # all of train here: fewer rows than the sample size
    assert sorted(zip(calib_x, calib_y, strict=True)) == sorted(zip(tx, ty, strict=True))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["seconds"]) >= {"classifier_training", "embedder_training", "calibration", "total"}
    assert metrics["triplets"]["n"] == len(tx)
    assert metrics["results"]["test"]["n"] == len(sx)
    assert set(metrics["embedder_zero_shot"]) == {"before", "after"}
    assert len(metrics["classifier_history"]) >= 1
    assert (out / "classifier" / "tokenizer.json").is_file() and (out / "embedder" / "modules.json").is_file()
    assert not (tmp_path / "ckpt.partial").exists()
    assert any("sigma2_mis" in line for line in logs)


def test_tiny_pipeline_with_a_fixed_fusion(tmp_path, tiny_base, tiny_data):
    from train.checkpoint import read_info
    from train.classifier import ClassifierConfig
    from train.embedder import EmbedderConfig
    from train.pipeline import TrainConfig, run

    (tx, ty), (dx, dy), _ = tiny_data
    files = write_csv_splits(tmp_path, train=(tx, ty), dev=(dx, dy))
    cfg = dict(
        train=str(files["train"]),
        dev=str(files["dev"]),
        classifier_model=str(tiny_base),
        embedder_model=str(tiny_base),
        classifier=ClassifierConfig(epochs=1, lr=5e-3, batch_size=8, max_length=32),
        embedder=EmbedderConfig(epochs=1, lr=1e-3, batch_size=4),
    )
    with pytest.raises(D.DataError, match=r"--fusion: fusion 'paper': expected RULE:P\[:SCOPE\]"):
        run(TrainConfig(out=str(tmp_path / "bad"), fusion="paper", **cfg), log=lambda s: None)
    assert not (tmp_path / "bad").exists()
    out = run(TrainConfig(out=str(tmp_path / "ckpt"), fusion="softmax_cos:3:topk", **cfg), log=lambda s: None)
    info = read_info(out)
    assert info.fusion == {"rule": "softmax_cos", "p": 3, "scope": "topk"} and info.fusion_fixed is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fusion"] == info.fusion and len(metrics["fusion_table_dev"]) == 24


def test_profiles_set_defaults_and_flags_override_them():
    from train.__main__ import config_from_args, parser

    quick = config_from_args(
        parser().parse_args(["--dataset", "banking77", "--profile", "quick", "--out", "x"])
    )
    assert (quick.classifier.epochs, quick.embedder.epochs, quick.limit_per_class) == (3, 1, 50)
    full = config_from_args(parser().parse_args(["--dataset", "banking77", "--out", "x"]))
    assert full.limit_per_class is None and full.classifier.epochs == 8
    mixed = config_from_args(
        parser().parse_args(["--profile", "quick", "--epochs", "5", "--limit-per-class", "7", "--out", "x"])
    )
    assert (mixed.classifier.epochs, mixed.limit_per_class) == (5, 7)


# ---- the checkpoint is written staged, like a bundle ------------------------------------------
def test_a_failed_run_keeps_the_old_checkpoint_and_refuses_foreign_directories(
    tmp_path, tiny_base, tiny_data
):
    from lrsl_rt.errors import LrslError
    from train.errors import CheckpointError
    from train.pipeline import TrainConfig, run

    (tx, ty), _, _ = tiny_data
    train_file = tmp_path / "train.csv"
    train_file.write_text("text,label\n" + "".join(f"{x},{y}\n" for x, y in zip(tx, ty, strict=True)))
    cfg = dict(train=str(train_file), classifier_model=str(tiny_base), embedder_model=str(tiny_base))
    old = tmp_path / "ckpt"
    old.mkdir()
    (old / "lrsl.json").write_text('{"old": true}')
    # k larger than the label count fails after the data step, before any model is trained
    with pytest.raises(D.DataError, match=r"k must be in \[2, "):
        run(TrainConfig(out=str(old), k=999, **cfg), log=lambda s: None)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left
    assert (old / "lrsl.json").read_text() == '{"old": true}'
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="is not an LRSL training checkpoint"):
        run(TrainConfig(out=str(foreign), **cfg), log=lambda s: None)
    assert (foreign / "keep.txt").read_text() == "precious"
    assert issubclass(D.DataError, LrslError) and issubclass(CheckpointError, LrslError)


def test_train_cli_errors_and_help_defaults(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "train", *args], cwd=root, capture_output=True, text=True, timeout=120
        )

    r = cli("--help")
    assert r.returncode == 0
    for shown in ("(default: 8; --profile quick: 3)", "(default: 42)", "(default: 3)", "(default: full)"):
        assert shown in " ".join(r.stdout.split()), shown
    r = cli("--out", str(tmp_path / "c"), "--train", str(tmp_path / "none.csv"))
    assert r.returncode == 1 and r.stderr == f"Error: {tmp_path / 'none.csv'}: file not found\n"
    r = cli("--out", str(tmp_path / "c"), "--nope")
    assert r.returncode == 2 and r.stderr.startswith("Error: unrecognized arguments: --nope")
    assert not (tmp_path / "c").exists()


def test_embedder_from_reuses_a_checkpoints_embedder_and_refuses_other_labels(tmp_path, tiny_base, tiny_data):
    from train.classifier import ClassifierConfig
    from train.embedder import EmbedderConfig
    from train.errors import CheckpointError
    from train.pipeline import TrainConfig, run

    (tx, ty), (dx, dy), _ = tiny_data
    files = write_csv_splits(tmp_path, train=(tx, ty), dev=(dx, dy))
    cfg = dict(
        train=str(files["train"]),
        dev=str(files["dev"]),
        classifier_model=str(tiny_base),
        classifier=ClassifierConfig(epochs=1, lr=5e-3, batch_size=8, max_length=32),
    )
    emb = EmbedderConfig(epochs=1, lr=1e-3, batch_size=4)
    tiny_checkpoint = run(
        TrainConfig(out=str(tmp_path / "first"), embedder_model=str(tiny_base), embedder=emb, **cfg),
        log=lambda s: None,
    )
    logs = []
    out = run(
        TrainConfig(out=str(tmp_path / "ckpt"), embedder_from=str(tiny_checkpoint), **cfg), log=logs.append
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["embedder_history"] == []  # not trained: the reused weights are written unchanged
    assert metrics["embedder_zero_shot"]["reused_from"] == str(tiny_checkpoint)
    for f in (tiny_checkpoint / "embedder").rglob("*.safetensors"):
        assert (out / "embedder" / f.relative_to(tiny_checkpoint / "embedder")).read_bytes() == f.read_bytes()
    assert any("reuse the trained embedder" in line for line in logs)
    from benchmarks.lib.results_render import render_training

    page = "\n".join(render_training(metrics))  # the results page names the reused embedder
    assert f"the embedder of {tiny_checkpoint}, reused unchanged (--embedder-from)" in page
    # other label texts: refused after reading the data, before the classifier is trained
    described = tmp_path / "descriptions.json"
    described.write_text(json.dumps({y: f"all about {y}" for y in set(ty)}))
    logs = []
    with pytest.raises(D.DataError, match=r"--embedder-from .*: its label texts differ .*'all about "):
        run(
            TrainConfig(
                out=str(tmp_path / "bad"),
                embedder_from=str(tiny_checkpoint),
                label_descriptions=str(described),
                **cfg,
            ),
            log=logs.append,
        )
    assert not any("fine-tune the classifier" in line for line in logs)
    with pytest.raises(CheckpointError, match="not found; is .* a checkpoint"):
        run(TrainConfig(out=str(tmp_path / "bad"), embedder_from=str(tmp_path), **cfg), log=lambda s: None)


def write_csv_splits(folder, **splits) -> dict:
    """name=(texts, labels) -> {name: folder/name.csv} with a ``text,label`` header."""
    files = {}
    for name, (xs, ys) in splits.items():
        files[name] = folder / f"{name}.csv"
        files[name].write_text("text,label\n" + "".join(f"{x},{y}\n" for x, y in zip(xs, ys, strict=True)))
    return files
