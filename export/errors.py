"""Typed errors of ``python -m export``; the CLI prints ``Error: <message>`` and exits with ``exit_code``.

They extend :class:`lrsl_rt.errors.LrslError`, so one ``except LrslError`` catches runtime and export
failures alike. Bad usage (a flag combination that cannot work) raises ``lrsl_rt.errors.UsageError``.
"""

from __future__ import annotations

from lrsl_rt.errors import LrslError


class ExportError(LrslError):
    """The export cannot go on: a malformed checkpoint, an unsupported model, an existing target..."""


class ParityError(ExportError):
    """The ONNX fp32 graph does not reproduce the PyTorch model within the stated tolerance."""


class AccuracyGateError(ExportError):
    """The bundle's LRSL accuracy dropped more than allowed below the PyTorch models'; nothing was written."""
