"""The classifier as a chain of stage graphs, for a checkpoint with exit heads (:mod:`lrsl_rt.exits`).

With exits after layers ``l_1 < ... < l_m`` of a classifier of depth ``D`` there are ``m + 1``
stages: stage 1 is the embeddings, layers ``1..l_1`` and the first exit head; stage i runs layers
``l_{i-1}+1..l_i`` and the i-th head; the last stage runs the remaining layers and the classifier's
own head. Each stage is traced from the very modules of the PyTorch classifier
(:mod:`train.exit_heads`), so the chain with no exit taken computes the classifier's logits.
Stage 1 takes the token inputs; the others ``hidden_states`` (float32, batch x sequence x hidden)
and ``attention_mask``. Non-final stages also output ``hidden_out``. Each stage is then optimised
and converted like the single graph (:mod:`export.optimize`); a static preset calibrates a later
stage on the hidden states the fp32 stages before it give for the calibration texts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrsl_rt.exits import HIDDEN_IN, HIDDEN_OUT, LOGITS, MASK
from lrsl_rt.manifest import STAGE_ROLE
from lrsl_rt.session import OnnxSession
from train.exit_heads import embed, final_head, run_layers

from . import onnx_export as ox


class Stage(nn.Module):
    """Layers ``start..stop-1`` of ``model`` and then ``head`` (None: the classifier's own head)."""

    def __init__(self, model, start: int, stop: int, head: nn.Module | None, input_names: tuple[str, ...]):
        super().__init__()
        self.model, self.start, self.stop, self.head = model, start, stop, head
        self.input_names = input_names if start == 0 else (HIDDEN_IN, MASK)

    def forward(self, *args):
        named = dict(zip(self.input_names, args, strict=True))
        mask = named[MASK]
        if self.start == 0:
            hidden = embed(self.model, named["input_ids"], mask, named.get("token_type_ids"))
        else:
            hidden = named[HIDDEN_IN]
        hidden = run_layers(self.model, hidden, mask, self.start, self.stop)
        if self.head is None:
            return final_head(self.model, hidden)
        return self.head(hidden), hidden

    @property
    def output_names(self) -> tuple[str, ...]:
        return (LOGITS,) if self.head is None else (LOGITS, HIDDEN_OUT)


def make_stages(classifier_graph, heads: dict, depth: int) -> list[Stage]:
    """The stages of ``classifier_graph`` (an :class:`export.onnx_export.ClassifierGraph`)."""
    model, names = classifier_graph.model, classifier_graph.input_names
    bounds = [0, *sorted(heads), depth]
    return [
        Stage(model, a, b, heads.get(b) if b != depth else None, names).eval()
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]


def stage_roles(n: int) -> list[str]:
    return [STAGE_ROLE.format(i + 1) for i in range(n)]


def export_stages(stages: list[Stage], tok, work: Path, max_length: int) -> dict[str, Path]:
    """{role: raw fp32 ONNX path} of every stage, traced on the export's padded two-text batch."""
    batch = ox.encode(tok, list(ox.TRACE_TEXTS), stages[0].input_names, max_length)
    args = tuple(torch.from_numpy(batch[n]) for n in stages[0].input_names)
    raw = {}
    for role, stage in zip(stage_roles(len(stages)), stages, strict=True):
        path = raw[role] = work / f"{role}_raw.onnx"
        _export(stage, args, path)
        if stage.head is not None:
            with torch.no_grad():
                args = (stage(*args)[1], torch.from_numpy(batch[MASK]))
    return raw


def _export(stage: Stage, args: tuple, path: Path) -> None:
    axes = {n: {0: "batch", 1: "sequence"} for n in stage.input_names}
    axes[LOGITS] = {0: "batch"}
    if stage.head is not None:
        axes[HIDDEN_OUT] = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            stage,
            args,
            str(path),
            input_names=list(stage.input_names),
            output_names=list(stage.output_names),
            dynamic_axes=axes,
            opset_version=ox.OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def stage_feeds(fp32: dict[str, Path], feeds: list[dict] | None) -> dict[str, list[dict] | None]:
    """Calibration feeds of each stage (one text each): the token feeds for stage 1, then the
    hidden states and mask the fp32 stages before give for the same texts."""
    roles = list(fp32)
    out: dict[str, list[dict] | None] = {role: None for role in roles}
    if not feeds:
        return out
    out[roles[0]] = feeds
    current = feeds
    for prev, role in zip(roles, roles[1:], strict=False):
        session = OnnxSession(fp32[prev], threads=1, output=LOGITS)
        nxt = []
        for f in current:
            hidden = session.run_outputs(f, (LOGITS, HIDDEN_OUT))[1]
            nxt.append({HIDDEN_IN: np.asarray(hidden, np.float32), MASK: f[MASK]})
        out[role] = current = nxt
    return out
