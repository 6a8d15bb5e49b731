"""PyTorch -> ONNX for the two models of a checkpoint, and their PyTorch reference outputs.

Both graphs take the same inputs, ``input_ids``, ``attention_mask`` and -- when the model's forward
accepts it and the tokenizer produces it -- ``token_type_ids`` (int64, axes ``batch`` x ``sequence``):

- classifier: -> ``logits`` float32 (batch, L); with ``features`` (for the ``mahalanobis`` abstain
  score) also -> ``features`` float32 (batch, h), the final layer's hidden state at the first
  token (the [CLS] position the classification head reads);
- embedder:   -> ``embeddings`` float32 (batch, d), mean pooling over the attention mask and L2
  normalisation inside the graph, so every row has unit length.

Export uses the TorchScript exporter (``dynamo=False``), models loaded with eager attention, traced on
a padded batch of two texts of different lengths so the attention-mask path is part of the graph.
A decoder-only classifier is the exception: its graph gathers the last real token and is exported
with the dynamo exporter (:mod:`export.decoder_graph`).
Shortcut: the wrappers are re-used as the PyTorch reference (:func:`torch_outputs`), so "PyTorch vs
ONNX" compares the very module that was traced, with the same encodings.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .decoder_graph import DecoderClassifierGraph, export_decoder_onnx
from .errors import ExportError

OPSET = 17
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
TRACE_TEXTS = ("a longer text to trace the export, with a few more words than the other one", "short")


class _Graph(nn.Module):
    """Positional inputs (the order of ``input_names``) -> one tensor; what torch.onnx.export traces."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def _hf(self, args):
        return self.model(**dict(zip(self.input_names, args, strict=True)))


class ClassifierGraph(_Graph):
    def forward(self, *args):
        return self._hf(args).logits


class ClassifierFeaturesGraph(_Graph):
    """The classifier with a second output: the last layer's hidden state at the first token."""

    def forward(self, *args):
        out = self.model(**dict(zip(self.input_names, args, strict=True)), output_hidden_states=True)
        return out.logits, out.hidden_states[-1][:, 0]


class EmbedderGraph(_Graph):
    """Transformer -> mean pooling over the attention mask -> L2 normalisation (as SentenceTransformers)."""

    def forward(self, *args):
        hidden = self._hf(args).last_hidden_state
        mask = args[self.input_names.index("attention_mask")].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(mean, p=2, dim=1)


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not tok.is_fast:
        raise ExportError(
            f"{model_dir}: the tokenizer is not a fast tokenizer; the runtime needs tokenizer.json"
        )
    if tok.pad_token_id is None:
        raise ExportError(f"{model_dir}: the tokenizer has no pad token; batches cannot be padded")
    return tok


def load_classifier(model_dir: Path, labels: list[str], tokenizer, kind: str = "encoder") -> ClassifierGraph:
    """The classifier, after checking its output columns are the labels of lrsl.json, in that order;
    ``kind`` "decoder": the last-token graph of a decoder-only classifier (:mod:`export.decoder_graph`)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager")
    if model.config.num_labels != len(labels):
        raise ExportError(
            f"{model_dir}: the classifier has {model.config.num_labels} outputs but lrsl.json has {len(labels)} labels"
        )
    named = [model.config.id2label.get(i) for i in range(len(labels))]
    if set(named) == set(labels) and named != list(labels):  # named columns, in another order
        raise ExportError(
            f"{model_dir}: config.json id2label orders the labels {named[:5]}..., lrsl.json {list(labels)[:5]}...; "
            "label ids must be positions in lrsl.json's labels"
        )
    if kind == "decoder":
        return DecoderClassifierGraph(model).eval()
    return ClassifierGraph(model, input_names(model, tokenizer)).eval()


def load_embedder(model_dir: Path, tokenizer) -> EmbedderGraph:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    return EmbedderGraph(model, input_names(model, tokenizer)).eval()


def input_names(model: nn.Module, tokenizer) -> tuple[str, ...]:
    """Inputs the graph takes: those of INPUT_ORDER the tokenizer produces and the model accepts."""
    accepted = inspect.signature(model.forward).parameters
    names = tuple(n for n in INPUT_ORDER if n in tokenizer.model_input_names and n in accepted)
    if names[:2] != INPUT_ORDER[:2]:
        raise ExportError(
            f"{type(model).__name__}: needs inputs input_ids and attention_mask, tokenizer gives "
            f"{tokenizer.model_input_names}"
        )
    return names


def encode(tokenizer, texts: list[str], names: tuple[str, ...], max_length: int) -> dict[str, np.ndarray]:
    """Padded int64 batch, truncated to ``max_length`` tokens, as the runtime encodes it."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {n: enc[n].astype(np.int64) for n in names}


def export_onnx(
    graph: _Graph,
    tokenizer,
    path: Path,
    output_name: str | tuple[str, ...],
    max_length: int,
    opset: int = OPSET,
) -> Path:
    """Trace ``graph`` on a padded two-text batch and write an ONNX file with dynamic batch/sequence axes;
    ``output_name``: the name of its output, or of each of its outputs."""
    output_names = [output_name] if isinstance(output_name, str) else list(output_name)
    batch = encode(tokenizer, list(TRACE_TEXTS), graph.input_names, max_length)
    if batch["attention_mask"].all():
        raise ExportError("the trace batch has no padding; the attention-mask path would not be exported")
    if isinstance(graph, DecoderClassifierGraph):
        return export_decoder_onnx(graph, batch, path, output_name)
    args = tuple(torch.from_numpy(batch[n]) for n in graph.input_names)
    axes = {n: {0: "batch", 1: "sequence"} for n in graph.input_names}
    axes.update({name: {0: "batch"} for name in output_names})
    graph.eval()  # torch.onnx.export restores the module's mode afterwards: it must be eval already
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            graph,
            args,
            str(path),
            input_names=list(graph.input_names),
            output_names=output_names,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def torch_outputs(
    graph: _Graph, tokenizer, texts: list[str], max_length: int, batch_size: int
) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Outputs of ``graph`` on ``texts`` (float32, in order) and the encoded batches fed to it."""
    outs, batches = [], []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = encode(tokenizer, texts[i : i + batch_size], graph.input_names, max_length)
            outs.append(graph(*(torch.from_numpy(batch[n]) for n in graph.input_names)).float().numpy())
            batches.append(batch)
    return np.concatenate(outs), batches


def run_batches(run: Callable[[dict[str, np.ndarray]], np.ndarray], batches: list[dict]) -> np.ndarray:
    return np.concatenate([run(b) for b in batches])
