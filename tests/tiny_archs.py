"""Tiny random RoBERTa- and DistilBERT-style models with tokenizers trained in code.

The pipeline must not assume BERT: a RoBERTa model has a byte-level BPE tokenizer, no
``token_type_ids``, pad id 1 and position ids that start after the pad id (so it needs
``max_length + 2`` position embeddings); a DistilBERT model has WordPiece but no ``token_type_ids``
and no token-type embeddings. ``make_tiny(arch, dir)`` writes a Hugging Face folder (config,
safetensors, tokenizer.json via ``save_pretrained``) that loads with AutoModel,
AutoModelForSequenceClassification and SentenceTransformer like a real base model.

The tokenizer is trained on the synthetic data of :mod:`tiny_models` plus a few awkward strings, so
the parity tests see merges, unknown characters and byte fallback.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import FILLER, TOPICS, synthetic_dataset

ARCHS = ("roberta", "distilbert")
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
