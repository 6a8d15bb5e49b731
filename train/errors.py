"""Typed errors of ``python -m train``, all :class:`lrsl_rt.errors.LrslError` subclasses, so the
command line prints them as ``Error: <message>`` with their exit code (:func:`lrsl_rt.command.run_command`)."""

from __future__ import annotations

from lrsl_rt.errors import InputError, LrslError


class DataError(InputError):
    """Bad training input (a file, a flag value, a calibration that cannot work); the message names
    the file, line and field where there is one."""


class CheckpointError(LrslError):
    """A checkpoint directory is missing, of another format, or malformed."""


class ModelError(LrslError):
    """A base model is not installed or cannot be loaded."""
