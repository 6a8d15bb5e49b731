"""Typed exceptions of lrsl-rt, each mapped to a CLI exit code.

The CLI prints ``Error: <message>`` on stderr and exits with ``exit_code``:
1 for a run that failed (bad bundle, bad input record, runtime failure), 2 for bad usage
(wrong flags, missing files named on the command line). Library users catch ``LrslError``.
"""

from __future__ import annotations


class LrslError(Exception):
    """Base class of every error lrsl-rt raises on purpose."""

    exit_code = 1


class UsageError(LrslError):
    """The caller asked for something that cannot work (bad flag, bad argument value)."""

    exit_code = 2


class BundleError(LrslError):
    """A bundle is missing, malformed, tampered with, or disagrees with itself."""


class InputError(LrslError):
    """An input record cannot be processed (names the file, line and field)."""


class RuntimeBackendError(LrslError):
    """ONNX Runtime failed or is not installed; the cause is chained."""


class OutputError(LrslError):
    """The output cannot be written (a closed or full stdout, an --output file that cannot be made)."""


class RecordStop(InputError):
    """A bad input record stopped ``predict`` (``--on-error stop``) after every record before it was
    written; an ``--output`` file is still renamed into place with those records."""
