"""The ONNX graph of a decoder-only classifier (Llama-, Qwen2-, Mistral-style): the last real token's logits.

``*ForSequenceClassification`` runs the decoder, applies its ``score`` head to every position and
then picks, per row, the rightmost position whose token is not the pad token. The graph here does
the same from the attention mask instead of the pad id -- the rightmost position whose mask is 1,
``argmax(position * mask)`` -- and applies the head to that position only: right and left padding
give the same row, and a text that happens to contain the pad token still reads its last token.
Inputs ``input_ids`` and ``attention_mask`` (int64, batch x sequence; no ``token_type_ids``), output
``logits`` float32 (batch, L). No key/value cache and no generation: one forward pass per batch.

The TorchScript exporter fails inside tracing on these models (transformers' mask and rotary
code), so the graph is exported with ``torch.onnx.export(..., dynamo=True)`` (torch.export, then
onnxscript), with symbolic ``batch`` and ``sequence`` dimensions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import ExportError

DECODER_INPUTS = ("input_ids", "attention_mask")
DYNAMO_OPSET = 18  # the lowest opset the dynamo exporter writes without a version conversion
# One ONNX file holds at most 2 GiB (protobuf's limit); the export writes each graph as one file.
MAX_GRAPH_BYTES = 2**31 - 2**24  # a margin for the graph's structure beside its weights


class DecoderClassifierGraph(nn.Module):
    """(input_ids, attention_mask) -> logits of the last real token of each row."""

    input_names = DECODER_INPUTS

    def __init__(self, model: nn.Module):
        super().__init__()
        for part in ("model", "score"):
            if not isinstance(getattr(model, part, None), nn.Module):
                raise ExportError(
                    f"{type(model).__name__}: expected a decoder ('{part}') and a score head, as "
                    "LlamaForSequenceClassification has"
                )
        self.model = model  # the HF classifier; the graph runs its decoder and its head

    def forward(self, input_ids, attention_mask):
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (positions * attention_mask).argmax(dim=-1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return self.model.score(hidden.last_hidden_state[rows, last])


def export_decoder_onnx(graph: DecoderClassifierGraph, batch: dict, path: Path, output_name: str) -> Path:
    """Export ``graph`` traced on ``batch`` (a padded int64 batch of at least two texts) with dynamo."""
    check_size(graph.model)
    args = tuple(torch.from_numpy(batch[n]) for n in graph.input_names)
    dims = {"batch": torch.export.Dim("batch"), "sequence": torch.export.Dim("sequence")}
    shapes = {n: {0: dims["batch"], 1: dims["sequence"]} for n in graph.input_names}
    graph.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on the HF code it specialises
        try:
            program = torch.onnx.export(
                graph,
                args,
                input_names=list(graph.input_names),
                output_names=[output_name],
                dynamic_shapes=shapes,
                opset_version=DYNAMO_OPSET,
                dynamo=True,
                optimize=True,  # folds the weight transposes: linear layers become MatMul(x, W^T const)
                verbose=False,
            )
        except Exception as e:  # torch.export raises many kinds; one message names the model
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"{type(graph.model).__name__}: the ONNX export failed: {first}") from e
    program.save(str(path))
    return path


def check_size(model: nn.Module) -> None:
    """Refuse a model whose weights do not fit one ONNX file, before minutes of export."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size > MAX_GRAPH_BYTES:
        raise ExportError(
            f"{type(model).__name__}: {size / 2**30:.2f} GiB of weights do not fit one ONNX file (at most 2 GiB; "
            f"about 0.5B parameters in fp32); the export does not write ONNX external data yet"
        )
