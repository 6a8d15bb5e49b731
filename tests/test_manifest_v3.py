"""Format version 3 of the manifest: the classifier's kind and the embedder's own tokenizer, strictly.

An encoder bundle is still written as version 1 (byte for byte what earlier versions wrote: the
golden tests load one); the version 3 keys need ``format_version`` 3; a graph must take exactly the
inputs its tokenizer section lists, since the runtime feeds those and no others.
"""

from __future__ import annotations

import json
import shutil

import pytest

from lrsl_rt import Reranker
from lrsl_rt.errors import BundleError
from lrsl_rt.manifest import FORMAT_VERSION, Manifest, read_manifest


def _manifest_dict(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def test_an_encoder_bundle_stays_version_1_without_version_3_keys(tiny_bundle_fp32):
    d = _manifest_dict(tiny_bundle_fp32)
    assert FORMAT_VERSION == 3 and d["format_version"] == 1
    assert "classifier_kind" not in d and "embedder_tokenizer" not in d
    m = read_manifest(tiny_bundle_fp32)
    assert m.classifier_kind == "encoder" and m.embedder_tokenizer is None
    assert m.embedder_tokenizer_settings is m.tokenizer
    assert m.to_dict() == d


def test_version_3_round_trip_and_what_it_needs(tiny_bundle_fp32):
    d = _manifest_dict(tiny_bundle_fp32)
    v3 = {**d, "format_version": 3, "classifier_kind": "decoder"}
    m = Manifest.from_dict(v3)
    assert m.classifier_kind == "decoder" and Manifest.from_dict(m.to_dict()) == m
    assert m.to_dict()["format_version"] == 3 and m.to_dict()["classifier_kind"] == "decoder"
    with pytest.raises(BundleError, match=r"key\(s\) \['classifier_kind'\] need format_version 3, got 2"):
        Manifest.from_dict({**v3, "format_version": 2})
    with pytest.raises(
        BundleError, match=r"'classifier_kind' must be one of \['encoder', 'decoder'\], got 'lstm'"
    ):
        Manifest.from_dict({**v3, "classifier_kind": "lstm"})
    own = {**d["tokenizer"], "pad_id": 1}
    with pytest.raises(BundleError, match=r"'files' must have exactly the roles .*'embedder_tokenizer'"):
        Manifest.from_dict({**v3, "embedder_tokenizer": own})
    with pytest.raises(BundleError, match=r"embedder_tokenizer.model_input_names must include input_ids"):
        Manifest.from_dict({**v3, "embedder_tokenizer": {**own, "model_input_names": ["input_ids"]}})
    with pytest.raises(BundleError, match=r"'embedder_tokenizer.pad_id' must be an integer >= 0, got -1"):
        files = {**d["files"], "embedder_tokenizer": d["files"]["tokenizer"]}
        Manifest.from_dict({**v3, "embedder_tokenizer": {**own, "pad_id": -1}, "files": files})


def test_a_graph_must_take_exactly_the_listed_inputs(tiny_bundle_fp32, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_fp32, bundle)
    d = _manifest_dict(bundle)
    assert d["tokenizer"]["model_input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    d["tokenizer"]["model_input_names"] = ["input_ids", "attention_mask"]
    (bundle / "manifest.json").write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(
        BundleError,
        match=r"the classifier graph takes inputs \['input_ids', 'attention_mask', 'token_type_ids'\], but "
        r"the manifest's tokenizer.model_input_names lists \['input_ids', 'attention_mask'\]",
    ):
        Reranker.from_bundle(bundle)
