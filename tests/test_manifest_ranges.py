"""Every manifest value is checked for type *and* range when a bundle loads.

Each case edits one value of a real (tiny) bundle's manifest and expects a ``BundleError`` that names
the manifest file, the key, what was expected and the value found. The last case sets a max length
beyond the graphs' position table, which only the load-time probe of ``max_length`` tokens can see.
"""

from __future__ import annotations

import json
import shutil

import pytest

from lrsl_rt import BundleError, Reranker
from lrsl_rt.manifest import read_manifest


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        d = d[key]
    d[last] = value


CASES = [
    (
        "threshold",
        float("nan"),
        "'threshold' must be a finite number >= 0 (a sureness: variance, margin, max_prob), got nan",
    ),
    (
        "threshold",
        float("inf"),
        "'threshold' must be a finite number >= 0 (a sureness: variance, margin, max_prob), got inf",
    ),
    (
        "threshold",
        -0.5,
        "'threshold' must be a finite number >= 0 (a sureness: variance, margin, max_prob), got -0.5",
    ),
    ("threshold", 10**400, "'threshold' must be a finite number >= 0"),
    ("threshold", "0.1", "'threshold' must be int or float, got str"),
    ("k", 1, "'k' must be in [2, 4], got 1"),
    ("k", 5, "'k' must be in [2, 4], got 5"),
    ("k", True, "'k' must be int, got bool"),
    ("embedding_dim", 0, "'embedding_dim' must be an integer >= 1, got 0"),
    ("labels", ["card_arrival", " ", "top_up_failed", "lost_card"], "'labels[1]' must be a non-empty string"),
    (
        "labels",
        ["card_arrival", "\udc80", "top_up_failed", "lost_card"],
        "'labels[1]' must be a non-empty string of valid",
    ),
    ("label_texts", ["a", "b", "", "d"], "'label_texts[2]' must be a non-empty string"),
    ("tokenizer.max_length", 0, "'tokenizer.max_length' must be an integer in [2, 65536], got 0"),
    ("tokenizer.max_length", 10**6, "'tokenizer.max_length' must be an integer in [2, 65536], got 1000000"),
    ("tokenizer.pad_id", -1, "'tokenizer.pad_id' must be an integer >= 0, got -1"),
    (
        "tokenizer.model_input_names",
        ["input_ids", "attention_mask", "pixel_values"],
        "'tokenizer.model_input_names' must be distinct names among",
    ),
    ("files.classifier.size", -1, "'files.classifier.size' must be an integer >= 0, got -1"),
    ("files.tokenizer.sha256", "not-a-digest", "'files.tokenizer.sha256' must be 64 lowercase hex digits"),
    (
        "metrics.export_settings.batch_size",
        0,
        "'metrics.export_settings.batch_size' must be a positive integer, got 0",
    ),
    (
        "metrics.export_settings.batch_size",
        "8",
        "'metrics.export_settings.batch_size' must be a positive integer",
    ),
]


@pytest.mark.parametrize(("key", "value", "message"), CASES, ids=[f"{c[0]}={c[1]!r:.12}" for c in CASES])
def test_out_of_range_value_is_refused(tiny_bundle, tmp_path, key, value, message):
    d = json.loads((tiny_bundle / "manifest.json").read_text(encoding="utf-8"))
    _set(d, key, value)
    (tmp_path / "manifest.json").write_text(
        json.dumps(d), encoding="utf-8"
    )  # NaN/Infinity as Python writes them
    with pytest.raises(BundleError) as e:
        read_manifest(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'manifest.json'}: ") and message in str(e.value)


def test_max_length_beyond_the_graphs_is_refused_at_load(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    d = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    d["tokenizer"]["max_length"] = 1000  # the tiny BERT has 128 positions
    (bundle / "manifest.json").write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(
        BundleError, match=r"classifier graph fails on an input of 1000 tokens, the manifest's"
    ):
        Reranker.from_bundle(bundle, threads=1)
