"""The pipeline is not BERT-only: train -> export -> runtime -> CLI with a RoBERTa-style model
(byte-level BPE, no token_type_ids, pad id 1, positions offset by the pad id) and a DistilBERT-style one
(WordPiece, no token_type_ids, no token-type embeddings), both tiny, random and built in code.

Checked for each: the runtime's tokenizer equals transformers' on awkward text, the exported graphs
equal the PyTorch models the checkpoint holds (classifier logits with transformers, embeddings with
sentence-transformers -- not the export's own wrappers), the int8 graphs are quantized, and the CLI
predicts and evaluates with the numbers the export measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_models import AWKWARD
from trained_tiny import MAX_LENGTH, make_base, trained, write_data

from lrsl_rt.manifest import read_manifest
from lrsl_rt.tokenize import BundleTokenizer

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("roberta", "distilbert")


@pytest.fixture(scope="module", params=ARCHS)
def built(request, tmp_path_factory):
    return trained(request.param, tmp_path_factory)


def test_graphs_take_no_token_type_ids(built):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(built.checkpoint / "classifier")
    tok = AutoTokenizer.from_pretrained(built.checkpoint / "classifier")
    assert config.model_type == built.arch
    for bundle in (built.bundle_fp32, built.bundle_int8):
        m = read_manifest(bundle)
        assert m.tokenizer.model_input_names == ("input_ids", "attention_mask")
        assert (m.tokenizer.pad_id, m.tokenizer.pad_token) == (tok.pad_token_id, tok.pad_token)
    assert read_manifest(built.bundle_fp32).tokenizer.pad_id == (1 if built.arch == "roberta" else 0)


@pytest.mark.parametrize("max_length", [8, MAX_LENGTH, 128])
def test_tokenizer_parity_with_transformers(built, max_length):
    from dataclasses import replace

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(built.checkpoint / "classifier")
    settings = replace(read_manifest(built.bundle_int8).tokenizer, max_length=max_length)
    ours = BundleTokenizer(built.bundle_int8 / "tokenizer.json", settings)
    for batch in (AWKWARD, AWKWARD[:1], AWKWARD[2:5], AWKWARD[8:]):
        want = hf(batch, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        got = ours(batch)
        assert set(want) == {"input_ids", "attention_mask"}
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name}, max_length={max_length}")
    for text in AWKWARD:
        assert (
            list(ours.tokenize([text])[0].ids)
            == hf(text, truncation=True, max_length=max_length)["input_ids"]
        )


def _texts(built) -> list[str]:
    dev = [json.loads(line)["text"] for line in (built.data / "dev.jsonl").read_text().splitlines()]
    return dev[:12] + [t for t in AWKWARD if t.strip()]


def test_onnx_logits_and_embeddings_equal_pytorch(built):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lrsl_rt import Reranker

    texts = _texts(built)
    tok = AutoTokenizer.from_pretrained(built.checkpoint / "classifier")
    clf = AutoModelForSequenceClassification.from_pretrained(built.checkpoint / "classifier").eval()
    with torch.no_grad():
        enc = tok(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        want_logits = clf(**enc).logits.numpy()
    st = SentenceTransformer(str(built.checkpoint / "embedder"), device="cpu")
    assert st.max_seq_length == MAX_LENGTH
    want_emb = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    r = Reranker.from_bundle(built.bundle_fp32, threads=1)
    np.testing.assert_allclose(r.logits(texts), want_logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(r.embed(texts), want_emb, atol=1e-4, rtol=1e-4)
    # batch composition must not matter: padding with this model's pad id is masked out
    one_by_one = np.concatenate([r.logits([t]) for t in texts[:4]])
    np.testing.assert_allclose(one_by_one, want_logits[:4], atol=1e-4, rtol=1e-4)


def test_int8_graphs_are_quantized_and_close_to_fp32(built):
    from lrsl_rt import Reranker

    m = read_manifest(built.bundle_int8)
    for role in ("classifier", "embedder"):
        g = m.metrics["graphs"][role]
        assert g["quantized_linear"] == g["linear_layers"] > 0, role
    texts = _texts(built)
    fp32 = Reranker.from_bundle(built.bundle_fp32, threads=1).embed(texts)
    int8 = Reranker.from_bundle(built.bundle_int8, threads=1).embed(texts)
    assert float(np.min(np.sum(fp32 * int8, axis=1))) > 0.9  # unit vectors: cosine per text


def _cli(*args, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "lrsl_rt", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_cli_predicts_and_evaluates_like_the_export(built, tmp_path):
    m = read_manifest(built.bundle_int8)
    p = _cli(
        "predict", "--bundle", built.bundle_int8, "--format", "jsonl", stdin="my card is lost\n😀 café\n"
    )
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 2 and all(row["label"] in m.labels for row in rows)
    p = _cli(
        "eval",
        *("--bundle", built.bundle_int8, "--input", built.checkpoint / "test.jsonl"),
        *("--label-field", "label", "--report", tmp_path / "rep"),
    )
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    exported = m.metrics["bundle"]["test"]
    for key in ("n", "n_hard", "accuracy_classifier", "accuracy_lrsl", "fixed", "broken"):
        assert report[key] == exported[key], key


@pytest.mark.parametrize("arch", ARCHS)
def test_max_length_beyond_the_positions_is_refused_before_training(arch, tmp_path):
    """RoBERTa's positions start after its pad id: 130 position embeddings read 128 tokens, not 130."""
    from train import data as D
    from train.pipeline import TrainConfig, run

    base, data = make_base(arch, tmp_path / "base"), write_data(tmp_path / "data")
    cfg = TrainConfig(
        out=str(tmp_path / "ckpt"),
        train=str(data / "train.jsonl"),
        dev=str(data / "dev.jsonl"),
        classifier_model=str(base),
        embedder_model=str(base),
    )
    cfg.classifier.max_length = 129  # tiny RoBERTa: 130 positions; tiny DistilBERT: 128
    with pytest.raises(D.DataError, match=rf"--max-length 129 exceeds the 128 tokens this {arch} model"):
        run(cfg, log=lambda s: None)
    assert not (tmp_path / "ckpt").exists()
