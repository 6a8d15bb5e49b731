"""Tiny random BERT models built in code, so tests need no downloaded weights.

``make_tiny_bert(dir)`` writes a Hugging Face model folder (config, safetensors weights, vocab.txt,
tokenizer.json) with a 2-layer, 32-wide BERT whose WordPiece vocabulary covers the synthetic data of
``synthetic_dataset``. The folder loads with AutoModel / AutoModelForSequenceClassification /
SentenceTransformer exactly like a real base model.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TOPICS = {
    "card_arrival": ["card", "arrive", "delivery", "mail", "waiting", "still"],
    "exchange_rate": ["exchange", "rate", "currency", "euro", "dollar", "convert"],
    "top_up_failed": ["top", "up", "failed", "declined", "money", "add"],
    "lost_card": ["lost", "stolen", "card", "missing", "block", "freeze"],
}
# texts about none of the TOPICS: weather, food, sport (the abstain tests' out-of-scope texts)
OUT_OF_SCOPE = [
    "what is the weather like today",
    "recommend a good pizza place",
    "who won the football match",
    "play some music please",
    "how tall is the tower",
    "tell me a joke",
]
FILLER = ["i", "my", "the", "is", "why", "how", "do", "can", "please", "help", "what", "a", "not", "it"]


# Texts that stress a tokenizer: accents, emoji, scripts, whitespace, zero-width, far too long.
AWKWARD = [
    "",
    "card",
    "Café naïve résumé, Ångström and Øre — déjà vu",
    "emoji 😀🎉👍🏽 in a 🏦 text!",
    "中文字符 mixed with العربية and русский",
    "  leading spaces\ttabs\nnewlines\r\nand\u00a0nbsp  ",
    "UPPER lower MiXeD 12345 3.14 e-mail@x.io",
    "zero\u200bwidth and combining e\u0301",
    "why " * 400,  # far longer than any max_length: truncation, the last positions
    " ".join(["exchange rate"] * 40),
]


def vocabulary() -> list[str]:
    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER))
    words += ["label", "text", "arrival", "failed", "lost"]
    # pieces for awkward text: accents, digits, punctuation, continuation pieces
    extra = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-") + [
        "##" + c for c in "abcdefghijklmnopqrstuvwxyz"
    ]
    return SPECIALS + list(dict.fromkeys(sorted(set(words)) + extra))


def make_tiny_bert(out_dir: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tok.model_max_length = 128
    tok.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out_dir)
    return out_dir


def synthetic_dataset(n_per_class: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short texts whose topic words give away their label, with some overlap so a few are hard."""
    rng = random.Random(seed)
    texts, labels = [], []
    names = list(TOPICS)
    for i in range(n_per_class):
        for label in names:
            words = rng.sample(TOPICS[label], 2) + rng.sample(FILLER, 3)
            if i % 5 == 0:  # borrow a word of another topic: some samples are ambiguous
                other = names[(names.index(label) + 1) % len(names)]
                words.append(rng.choice(TOPICS[other]))
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(label)
    return texts, labels
