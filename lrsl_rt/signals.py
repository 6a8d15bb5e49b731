"""SIGTERM handled like Ctrl-C: the command stops at once, cleans up, and exits with 128 + signal.

Python turns SIGINT into ``KeyboardInterrupt``; :func:`sigterm_as_interrupt` makes SIGTERM (what
``kill``, ``timeout``, systemd and container runtimes send) raise :class:`Terminated`, a
``KeyboardInterrupt`` subclass, so the same ``finally`` blocks and context managers run: the
temporary ``--output`` file is removed and an earlier output file stays. The previous handler is
restored when the block ends, so calling the CLI in-process leaves the caller's handlers alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (only in the main thread, where signal
    handlers can be set; elsewhere the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe_interrupt(e: KeyboardInterrupt) -> tuple[str, int]:
    """The one-line message and exit code (128 + signal number) for an interrupt.

    >>> describe_interrupt(Terminated(signal.SIGTERM))
    ('terminated (SIGTERM)', 143)
    >>> describe_interrupt(KeyboardInterrupt())
    ('interrupted', 130)
    """
    signum = getattr(e, "signum", signal.SIGINT)
    if signum == signal.SIGINT:
        return "interrupted", 128 + signal.SIGINT
    return f"terminated ({signal.Signals(signum).name})", 128 + signum
