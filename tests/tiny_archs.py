"""Tiny random RoBERTa-, DistilBERT-, Llama-, Qwen2- and Mistral-style models with tokenizers trained in code.

The pipeline must not assume BERT: a RoBERTa model has a byte-level BPE tokenizer, no
``token_type_ids``, pad id 1 and position ids that start after the pad id (so it needs
``max_length + 2`` position embeddings); a DistilBERT model has WordPiece but no ``token_type_ids``
and no token-type embeddings. ``make_tiny(arch, dir)`` writes a Hugging Face folder (config,
safetensors, tokenizer.json via ``save_pretrained``) that loads with AutoModel,
AutoModelForSequenceClassification and SentenceTransformer like a real base model.

The decoder-only ones (:data:`DECODER_ARCHS`) are saved as ``*ForCausalLM`` folders, as such models
are published, with grouped-query attention (fewer key/value heads than query heads) and the
tokenizer conventions of their families: Llama-style byte-level BPE that prepends ``<|begin_of_text|>``
and has no pad token; Qwen2-style byte-level BPE that adds no special token and pads with
``<|endoftext|>``; Mistral-style Metaspace BPE (SentencePiece's word marker) that prepends ``<s>``, with
``<unk>`` and no pad token. Training must then choose a pad token itself.

The tokenizer is trained on the synthetic data of :mod:`tiny_models` plus a few awkward strings, so
the parity tests see merges, unknown characters and byte fallback.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import FILLER, TOPICS, synthetic_dataset

ENCODER_ARCHS = ("roberta", "distilbert")
DECODER_ARCHS = ("llama", "qwen2", "mistral")
ARCHS = ENCODER_ARCHS + DECODER_ARCHS
MAX_LENGTH = 128
EXTRA_CORPUS = [
    "Café naïve résumé déjà vu",
    "card arrival exchange rate top up failed lost card",
    "UPPER lower MiXeD 12345 3.14 e-mail@x.io",
]


def _corpus() -> list[str]:
    texts = synthetic_dataset(30, seed=7)[0]
    return texts + [" ".join(TOPICS[y]) for y in TOPICS] + [" ".join(FILLER)] + EXTRA_CORPUS * 5


def roberta_tokenizer(out_dir: Path):
    """Byte-level BPE (GPT-2 style) with RoBERTa's specials: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    fast = RobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=MAX_LENGTH,
    )
    fast.save_pretrained(out_dir)
    return fast


def distilbert_tokenizer(out_dir: Path):
    """Lower-casing WordPiece with BERT's specials, trained on the corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DistilBertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = DistilBertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=MAX_LENGTH,
    )
    fast.save_pretrained(out_dir)
    return fast


def make_tiny(arch: str, out_dir: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random ``arch`` model folder with its trained tokenizer; loads like a downloaded base model."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if arch in DECODER_ARCHS:
        return make_tiny_decoder(arch, out_dir, hidden=hidden, layers=layers)
    if arch == "roberta":
        tok = roberta_tokenizer(out_dir)
        config = RobertaConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            max_position_embeddings=MAX_LENGTH + tok.pad_token_id + 1,  # positions start after the pad id
            type_vocab_size=1,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
        RobertaModel(config).save_pretrained(out_dir)
    elif arch == "distilbert":
        tok = distilbert_tokenizer(out_dir)
        config = DistilBertConfig(
            vocab_size=len(tok),
            dim=hidden,
            n_layers=layers,
            n_heads=2,
            hidden_dim=2 * hidden,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tok.pad_token_id,
        )
        DistilBertModel(config).save_pretrained(out_dir)
    else:
        raise ValueError(f"unknown architecture {arch!r}; known: {ARCHS}")
    return out_dir


# ---- decoder-only families ------------------------------------------------------------------------
def _byte_level_bpe(specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def _metaspace_bpe(specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    return tok


def decoder_tokenizer(arch: str, out_dir: Path):
    """The ``arch`` family's tokenizer conventions (module docstring), trained on the corpus."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if arch == "llama":
        tok = _byte_level_bpe(["<|begin_of_text|>", "<|end_of_text|>"])
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
        kw = {"bos_token": bos, "eos_token": "<|end_of_text|>"}
    elif arch == "qwen2":
        tok = _byte_level_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        kw = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    elif arch == "mistral":
        tok = _metaspace_bpe(["<unk>", "<s>", "</s>"])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        kw = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        raise ValueError(f"unknown decoder architecture {arch!r}; known: {DECODER_ARCHS}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=MAX_LENGTH,
        model_input_names=["input_ids", "attention_mask"],
        **kw,
    )
    fast.save_pretrained(out_dir)
    return fast


def make_tiny_decoder(arch: str, out_dir: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A random ``arch`` causal LM folder (4 query heads, 2 key/value heads) with its tokenizer."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tok = decoder_tokenizer(arch, out_dir)
    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
    }[arch]
    config = config_cls(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model_cls(config).save_pretrained(out_dir)
    return out_dir
