"""End to end with the real default base model (all-MiniLM-L6-v2, loaded offline from its PyPI package)
on a small slice of Banking77: `python -m train` -> `python -m export` -> `lrsl-rt predict` / `eval`.

Slow (a few minutes on 2 cores), but it is the path users run, so CI runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.datasets]


def _run(args, **kw):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, **kw)
    assert p.returncode == 0, (
        f"{args[:4]} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    )
    return p


@pytest.fixture(scope="module")
def banking_bundle(tmp_path_factory, datasets_root):
    work = tmp_path_factory.mktemp("e2e")
    ckpt, bundle = work / "checkpoint", work / "bundle"
    _run(
        [
            sys.executable,
            "-m",
            "train",
            "--dataset",
            "banking77",
            "--datasets-dir",
            str(datasets_root),
            "--limit-classes",
            "5",
            "--limit-per-class",
            "30",
            "--epochs",
            "2",
            "--embedder-epochs",
            "1",
            "--threads",
            "2",
            "--seed",
            "1",
            "--out",
            str(ckpt),
        ]
    )
    _run(
        [
            sys.executable,
            "-m",
            "export",
            str(ckpt),
            str(bundle),
            "--precision",
            "int8",
            "--max-accuracy-drop",
            "100",
        ]
    )
    return ckpt, bundle


def test_train_export_predict_on_banking77_slice(banking_bundle, tmp_path):
    ckpt, bundle = banking_bundle
    info = json.loads((ckpt / "lrsl.json").read_text())
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["labels"] == info["labels"] and len(info["labels"]) == 5
    assert manifest["precision"] == "int8"

    # the slice holds the first 5 labels in sorted order: Refund_not_showing_up, activate_my_card,
    # age_limit, apple_pay_or_google_pay, atm_support
    texts = ["How do I activate my new card?", "", "Can I top up with Apple Pay?"]
    inp = tmp_path / "q.txt"
    inp.write_text("\n".join(texts[:1] + texts[2:]) + "\n", encoding="utf-8")
    p = _run(
        [
            sys.executable,
            "-m",
            "lrsl_rt",
            "predict",
            "--bundle",
            str(bundle),
            "--format",
            "jsonl",
            "--input",
            str(inp),
        ]
    )
    records = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert len(records) == 2
    assert all(r["label"] in info["labels"] and isinstance(r["hard"], bool) for r in records)
    assert records[0]["label"] == "activate_my_card"
    assert records[1]["label"] == "apple_pay_or_google_pay"


def test_cli_eval_reproduces_the_export_evaluation(banking_bundle, tmp_path):
    ckpt, bundle = banking_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    _run(
        [
            sys.executable,
            "-m",
            "lrsl_rt",
            "eval",
            "--bundle",
            str(bundle),
            "--input",
            str(ckpt / "test.jsonl"),
            "--label-field",
            "label",
            "--report",
            str(tmp_path / "rep"),
        ]
    )
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    exported = manifest["metrics"]["bundle"]["test"]
    for key in ("n", "n_hard", "accuracy_classifier", "accuracy_lrsl", "fixed", "broken"):
        assert report[key] == exported[key], key
