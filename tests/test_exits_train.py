"""Exits through the real command lines: train (``--classifier-layers``, ``--measure``, joint exit
heads with ``--exit-layers``), replace them by frozen heads (``python -m train.exits``), export with
exits, predict with ``lrsl-rt``."""

from __future__ import annotations

import json
import signal

import pytest
from tiny_models import make_tiny_bert
from trained_tiny import MAX_LENGTH, write_data

from lrsl_rt.manifest import read_manifest


@pytest.fixture(scope="module")
def shallow_checkpoint(tmp_path_factory):
    """A checkpoint trained by `python -m train` on the first 2 of a 3-layer base's layers, with the
    max_prob measure and an exit head after layer 1 trained jointly."""
    from train.__main__ import main as train_main

    work = tmp_path_factory.mktemp("exits_train")
    base = make_tiny_bert(work / "base", layers=3)
    data = write_data(work / "data")
    ckpt = work / "ckpt"
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = train_main(
            [
                *("--train", str(data / "train.jsonl"), "--dev", str(data / "dev.jsonl")),
                *("--test", str(data / "test.jsonl")),
                *("--classifier-model", str(base), "--embedder-model", str(base)),
                *("--epochs", "1", "--lr", "5e-3", "--batch-size", "8", "--max-length", str(MAX_LENGTH)),
                *("--embedder-epochs", "1", "--embedder-lr", "1e-3", "--embedder-batch-size", "4"),
                *("--classifier-layers", "2", "--measure", "max_prob", "--threads", "1"),
                *("--exit-layers", "1", "--exit-weight", "0.5"),
                *("--seed", "3", "--out", str(ckpt)),
            ]
        )
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert code == 0
    return ckpt


def test_classifier_layers_keeps_the_first_layers_and_measure_reaches_the_checkpoint(shallow_checkpoint):
    from train.checkpoint import read_info

    config = json.loads((shallow_checkpoint / "classifier" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    info = read_info(shallow_checkpoint)
    assert info.measure == "max_prob" and 0 < info.threshold <= 1  # a mean max probability
    meta = json.loads((shallow_checkpoint / "exits" / "exits.json").read_text())
    assert meta["layers"] == [1] and meta["training"] == "joint" and meta["classifier_layers"] == 2
    from safetensors import safe_open

    with safe_open(str(shallow_checkpoint / "classifier" / "model.safetensors"), "pt") as f:
        names = list(f.keys())  # noqa: SIM118 - a safe_open handle is not a dict
    assert names and not [k for k in names if "exit" in k]  # the classifier saved without heads


def test_train_exits_then_export_with_exits_and_predict(shallow_checkpoint, tmp_path, capsys):
    from export.__main__ import main as export_main
    from lrsl_rt.cli import main as cli_main
    from train.exits import main as exits_main

    assert exits_main([str(shallow_checkpoint), "--layers", "2", "--threads", "1"]) == 2  # not below depth 2
    assert "below the classifier's depth 2" in capsys.readouterr().err
    assert exits_main([str(shallow_checkpoint), "--layers", "1", "--epochs", "3", "--threads", "1"]) == 0
    meta = json.loads((shallow_checkpoint / "exits" / "exits.json").read_text())
    assert meta["layers"] == [1] and meta["classifier_layers"] == 2 and meta["training"] == "frozen"
    bundle = tmp_path / "bundle"
    args = [str(shallow_checkpoint), str(bundle), "--precision", "fp32", "--max-accuracy-drop", "100"]
    assert export_main([*args, "--exit-budget", "50", "--threads", "1"]) == 0
    m = read_manifest(bundle)
    assert m.measure == "max_prob" and m.classifier_layers == 2 and [e.layer for e in m.exits] == [1]
    capsys.readouterr()
    code = cli_main(["predict", "--bundle", str(bundle), "--format", "jsonl", "--threads", "1", "card lost"])
    assert code == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["exit_layer"] in (1, 2)
    plain = tmp_path / "plain"
    assert export_main([str(shallow_checkpoint), str(plain), "--precision", "fp32", "--no-exits",
                        "--max-accuracy-drop", "100", "--threads", "1"]) == 0  # fmt: skip
    assert not read_manifest(plain).exits and "classifier" in read_manifest(plain).files
