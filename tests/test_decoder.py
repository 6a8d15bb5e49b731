"""Decoder-only classifiers (Llama-, Qwen2-, Mistral-style) through train, export, the runtime, the CLI and the server.

Each architecture is tiny, random and built in code with a tokenizer trained in code (``tiny_archs``),
and trained by the real ``python -m train`` with LoRA and without (``trained_decoder``). Checked:

- LoRA trains only adapters and the head, merged into plain weights; full fine-tuning moves every weight;
- the pad token: the family's own (Qwen2) or the end-of-text token (Llama, Mistral), never in a text;
- a text alone and inside a batch of longer texts gets the same logits with right and with left
  padding, in PyTorch (transformers' classifier) and in the exported graph;
- ONNX fp32 logits equal transformers' within 1e-4; the int8 graph quantizes every weight MatMul;
- the manifest: format version 3, classifier kind ``decoder``, graph inputs without token_type_ids,
  the embedder's own tokenizer; the dev fusion choice started from softmax*cos^2;
- predictions through the API, the CLI and the server agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from tiny_archs import DECODER_ARCHS
from tiny_models import AWKWARD
from trained_decoder import MAX_LENGTH, decoder_built

from lrsl_rt.manifest import read_manifest

LONGER = ["a much longer text about my card that was lost and then blocked and then found again", "x " * 20]


@pytest.fixture(scope="module", params=DECODER_ARCHS)
def built(request, tmp_path_factory):
    return decoder_built(request.param, tmp_path_factory)


def _weights(folder) -> dict:
    return load_file(str(folder / "model.safetensors"))


def _hf(checkpoint):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint / "classifier")
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint / "classifier").eval()
    return tok, model


def _texts(built) -> list[str]:
    dev = [json.loads(line)["text"] for line in (built.data / "dev.jsonl").read_text().splitlines()]
    return dev[:10] + [t for t in AWKWARD if t.strip()]


# ---- training ---------------------------------------------------------------------------------------
def test_lora_trains_adapters_and_head_only_and_full_fine_tuning_every_weight(built):
    base = _weights(built.base)
    lora, full = _weights(built.lora / "classifier"), _weights(built.full / "classifier")
    assert not any("lora" in name for name in lora)  # merged: a plain model
    q = "model.layers.0.self_attn.q_proj.weight"
    for name in ("model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"):
        np.testing.assert_array_equal(lora[name], base[name])  # frozen under LoRA
        assert not np.array_equal(full[name], base[name])  # trained in full fine-tuning
    assert not np.array_equal(lora[q], base[q])  # the adapter, merged into its projection
    assert lora["score.weight"].shape == (4, base["model.embed_tokens.weight"].shape[1])


def test_pad_token_is_the_familys_or_end_of_text(built):
    from transformers import AutoConfig

    tok, _ = _hf(built.lora)
    config = AutoConfig.from_pretrained(built.lora / "classifier")
    assert config.pad_token_id == tok.pad_token_id
    want = "<|endoftext|>" if built.arch == "qwen2" else tok.eos_token
    assert tok.pad_token == want
    assert tok.pad_token_id not in tok(_texts(built))["input_ids"][0]
    assert tok.model_input_names == ["input_ids", "attention_mask"]
    info = json.loads((built.lora / "lrsl.json").read_text())
    assert info["classifier_kind"] == "decoder"


def test_dev_fusion_choice_started_from_softmax_cos2(built):
    """The table's z is measured against the incumbent: 0 with no differing row for softmax*cos^2 itself."""
    metrics = json.loads((built.lora / "metrics.json").read_text())
    own = next(
        r
        for r in metrics["fusion_table_dev"]
        if r["fusion"] == {"rule": "softmax_cos", "p": 2, "scope": "all"}
    )
    assert own["discordant"] == 0 and own["z"] == 0.0


# ---- padding ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_a_text_alone_and_in_a_batch_of_longer_texts_gets_the_same_logits(built, side):
    import torch

    from lrsl_rt.session import OnnxSession

    tok, model = _hf(built.lora)
    tok.padding_side = side
    m = read_manifest(built.bundle_fp32)
    graph = OnnxSession(built.bundle_fp32 / m.files["classifier"].path, threads=1)
    text = "my card is lost"
    with torch.no_grad():
        alone_pt = model(**tok([text], return_tensors="pt")).logits.numpy()
        batch = tok([text, *LONGER], padding=True, return_tensors="pt")
        assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # really padded
        in_batch_pt = model(**batch).logits.numpy()[0]
    in_batch_onnx = graph.run({k: v.numpy() for k, v in batch.items()})[0]
    alone_onnx = graph.run(dict(tok([text], return_tensors="np")))[0]
    np.testing.assert_allclose(in_batch_pt, alone_pt[0], atol=1e-5)
    np.testing.assert_allclose(in_batch_onnx, alone_onnx, atol=1e-5)
    np.testing.assert_allclose(alone_onnx, alone_pt[0], atol=1e-4)


# ---- export -----------------------------------------------------------------------------------------
def test_onnx_fp32_logits_equal_transformers(built):
    import torch

    from lrsl_rt import Reranker

    texts = _texts(built)
    tok, model = _hf(built.lora)
    with torch.no_grad():
        enc = tok(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        want = model(**enc).logits.numpy()
    r = Reranker.from_bundle(built.bundle_fp32, threads=1)
    np.testing.assert_allclose(r.logits(texts), want, atol=1e-4, rtol=1e-4)
    one_by_one = np.concatenate([r.logits([t]) for t in texts[:4]])
    np.testing.assert_allclose(one_by_one, want[:4], atol=1e-4, rtol=1e-4)
    assert r.manifest.metrics["parity"]["logits_max_abs_diff"] <= 1e-4


def test_manifest_lists_each_graphs_inputs_and_the_embedders_tokenizer(built):
    from lrsl_rt.session import OnnxSession

    for bundle in (built.bundle_fp32, built.bundle_int8):
        m = read_manifest(bundle)
        assert m.format_version == 3 and m.classifier_kind == "decoder"
        assert m.tokenizer.model_input_names == ("input_ids", "attention_mask")
        assert m.embedder_tokenizer.model_input_names == ("input_ids", "attention_mask", "token_type_ids")
        assert m.embedder_tokenizer.pad_token == "[PAD]" and "embedder_tokenizer" in m.files
        graph = OnnxSession(bundle / m.files["classifier"].path, threads=1)
        assert sorted(graph.input_names) == ["attention_mask", "input_ids"]


def test_int8_quantizes_every_weight_matmul_and_agrees_with_fp32(built):
    from lrsl_rt import Reranker

    g = read_manifest(built.bundle_int8).metrics["graphs"]["classifier"]
    assert g["quantized_linear"] == g["linear_layers"] >= 7 * 2  # q k v o gate up down per layer
    texts = _texts(built)
    fp32 = Reranker.from_bundle(built.bundle_fp32, threads=1).logits(texts)
    int8 = Reranker.from_bundle(built.bundle_int8, threads=1).logits(texts)
    assert np.abs(int8 - fp32).max() < 0.05 * max(1.0, np.abs(fp32).max())


# ---- runtime: API, CLI, server --------------------------------------------------------------------------
def test_embedder_reads_its_own_tokenizer_and_every_hard_row_is_reranked(built):
    import dataclasses

    from sentence_transformers import SentenceTransformer

    from lrsl_rt import Reranker
    from lrsl_rt.fusion import fuse

    texts = _texts(built)
    r = Reranker.from_bundle(built.bundle_fp32, threads=1)
    assert r.embedder_tokenizer is not r.tokenizer
    st = SentenceTransformer(str(built.lora / "embedder"), device="cpu")
    want = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(r.embed(texts), want, atol=1e-4)
    r.manifest = dataclasses.replace(r.manifest, threshold=1e9)  # every row hard: the embedder runs on all
    predictions = r.predict(texts)
    fused = fuse(r.logits(texts), r.similarities(texts), r.fusion, r.k)
    assert all(p.hard for p in predictions)
    assert [p.label_id for p in predictions] == fused.argmax(1).tolist()


TEXTS = ["my card is lost", "exchange rate euro 😀", "why did my top up fail", "x"]


def _inputs(built) -> list[str]:
    """Dev texts (about half of them hard for the tiny classifiers, so the embedder runs) and a few more."""
    dev = [json.loads(line)["text"] for line in (built.data / "dev.jsonl").read_text().splitlines()]
    return TEXTS + dev[:12]


def _api_records(bundle, texts) -> list[dict]:
    from lrsl_rt import Reranker

    r = Reranker.from_bundle(bundle, threads=1)
    records = json.loads(json.dumps([p.to_dict() for p in r.predict(texts)]))
    assert any(x["hard"] for x in records) and not all(x["hard"] for x in records)
    return records


def test_cli_predicts_what_the_api_predicts(built, tmp_path, capsys):
    """Through the CLI's entry point in this process (a subprocess per architecture costs seconds)."""
    from lrsl_rt.cli import main

    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    texts = _inputs(built)
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code = main(
        [
            "predict",
            "--bundle",
            str(built.bundle_int8),
            "--input",
            str(src),
            "--output",
            str(out),
            "--threads",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    want = _api_records(built.bundle_int8, texts)
    assert [(g["label"], g["hard"]) for g in got] == [(w["label"], w["hard"]) for w in want]
    capsys.readouterr()
    assert main(["info", "--bundle", str(built.bundle_int8)]) == 0
    out = capsys.readouterr().out
    assert "classifier:  decoder-only, reads each text's last real token (input_ids, attention_mask)" in out


def test_server_predicts_what_the_api_predicts(tmp_path_factory):
    """One architecture: the server reaches the model through the same Reranker, whatever the family
    (its rows are tokenized ahead for the batch budget, then re-tokenized for the embedder)."""
    import httpx
    from serve_client import Server

    built = decoder_built("llama", tmp_path_factory)
    texts = _inputs(built)
    s = Server(built.bundle_int8)
    try:
        s.wait_ready()
        served = httpx.post(f"{s.url}/predict", json={"inputs": texts}, timeout=30).json()
    finally:
        assert s.stop() == 0, s.log
    want = _api_records(built.bundle_int8, texts)
    assert [(x["label"], x["hard"]) for x in served] == [(w["label"], w["hard"]) for w in want]
