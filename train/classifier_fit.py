"""Loading the classifier's base model for fine-tuning, encoder or decoder-only, with or without LoRA.

:func:`fit_classifier` is the pipeline's classifier step: the base folder's config says which kind
of classifier it is (:func:`train.decoder.classifier_kind`); a decoder-only model gets a pad token
and right padding (:func:`train.decoder.prepare_tokenizer`); ``--lora-rank`` wraps it in adapters
that are merged back after training (:mod:`train.decoder`), so what is returned is always a plain
``*ForSequenceClassification`` model.
"""

from __future__ import annotations

from .classifier import train_classifier
from .decoder import add_lora, classifier_kind, merge_lora, prepare_tokenizer
from .errors import DataError, ModelError
from .models import check_max_length, load_model


def fit_classifier(cfg, data, base: str, log):
    """(model, tokenizer, per-epoch history) of the fine-tuned sequence classifier."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    c = cfg.classifier
    check_lora_settings(c)
    config = load_model(AutoConfig.from_pretrained, base)
    kind = classifier_kind(config, base)
    _check_depth(c.layers, config, base)
    if kind == "decoder" and c.exit_layers:
        raise ModelError(f"{base}: --exit-layers needs an encoder classifier; this model is decoder-only")
    if c.lora_rank and c.exit_layers:
        raise ModelError("--exit-layers and --lora-rank cannot be combined; train exit heads without LoRA")
    tok = load_model(AutoTokenizer.from_pretrained, base)
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"{base}: the runtime needs a fast tokenizer (tokenizer.json); this model has none")
    if kind == "decoder":
        tok = prepare_tokenizer(tok, base)
    clf = load_model(
        AutoModelForSequenceClassification.from_pretrained,
        base,
        num_labels=len(data.labels),
        id2label=dict(enumerate(data.labels)),
        label2id={y: i for i, y in enumerate(data.labels)},
        attn_implementation="eager",
        **({"pad_token_id": tok.pad_token_id} if kind == "decoder" else {}),
        **({"num_hidden_layers": c.layers} if c.layers else {}),
    )
    check_max_length(clf.config, c.max_length, base)  # before training, not mid-epoch
    heads = _joint_heads(clf, c.exit_layers, len(data.labels))
    model = add_lora(clf, c.lora_rank, c.lora_alpha, c.lora_dropout, base)
    if c.lora_rank:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log(f"LoRA rank {c.lora_rank}: {trainable:,} of {total:,} weights trained")
    history = train_classifier(
        model, tok, data.train.texts, data.y["train"], data.dev.texts, data.y["dev"], c, log, heads
    )
    clf = merge_lora(model)
    clf.lrsl_exit_heads = heads  # written beside the classifier by write_checkpoint
    return clf, tok, history


def check_lora_settings(c) -> None:
    """Refuse a LoRA rank, alpha or dropout out of range before any model is loaded."""
    if isinstance(c.lora_rank, bool) or not isinstance(c.lora_rank, int) or c.lora_rank < 0:
        raise DataError(f"--lora-rank must be an integer >= 0 (0: full fine-tuning), got {c.lora_rank!r}")
    if c.lora_alpha is not None and not c.lora_alpha > 0:
        raise DataError(f"--lora-alpha must be > 0, got {c.lora_alpha!r}")
    if not 0 <= c.lora_dropout < 1:
        raise DataError(f"--lora-dropout must be in [0, 1), got {c.lora_dropout!r}")


def _joint_heads(clf, layers: list[int] | None, n_labels: int) -> dict:
    """Exit heads to train with the classifier (``--exit-layers``), each started as its final head."""
    from .exit_heads import depth, initial_head

    if not layers:
        return {}
    if max(layers) >= depth(clf):
        raise ModelError(
            f"--exit-layers {layers}: every exit must be below the classifier's depth {depth(clf)}"
        )
    return {layer: initial_head(clf, n_labels) for layer in layers}


def _check_depth(layers: int | None, config, base: str) -> None:
    """--classifier-layers must not ask for more layers than the base model has (transformers would
    add random ones)."""
    if not layers:
        return
    have = getattr(config, "num_hidden_layers", None)
    if not isinstance(have, int) or layers > have:
        raise ModelError(f"{base}: --classifier-layers {layers}, but the model has {have} layers")
