"""Numbered progress lines for long procedures (training, export): ``[3/9] title ...`` then the time.

>>> step = Steps(print, total=2)
>>> with step("read", "read the checkpoint"):
...     pass  # doctest: +ELLIPSIS
[1/2] read the checkpoint ...
      done in 0.0 s
>>> list(step.timings)
['read']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Steps:
    """Numbered progress lines with the time each step took (``timings``: seconds by step key)."""

    def __init__(self, log: Callable[[str], None], total: int):
        self.log, self.total, self.n, self.timings = log, total, 0, {}

    @contextmanager
    def __call__(self, key: str, title: str) -> Iterator[None]:
        self.n += 1
        self.log(f"[{self.n}/{self.total}] {title} ...")
        t0 = time.perf_counter()
        yield
        self.timings[key] = round(time.perf_counter() - t0, 3)
        self.log(f"      done in {self.timings[key]:.1f} s")
