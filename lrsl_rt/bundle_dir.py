"""Which bundle directory a command uses, and the one error when it is not there.

``lrsl-rt predict``, ``eval``, ``info`` and ``serve`` (and ``predict --engine ray``) take the bundle
from ``--bundle DIR``, else from ``$LRSL_RT_BUNDLE``, else ``artifacts/banking77/bundle`` (where
``make demo`` puts it). This module sits below :mod:`lrsl_rt.cli`, :mod:`lrsl_rt.serve` and
:mod:`lrsl_rt.ray`, so they all ask it and none imports another for it. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

DEFAULT_BUNDLE = "artifacts/banking77/bundle"
BUNDLE_ENV = "LRSL_RT_BUNDLE"


def resolve_bundle(arg: str | None) -> tuple[Path, str]:
    """The bundle directory and where its name came from (for the error message).

    >>> resolve_bundle("b")
    (PosixPath('b'), '--bundle')
    """
    if arg:
        return Path(arg), "--bundle"
    if os.environ.get(BUNDLE_ENV):
        return Path(os.environ[BUNDLE_ENV]), f"${BUNDLE_ENV}"
    return Path(DEFAULT_BUNDLE), "the default"


def require_bundle(arg: str | None) -> Path:
    """The bundle directory of :func:`resolve_bundle`; a ``UsageError`` (exit 2) when it is not a directory.

    >>> require_bundle("nowhere")
    Traceback (most recent call last):
    ...
    lrsl_rt.errors.UsageError: bundle directory nowhere (--bundle) not found; pass --bundle DIR or set LRSL_RT_BUNDLE
    """
    path, how = resolve_bundle(arg)
    if not path.is_dir():
        raise UsageError(f"bundle directory {path} ({how}) not found; pass --bundle DIR or set {BUNDLE_ENV}")
    return path
