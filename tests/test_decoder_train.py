"""What training refuses or decides about a decoder-only classifier before any epoch runs.

The pad token must never occur in a text (the classifier reads the last token that is not padding);
an unsupported decoder-only type is named; LoRA settings out of range and combinations the export
cannot ship stop the run with one line, before a model is loaded where possible.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from train.decoder import classifier_kind, lora_targets, prepare_tokenizer
from train.errors import ModelError


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tiny_archs import make_tiny

    return make_tiny("llama", tmp_path_factory.mktemp("llama"))


def test_pad_token_is_the_end_of_text_token_when_there_is_none(llama_dir):
    from transformers import AutoTokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(llama_dir), llama_dir)
    assert tok.pad_token == "<|end_of_text|>" and tok.padding_side == "right"
    assert tok.model_input_names == ["input_ids", "attention_mask"]
    assert set(tok(["a", "bb cc"], padding=True)) == {"input_ids", "attention_mask"}


def test_a_tokenizer_that_appends_its_pad_token_to_every_text_is_refused(llama_dir):
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_dir)
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        special_tokens=[(bos, tok.convert_tokens_to_ids(bos)), (eos, tok.convert_tokens_to_ids(eos))],
    )
    with pytest.raises(ModelError, match=r"adds its pad token '<\|end_of_text\|>' to every text"):
        prepare_tokenizer(tok, llama_dir)


def test_kinds_and_lora_targets():
    llama = SimpleNamespace(model_type="llama", architectures=["LlamaForCausalLM"])
    bert = SimpleNamespace(model_type="bert", architectures=["BertModel"])
    gpt2 = SimpleNamespace(model_type="gpt2", architectures=["GPT2LMHeadModel", "GPT2ForCausalLM"])
    assert classifier_kind(llama, "x") == "decoder" and classifier_kind(bert, "x") == "encoder"
    with pytest.raises(
        ModelError, match=r"x: decoder-only model type 'gpt2' is not supported; supported: llama"
    ):
        classifier_kind(gpt2, "x")
    assert "down_proj" in lora_targets(llama, "x")
    assert lora_targets(bert, "x") == ["query", "value"]  # peft's own choice for encoders


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora-rank", "-1"], r"--lora-rank must be an integer >= 0"),
        (["--lora-rank", "4", "--lora-alpha", "0"], r"--lora-alpha must be > 0, got 0.0"),
        (["--lora-dropout", "1"], r"--lora-dropout must be in \[0, 1\), got 1.0"),
        (["--exit-layers", "1"], r"--exit-layers needs an encoder classifier; this model is decoder-only"),
    ],
)
def test_bad_settings_stop_before_training(llama_dir, tmp_path, capsys, flags, message):
    import re

    from trained_tiny import write_data

    from train.__main__ import main

    data = write_data(tmp_path / "data")
    args = ["--train", str(data / "train.jsonl"), "--dev", str(data / "dev.jsonl")]
    args += [
        "--classifier-model",
        str(llama_dir),
        "--embedder-model",
        str(llama_dir),
        "--out",
        str(tmp_path / "c"),
    ]
    assert main([*args, *flags]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "c").exists()
    assert "Traceback" not in err
