"""Session fixtures: a tiny base model, a tiny training checkpoint and tiny bundles, built once in tmp."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import OUT_OF_SCOPE, TOPICS, make_tiny_bert, synthetic_dataset  # noqa: E402

from lrsl_rt.prediction import RECORD_FIELDS  # noqa: E402

LABELS = list(TOPICS)
# The keys of Prediction.to_dict() without an explanation: the record contract (lrsl_rt.prediction).
PREDICTION_KEYS = frozenset(RECORD_FIELDS)


def missing_datasets(root: Path) -> list[Path]:
    """The files of the named data sets (train/data.py's NAMED) that are not under ``root``."""
    from train.data import NAMED

    return [
        root / name / spec[split]
        for name, spec in NAMED.items()
        for split in ("train", "dev", "test")
        if split in spec and not (root / name / spec[split]).is_file()
    ]


def datasets_help(root: Path, missing: list[Path]) -> str:
    """What is missing and where to put it (the README's Data section says where the sets come from)."""
    from train.data import DATASETS_ENV

    return (
        f"the data sets are missing: {', '.join(map(str, missing))}. Put Banking77 and HWU64 (README, Data) "
        f"in ../shared/datasets beside the checkout, or set {DATASETS_ENV} to the folder holding banking77/ "
        f"and hwu64/ (now: {root}); `pytest -m 'not datasets'` runs the tests that do not read them"
    )


def pytest_report_header(config):
    from train.data import datasets_dir

    root = datasets_dir()
    missing = missing_datasets(root)
    return f"data sets: {root}" + (f" -- MISSING {len(missing)} file(s), see below" if missing else "")


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    """The folder of the real Banking77 and HWU64 CSVs ($LRSL_DATASETS_DIR, else ../shared/datasets);
    a test that needs it (mark it ``datasets``) fails with what is missing and where to put it."""
    from train.data import datasets_dir

    root = datasets_dir()
    missing = missing_datasets(root)
    if missing:
        pytest.fail(datasets_help(root, missing), pytrace=False)
    return root


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A random 2-layer BERT folder (weights + tokenizer), usable as classifier and embedder base."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def tiny_data():
    """(train, dev, test) as (texts, labels) lists of synthetic 4-class data."""
    return synthetic_dataset(12, seed=0), synthetic_dataset(6, seed=1), synthetic_dataset(6, seed=2)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_base, tiny_data) -> Path:
    """A checkpoint directory in the format of train/checkpoint.py, made by hand from the tiny base."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from train.checkpoint import CheckpointInfo, write_info, write_jsonl

    ckpt = tmp_path_factory.mktemp("tiny_ckpt")
    tok = AutoTokenizer.from_pretrained(tiny_base)
    torch.manual_seed(1)  # the new classification head: same weights whatever ran before (golden values)
    clf = AutoModelForSequenceClassification.from_pretrained(
        tiny_base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={x: i for i, x in enumerate(LABELS)},
    )
    clf.save_pretrained(ckpt / "classifier")
    tok.save_pretrained(ckpt / "classifier")
    SentenceTransformer(str(tiny_base), device="cpu").save(str(ckpt / "embedder"))
    (_, _), (dev_x, dev_y), (test_x, test_y) = tiny_data
    write_jsonl(ckpt / "dev.jsonl", dev_x, dev_y)
    write_jsonl(ckpt / "test.jsonl", test_x, test_y)
    write_info(
        ckpt,
        CheckpointInfo(
            labels=LABELS,
            label_texts=[x.replace("_", " ") for x in LABELS],
            k=3,
            max_length=32,
            threshold=0.01,
            fusion={"rule": "logits_cos", "p": 2, "scope": "all"},
            seed=0,
            base_models={"classifier": str(tiny_base), "embedder": str(tiny_base)},
        ),
    )
    (ckpt / "metrics.json").write_text("{}\n", encoding="utf-8")
    return ckpt


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    """An int8 bundle (preset detected from this CPU) exported from the tiny checkpoint by `export`.

    Dynamic int8 on every CPU: the tiny checkpoint has no calib.jsonl, so the static default of VNNI
    CPUs falls back to its dynamic twin (export.calibration.default_preset); the static bundle is
    test_batch_invariance's ``tiny_bundle_static``. The accuracy gate is opened wide
    (max_accuracy_drop=1.0): the tiny model is random.
    """
    from export import build_bundle

    out = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    return build_bundle(tiny_checkpoint, out, precision="int8", max_accuracy_drop=1.0, log=lambda msg: None)


@pytest.fixture(scope="session")
def tiny_bundle_fp32(tmp_path_factory, tiny_checkpoint) -> Path:
    """An fp32 bundle exported from the tiny checkpoint (gate opened wide, as for ``tiny_bundle``)."""
    from export import build_bundle

    out = tmp_path_factory.mktemp("tiny_bundle_fp32") / "bundle"
    return build_bundle(tiny_checkpoint, out, precision="fp32", max_accuracy_drop=1.0, log=lambda msg: None)


@pytest.fixture(scope="session")
def tiny_bundle_oos(tiny_checkpoint, tmp_path_factory):
    """An fp32 bundle with an abstain calibration: the tiny checkpoint plus out-of-scope dev/test texts."""
    import shutil

    from export import build_bundle
    from train.checkpoint import write_jsonl

    ckpt = tmp_path_factory.mktemp("oos_ckpt") / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    write_jsonl(ckpt / "dev_oos.jsonl", OUT_OF_SCOPE[:4], ["weather"] * 4)
    write_jsonl(ckpt / "test_oos.jsonl", OUT_OF_SCOPE[2:], ["weather"] * 4)
    write_jsonl(ckpt / "train.jsonl", *synthetic_dataset(5, seed=7))
    out = tmp_path_factory.mktemp("oos_bundle") / "bundle"
    return build_bundle(ckpt, out, precision="fp32", max_accuracy_drop=1.0, log=lambda m: None)


@pytest.fixture(scope="session", autouse=True)
def no_shared_thread_pool_in_this_process():
    """A shared ONNX Runtime pool (thread_pool='shared') is process-wide and makes ONNX Runtime refuse
    every later session with threads of its own: tests make it only in subprocesses."""
    yield
    from lrsl_rt.session import _shared_pool

    assert not _shared_pool, f"a test made the shared thread pool in the pytest process: {_shared_pool}"
