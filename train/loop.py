"""The optimisation loop both models share: AdamW, linear warm-up then linear decay, clipping.

The classifier (:func:`train.classifier.train_classifier`) and the embedder
(:func:`train.embedder.train_embedder`) differ in their batches and their loss; everything else --
the optimiser, the learning-rate schedule, the step, the progress bar and the running loss -- is
:class:`Optimizer`.

Schedule worked example: 10 steps, warm-up ratio 0.2 -> 2 warm-up steps; the learning-rate factor of
steps 0..9 is 0.5, 1, 1, 7/8, 6/8, ..., 1/8 (``min((s + 1) / 2, (10 - s) / 8)``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm


def progress(iterable, **kw):
    """A tqdm bar: live on a terminal, one line every 30 s in a log file."""
    return tqdm(iterable, mininterval=0.5 if sys.stderr.isatty() else 30, leave=False, **kw)


def warmup_then_decay(total: int, warmup_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor of step s: linear warm-up over ``warmup_ratio * total`` steps, then linear
    decay to 0 at ``total``.

    >>> f = warmup_then_decay(10, 0.2)
    >>> [round(f(s), 3) for s in range(10)]
    [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    """
    warmup = max(1, int(warmup_ratio * total))
    return lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))


class Optimizer:
    """AdamW over ``params`` (parameters or parameter groups) with :func:`warmup_then_decay` over
    ``total`` steps; :meth:`epoch` runs the steps of one epoch."""

    def __init__(self, model, params, lr: float, total: int, warmup_ratio: float):
        self.model = model
        self.opt = torch.optim.AdamW(params, lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_then_decay(total, warmup_ratio))

    def epoch(self, batches: Iterable, loss_of: Callable, n_batches: int, desc: str) -> float:
        """One step per batch (``loss_of(batch)`` returns the loss tensor); the epoch's mean loss."""
        bar = progress(batches, total=n_batches, desc=desc)
        loss_sum = 0.0
        for step, batch in enumerate(bar, 1):
            loss = loss_of(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            bar.set_postfix(loss=f"{loss_sum / step:.4f}", refresh=False)
        return loss_sum / n_batches
