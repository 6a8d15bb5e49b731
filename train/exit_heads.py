"""Exit heads: small classifiers after chosen encoder layers of a fine-tuned classifier (PyTorch).

An exit head reads the ``[CLS]`` hidden state after layer ``l`` and mirrors the final head of a BERT
classifier: ``dense (hidden x hidden) -> tanh -> out (hidden x labels)``. It starts as a copy of the
final pooler and classifier (the final head applied early), then is trained on the frozen
classifier's hidden states (:mod:`train.exits`), so the classifier and its final head stay exactly
as they were.

The encoder is split into parts that the export traces as stage graphs (:mod:`export.stages`):
:func:`embed` (token inputs -> hidden states), :func:`run_layers` (layers ``start..stop`` under the
attention mask) and :func:`final_head`. Supported: BERT-style models (``embeddings``,
``encoder.layer``; the final head on the pooler when there is one, as BERT, or on the sequence
output, as RoBERTa); anything else is refused with an :class:`~train.errors.ModelError`.

Stored in the checkpoint beside the classifier, no pickle::

    CKPT/exits/heads.safetensors   layer{l}.dense.weight, layer{l}.dense.bias, layer{l}.out.weight, ...
    CKPT/exits/exits.json          {"format": "lrsl-exits", "version": 1, "layers": [2, 4],
                                    "classifier_layers": 6, "hidden_size": ..., "labels": ..., ...}

A checkpoint without ``exits/`` exports as before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, ModelError

EXITS_DIR = "exits"
HEADS_FILE = "heads.safetensors"
INFO_FILE = "exits.json"
EXITS_FORMAT, EXITS_VERSION = "lrsl-exits", 1


class ExitHead(nn.Module):
    """[CLS] hidden state -> dense -> tanh -> logits."""

    def __init__(self, hidden: int, labels: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.from_cls(hidden_states[:, 0])

    def from_cls(self, cls: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.dense(cls)))


def encoder(model) -> nn.Module:
    """The base model of a sequence classifier, after checking it can be cut into stages."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or not hasattr(base, "embeddings") or layers is None or not hasattr(model, "classifier"):
        raise ModelError(
            f"{type(model).__name__}: early exits need a BERT-style classifier (embeddings, "
            "encoder.layer, classifier); export this checkpoint with --no-exits"
        )
    return base


def depth(model) -> int:
    return len(encoder(model).encoder.layer)


def embed(model, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
    kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
    return encoder(model).embeddings(input_ids=input_ids, **kw)


def run_layers(
    model, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int
) -> torch.Tensor:
    """Encoder layers ``start..stop-1`` (0-based) under the additive mask eager attention uses."""
    mask = attention_mask[:, None, None, :].to(hidden.dtype)
    extended = (1.0 - mask) * torch.finfo(hidden.dtype).min
    for layer in encoder(model).encoder.layer[start:stop]:
        hidden = layer(hidden, attention_mask=extended)[0]
    return hidden


def final_head(model, hidden: torch.Tensor) -> torch.Tensor:
    """The classifier's own head on the last hidden states (eval mode: dropout is the identity)."""
    pooler = getattr(encoder(model), "pooler", None)
    return model.classifier(pooler(hidden)) if pooler is not None else model.classifier(hidden)


def initial_head(model, labels: int) -> ExitHead:
    """A head that starts as the final pooler + classifier when the model has that shape."""
    hidden = model.config.hidden_size
    head = ExitHead(hidden, labels)
    pooler = getattr(encoder(model), "pooler", None)
    out = getattr(model, "classifier", None)
    if (
        pooler is not None
        and isinstance(out, nn.Linear)
        and isinstance(getattr(pooler, "dense", None), nn.Linear)
    ):
        head.dense.load_state_dict(pooler.dense.state_dict())
        head.out.load_state_dict(out.state_dict())
    return head


def replace_exits_dir(ckpt: Path, staged: Path) -> Path:
    """Move the staged ``exits`` folder into the checkpoint, replacing an earlier one."""
    target = ckpt / EXITS_DIR
    old = ckpt / f".{EXITS_DIR}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staged.rename(target)
    if old.exists():
        shutil.rmtree(old)
    if not (target / "exits.json").is_file():
        raise CheckpointError(f"{target}: exits.json missing after writing")
    return target


def save_heads(folder: Path, heads: dict[int, ExitHead], info: dict) -> None:
    """heads.safetensors and exits.json into ``folder`` (which must exist)."""
    from safetensors.torch import save_file

    tensors = {
        f"layer{n}.{k}": v.detach().contiguous() for n, h in heads.items() for k, v in h.state_dict().items()
    }
    save_file(tensors, str(folder / HEADS_FILE))
    meta = {"format": EXITS_FORMAT, "version": EXITS_VERSION, "layers": sorted(heads), **info}
    (folder / INFO_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read_exits_info(ckpt_dir: Path) -> dict | None:
    """exits.json of a checkpoint, checked; None when the checkpoint has no exit heads."""
    path = Path(ckpt_dir) / EXITS_DIR / INFO_FILE
    if not path.is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("format") != EXITS_FORMAT or info.get("version") != EXITS_VERSION:
        raise CheckpointError(
            f"{path}: expected format {EXITS_FORMAT!r} version {EXITS_VERSION}, got "
            f"{info.get('format')!r} version {info.get('version')!r}"
        )
    layers = info.get("layers")
    if not isinstance(layers, list) or not layers or layers != sorted(set(layers)):
        raise CheckpointError(f"{path}: 'layers' must be a non-empty increasing list, got {layers!r}")
    return info


def load_heads(ckpt_dir: Path, hidden: int, labels: int) -> dict[int, ExitHead]:
    """The exit heads of a checkpoint by layer ({} without ``exits/``)."""
    info = read_exits_info(ckpt_dir)
    if info is None:
        return {}
    from safetensors.torch import load_file

    path = Path(ckpt_dir) / EXITS_DIR / HEADS_FILE
    tensors = load_file(str(path))
    heads = {}
    for layer in info["layers"]:
        head = ExitHead(hidden, labels)
        state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == f"layer{layer}"}
        try:
            head.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(
                f"{path}: the head after layer {layer} does not fit the classifier: {e}"
            ) from e
        heads[layer] = head.eval()
    return heads
