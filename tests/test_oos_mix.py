"""train.oos_mix: Banking77 in scope, HWU64's non-banking intents out of scope, on small files made here."""

from __future__ import annotations

import csv
import json

from train.data import read_labelled, stratified_split
from train.oos_mix import LEFT_OUT, OOS_LABEL, build, main


def _csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows(rows)


def _datasets(root):
    bank = [(f"card {i} is late", "card_arrival") for i in range(10)] + [
        (f"rate {i} today", "exchange_rate") for i in range(10)
    ]
    _csv(root / "banking77" / "train.csv", bank)
    _csv(root / "banking77" / "test.csv", bank[:4])
    for split in ("train", "dev", "test"):
        rows = [(f"{split} wake me at {i}", "alarm_set") for i in range(6)]
        rows += [(f"{split} dollar to euro {i}", "qa_currency") for i in range(3)]  # overlapping: left out
        _csv(root / "hwu64" / f"{split}.csv", rows)


def test_the_mix_keeps_overlapping_intents_out_and_the_in_scope_dev_of_banking77(tmp_path):
    _datasets(tmp_path)
    mix = build(tmp_path, {"train": 2, "dev": 3, "test": 100}, seed=0)
    texts, labels = mix["splits"]["test"]
    oos = [t for t, y in zip(texts, labels, strict=True) if y == OOS_LABEL]
    assert len(oos) == 6 and all("euro" not in t for t in oos)  # all 6 alarm texts, no qa_currency
    assert mix["info"]["oos_texts"] == {"train": 2, "dev": 3, "test": 6}
    assert "qa_currency" in LEFT_OUT and "qa_currency" not in mix["info"]["kept_intents"]
    # the in-scope dev rows are those --dataset banking77 carves with the same seed and fraction
    _, dev = stratified_split(read_labelled(tmp_path / "banking77" / "train.csv", "text", "category"), 0.1, 0)
    dev_texts, dev_labels = mix["splits"]["dev"]
    assert dev_texts[: len(dev)] == dev.texts and dev_labels[len(dev) :] == [OOS_LABEL] * 3


def test_the_command_writes_three_files_and_its_description(tmp_path, capsys):
    _datasets(tmp_path / "data")
    out = tmp_path / "mix"
    assert main(["--out", str(out), "--datasets-dir", str(tmp_path / "data"), "--oos-test", "4"]) == 0
    test = read_labelled(out / "test.csv", "text", "category")
    assert test.labels.count(OOS_LABEL) == 4 and len(test) == 8
    assert json.loads((out / "oos_mix.json").read_text())["left_out_as_overlapping"] == list(LEFT_OUT)
    assert main(["--out", str(out), "--datasets-dir", str(tmp_path / "missing")]) == 1
    assert "not found" in capsys.readouterr().err
