"""Early exits: the classifier as a chain of stage graphs, and only the unsure rows go on.

ONNX Runtime cannot stop a row inside a graph (``If`` decides for a whole batch), so a bundle with
exits ships the classifier cut into stages (manifest roles ``classifier_stage_1..N``,
:attr:`lrsl_rt.manifest.Manifest.stage_roles`):

- stage 1: the token inputs -> ``logits`` of the exit head after layer ``exits[0].layer`` and
  ``hidden_out``, the hidden states (batch, sequence, hidden) after that layer;
- stage i (1 < i < N): ``hidden_states`` and ``attention_mask`` -> the next exit's ``logits`` and
  ``hidden_out``;
- stage N: ``hidden_states`` and ``attention_mask`` -> the final head's ``logits``.

:meth:`StageChain.run` runs stage 1 on every row in length-sorted batches; a row leaves after a
stage when it is *not unsure* there (its sureness, :func:`lrsl_rt.gate.sureness` with the bundle's
measure, is above that exit's threshold: the gate's comparison, :func:`lrsl_rt.gate.is_unsure`).
The rows that stay are batched again, still in length order, for the next stage, their hidden
states cut to their own length and padded with zeros (the attention mask hides the padding, so an
fp32 chain that lets nobody leave gives the single graph's logits). Leaving rows change the batches
of later stages: with dynamic int8 a row's logits can then move slightly; the static presets keep
them batch-invariant (docs/guide/exits.md).

Worked example (measure max_prob, one exit after layer 2 with threshold 0.9, depth 4): a row whose
exit head gives probabilities [0.95, 0.03, 0.02] leaves with exit_layer 2 (0.95 > 0.9); a row at
[0.9, 0.05, 0.05] is unsure there (0.9 <= 0.9) and goes on, exit_layer 4.
"""

from __future__ import annotations

import time

import numpy as np

from .batches import length_batches
from .errors import BundleError
from .gate import is_unsure, sureness
from .manifest import ExitPoint
from .session import OnnxSession
from .tokenize import Tokens

LOGITS, HIDDEN_OUT, HIDDEN_IN, MASK = "logits", "hidden_out", "hidden_states", "attention_mask"


class StageChain:
    """The stage sessions of one classifier, run in order; holds no thresholds (the manifest does).

    ``pad``: the tokenizer's ``pad`` (token rows -> stage 1's input arrays). ``depth``: the
    classifier's encoder layers, the ``exit_layer`` of a row that went through every stage.
    """

    def __init__(self, stages: list[OnnxSession], pad, depth: int) -> None:
        self.stages, self.pad, self.depth = list(stages), pad, depth

    @property
    def path(self):
        return self.stages[0].path

    def run(
        self,
        rows: list[Tokens],
        batch_size: int,
        exits: tuple[ExitPoint, ...],
        measure: str,
        k: int,
        collect: list | None = None,
        on_run=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(logits (n, L) float32, exit_layer (n,) int64) in input order.

        ``on_run``: the Reranker's timing hook, called as ``on_run("classifier", seconds)`` after
        each stage run.
        ``collect``: a list that receives one (n, L) array per stage, the logits of the rows that
        reached it (NaN elsewhere) -- calibration runs with every threshold at +inf to get them all.
        """
        if len(exits) != len(self.stages) - 1:
            raise BundleError(
                f"{len(self.stages)} stage graphs need {len(self.stages) - 1} exits, got {len(exits)}"
            )
        n = len(rows)
        logits: np.ndarray | None = None
        exit_layer = np.full(n, self.depth, dtype=np.int64)
        alive = sorted(range(n), key=lambda i: len(rows[i]))  # stable: ties keep input order
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        hidden: dict[int, np.ndarray] = {}
        for s, session in enumerate(self.stages):
            last = s == len(self.stages) - 1
            stayed, stage_logits = [], None
            for start, end in length_batches([int(lengths[i]) for i in alive], batch_size):
                idx = alive[start:end]
                feeds = self.pad([rows[i] for i in idx]) if s == 0 else _pad_hidden(hidden, idx, lengths)
                t0 = time.perf_counter()
                out = session.run_outputs(feeds, (LOGITS,) if last else (LOGITS, HIDDEN_OUT))
                if on_run is not None:
                    on_run("classifier", time.perf_counter() - t0)
                y = np.asarray(out[0], dtype=np.float32)
                if logits is None:
                    logits = np.empty((n, y.shape[1]), dtype=np.float32)
                if stage_logits is None and collect is not None:
                    stage_logits = np.full((n, y.shape[1]), np.nan, dtype=np.float32)
                logits[idx] = y
                if stage_logits is not None:
                    stage_logits[idx] = y
                if last:
                    continue
                e = exits[s]
                leave = ~is_unsure(sureness(y, measure, k), e.threshold)
                for j, i in enumerate(idx):
                    if leave[j]:
                        exit_layer[i] = e.layer
                        hidden.pop(i, None)
                    else:
                        hidden[i] = out[1][j, : lengths[i]]
                        stayed.append(i)
            if collect is not None:
                collect.append(stage_logits if stage_logits is not None else np.zeros((n, 0), np.float32))
            alive = stayed
            if not alive:
                break
        if logits is None:
            logits = np.zeros((0, 0), dtype=np.float32)
        return logits, exit_layer

    def full_logits(self, rows: list[Tokens], batch_size: int, k: int) -> np.ndarray:
        """The final head's logits of every row (no row leaves early), float32 (n, L)."""
        never = tuple(ExitPoint(0, float("inf")) for _ in self.stages[1:])
        return self.run(rows, batch_size, never, "max_prob", k)[0]


def _pad_hidden(hidden: dict[int, np.ndarray], idx: list[int], lengths: np.ndarray) -> dict[str, np.ndarray]:
    """A later stage's inputs: the rows' hidden states padded right with zeros, and their mask."""
    width = int(lengths[idx].max())
    dim = hidden[idx[0]].shape[1]
    h = np.zeros((len(idx), width, dim), dtype=np.float32)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    for j, i in enumerate(idx):
        h[j, : lengths[i]] = hidden[i]
        mask[j, : lengths[i]] = 1
    return {HIDDEN_IN: h, MASK: mask}
