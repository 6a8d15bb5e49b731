"""benchmarks/datasets_table.py on a tiny checkpoint and bundle made by the real train/export entry points:
every figure of the table is the one train and export wrote, and bad inputs name the file and key."""

from __future__ import annotations

import json
import shutil

import pytest
from trained_tiny import trained

from benchmarks import datasets_table as T


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return trained("roberta", tmp_path_factory)


def test_table_figures_are_those_train_and_export_wrote(built, tmp_path, capsys):
    code = T.main(["--run", f"hwu64={built.checkpoint}:{built.bundle_int8}", "--out", str(tmp_path / "t")])
    assert code == 0
    table = json.loads((tmp_path / "t.json").read_text())
    metrics = json.loads((built.checkpoint / "metrics.json").read_text())
    manifest = json.loads((built.bundle_int8 / "manifest.json").read_text())
    (row,) = table["datasets"]
    assert row["split"] == "test" and row["classes"] == 4
    for key in ("accuracy_classifier", "accuracy_lrsl", "hard_share", "fixed", "broken", "n_hard"):
        assert row["pytorch"][key] == metrics["results"]["test"][key], key
        assert row["bundle"]["report"][key] == manifest["metrics"]["bundle"]["test"][key], key
    assert row["zero_shot"] == {w: metrics["embedder_zero_shot"][w]["test"] for w in ("before", "after")}
    assert row["training_seconds"] == metrics["seconds"]["total"]
    assert row["anchor"] == {"name": "DialoGLUE best", "accuracy": 0.9303}
    gain = metrics["results"]["test"]["accuracy_lrsl"] - metrics["results"]["test"]["accuracy_classifier"]
    assert row["targets"]["lrsl_gain_1pt"] == (gain >= 0.01) and row["targets"]["training_60min"] is True
    md = (tmp_path / "t.md").read_text()
    acc = 100 * metrics["results"]["test"]["accuracy_lrsl"]
    assert "| hwu64 | 4 | test (24) | PyTorch | " in md and f"{acc:.2f} %" in md
    assert "DialoGLUE best 93.03 %" in md and "int8" in md
    assert md.split("\n\n", 3)[3] in capsys.readouterr().out  # after the command, title and intro
    assert md.startswith(f"Command: `{table['run']['command']}`\n\n# Accuracy by data set\n")
    assert table["kind"] == "datasets" and table["markdown"].strip() in md


def test_artifacts_folder_is_scanned_and_a_missing_bundle_is_allowed(built, tmp_path):
    art = tmp_path / "artifacts"
    shutil.copytree(built.checkpoint, art / "banking77" / "checkpoint")
    shutil.copytree(built.bundle_int8, art / "banking77" / "bundle")
    shutil.copytree(built.checkpoint, art / "mine" / "checkpoint")
    assert T.main(["--artifacts", str(art), "--out", str(tmp_path / "t")]) == 0
    rows = {r["dataset"]: r for r in json.loads((tmp_path / "t.json").read_text())["datasets"]}
    assert set(rows) == {"banking77", "mine"} and rows["mine"]["bundle"] is None
    assert rows["banking77"]["anchor"]["accuracy"] == 0.9308 and rows["mine"]["anchor"] is None
    assert rows["banking77"]["targets"]["bundle_lrsl_93.1"] is False  # a tiny random model is far below
    assert (
        rows["mine"]["targets"]["bundle_within_0.3pt"] is None
        and "bundle_lrsl_93.1" not in rows["mine"]["targets"]
    )


def test_bad_inputs_name_file_and_key(built, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(built.checkpoint, ckpt)
    m = json.loads((ckpt / "metrics.json").read_text())
    del m["embedder_zero_shot"]
    (ckpt / "metrics.json").write_text(json.dumps(m))
    assert T.main(["--run", f"x={ckpt}", "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {ckpt}/metrics.json: no 'embedder_zero_shot.before.test'")
    assert T.main(["--run", "nothing", "--out", str(tmp_path / "t")]) == 1
    assert "expected NAME=CHECKPOINT[:BUNDLE]" in capsys.readouterr().err
    assert T.main(["--artifacts", str(tmp_path / "none"), "--out", str(tmp_path / "t")]) == 1
    assert not (tmp_path / "t.json").exists()
