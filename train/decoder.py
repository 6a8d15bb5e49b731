"""Decoder-only classifiers (Llama-, Qwen2-, Mistral-style) and LoRA adapters for any classifier.

A decoder-only model reads a text left to right, so only its last real token has seen the whole
text: ``*ForSequenceClassification`` scores that token. Transformers finds it as the rightmost
token that is not the pad token, which works for right and left padding alike -- as long as the
pad token never occurs inside a text. Many such models ship without a pad token; then
:func:`prepare_tokenizer` pads with the end-of-text token, which their tokenizers never add to a
text (checked on a probe text), and sets the pad id in the model's config. Right padding is used
in training, as the runtime pads (the exported graph gathers the last token by the attention mask,
so it is indifferent to the side).

LoRA (``--lora-rank R``, peft): low-rank adapters on the attention and MLP projections of each
family (:data:`LORA_TARGETS`; other model types use peft's own table), the classification head
trained in full; the adapters are merged into the weights after training
(:func:`merge_lora`), so the checkpoint is an ordinary model and the export sees no peft. Rank 0 is
full fine-tuning.

Shortcut: the families are recognised by ``model_type``; a decoder-only model of another type is
refused rather than exported with an encoder's assumptions.
"""

from __future__ import annotations

import warnings

from .errors import ModelError

# Decoder-only model types whose sequence classifier is ``model`` (the decoder) + ``score`` (a
# linear head on the last token), and their LoRA target modules (attention and MLP projections).
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS = {"llama": _PROJECTIONS, "mistral": _PROJECTIONS, "qwen2": _PROJECTIONS, "qwen3": _PROJECTIONS}
DECODER_TYPES = tuple(LORA_TARGETS)
TESTED_DECODER_TYPES = ("llama", "qwen2", "mistral")
CLASSIFIER_KINDS = ("encoder", "decoder")


def classifier_kind(config, where) -> str:
    """``"decoder"`` for a supported decoder-only model, ``"encoder"`` otherwise; a decoder-only
    model of an unsupported type is refused (ModelError naming ``where``)."""
    model_type = getattr(config, "model_type", None)
    if model_type in DECODER_TYPES:
        return "decoder"
    causal = any(str(a).endswith("ForCausalLM") for a in getattr(config, "architectures", None) or ())
    if causal and not getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"{where}: decoder-only model type {model_type!r} is not supported; supported: "
            f"{', '.join(DECODER_TYPES)} (tested: {', '.join(TESTED_DECODER_TYPES)})"
        )
    return "encoder"


def prepare_tokenizer(tok, where):
    """The decoder's tokenizer with a pad token that no text contains, right padding and right
    truncation, and only the inputs a decoder takes (no ``token_type_ids``)."""
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ModelError(
                f"{where}: the tokenizer has neither a pad token nor an end-of-text token to pad with; "
                "add a pad token to its tokenizer_config.json"
            )
        tok.pad_token = tok.eos_token
    probe = tok("a probe text")["input_ids"]
    if tok.pad_token_id in probe:
        raise ModelError(
            f"{where}: the tokenizer adds its pad token {tok.pad_token!r} to every text, so the last real "
            "token cannot be told from padding; set another pad_token in its tokenizer_config.json"
        )
    settings = {"padding_side": "right", "truncation_side": "right"}
    settings["model_input_names"] = ["input_ids", "attention_mask"]
    for key, value in settings.items():
        setattr(tok, key, value)
        tok.init_kwargs[key] = value  # saved with the tokenizer, so the export loads it the same way
    return tok


def lora_targets(config, where) -> list[str]:
    """The modules LoRA adapts for this model type: ours for the decoder families, else peft's."""
    model_type = getattr(config, "model_type", None)
    if model_type in LORA_TARGETS:
        return list(LORA_TARGETS[model_type])
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    if model_type not in PEFT_TARGETS:
        raise ModelError(f"{where}: no LoRA target modules known for model type {model_type!r}")
    return list(PEFT_TARGETS[model_type])


def add_lora(model, rank: int, alpha: float | None, dropout: float, where):
    """``model`` wrapped in peft LoRA adapters of ``rank`` (alpha default: 2 x rank); the
    classification head stays fully trainable. Rank 0: ``model`` unchanged (full fine-tuning)."""
    if rank == 0:
        return model
    peft = _import_peft()
    config = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=lora_targets(model.config, where),
    )
    return peft.get_peft_model(model, config)


def merge_lora(model):
    """The plain transformers model with the adapters added into its weights (no-op without LoRA)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def _import_peft():
    try:
        with warnings.catch_warnings():  # peft warns on import about transformers versions it will drop
            warnings.simplefilter("ignore", FutureWarning)
            import peft
    except ImportError as e:
        raise ModelError("--lora-rank needs peft: pip install 'lrsl-rt[train]' (or pip install peft)") from e
    return peft
