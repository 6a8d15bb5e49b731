"""Named data sets on slices of the real CSVs ($LRSL_DATASETS_DIR or ../shared/datasets, present in CI): HWU64 uses its own
dev.csv, Banking77 carves dev out of train, and HWU64's label names become sensible label texts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from train import data as D
from train.pipeline import TrainConfig, load_splits


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.datasets
def test_hwu64_uses_its_dev_file(datasets_root):
    root = datasets_root
    spec = D.resolve_named("hwu64", root)
    assert spec["dev"] == root / "hwu64" / "dev.csv" and spec["label_field"] == "category"
    cfg = TrainConfig(
        out="unused", dataset="hwu64", datasets_dir=str(root), limit_classes=3, limit_per_class=5
    )
    labels, train, dev, test = load_splits(cfg, log=lambda s: None)
    want = sorted({r["category"] for r in _rows(root / "hwu64" / "train.csv")})[:3]
    assert labels == want == ["alarm_query", "alarm_remove", "alarm_set"]
    assert dev.source == str(root / "hwu64" / "dev.csv") and test.source == str(root / "hwu64" / "test.csv")
    dev_rows = [r for r in _rows(root / "hwu64" / "dev.csv") if r["category"] in want]
    assert dev.texts == [r["text"] for r in dev_rows]  # every dev row of the kept classes, in file order
    assert len(train) == 15 and train.source == str(root / "hwu64" / "train.csv")  # nothing carved out


@pytest.mark.datasets
def test_banking77_keeps_carving_dev_from_train(datasets_root):
    root = datasets_root
    assert "dev" not in D.resolve_named("banking77", root)
    cfg = TrainConfig(out="unused", dataset="banking77", datasets_dir=str(root), limit_classes=2)
    _, train, dev, _ = load_splits(cfg, log=lambda s: None)
    assert dev.source.endswith("train.csv (dev part)") and train.source.endswith("train.csv (train part)")
    assert set(train.texts).isdisjoint(dev.texts)
    assert abs(len(dev) / (len(dev) + len(train)) - cfg.dev_fraction) < 0.02


@pytest.mark.datasets
def test_explicit_dev_file_overrides_the_named_one(datasets_root, tmp_path):
    root = datasets_root
    own = tmp_path / "mydev.csv"
    own.write_text("text,category\nwake me up at seven,alarm_set\n", encoding="utf-8")
    cfg = TrainConfig(
        out="unused",
        dataset="hwu64",
        datasets_dir=str(root),
        dev=str(own),
        limit_classes=3,
        limit_per_class=5,
    )
    _, _, dev, _ = load_splits(cfg, log=lambda s: None)
    assert dev.texts == ["wake me up at seven"]


def test_named_dev_file_missing_says_where(tmp_path):
    (tmp_path / "hwu64").mkdir()
    for name in ("train.csv", "test.csv"):
        (tmp_path / "hwu64" / name).write_text("text,category\nhi,a\n", encoding="utf-8")
    with pytest.raises(D.DataError, match=r"hwu64/dev\.csv: not found; set --datasets-dir"):
        D.resolve_named("hwu64", tmp_path)


def test_cli_refuses_an_unknown_named_data_set(capsys):
    from train.__main__ import main

    assert main(["--dataset", "snips", "--out", "x"]) == 2
    assert "Error: argument --dataset: invalid choice: 'snips'" in capsys.readouterr().err


@pytest.mark.datasets
def test_hwu64_label_names_become_readable_texts(datasets_root):
    root = datasets_root
    labels = sorted({r["category"] for r in _rows(root / "hwu64" / "train.csv")})
    texts = D.label_texts(labels, None)
    assert len(labels) == 64 and len(set(texts)) == 64  # no two labels collapse into one text
    by_name = dict(zip(labels, texts, strict=True))
    assert by_name["iot_hue_lightchange"] == "iot hue lightchange"
    assert by_name["general_quirky"] == "general quirky"
    assert all(t == t.strip() and "_" not in t and "  " not in t for t in texts)
