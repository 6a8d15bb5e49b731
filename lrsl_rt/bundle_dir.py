"""Which bundle directory a command uses, and the one error when there is none.

``lrsl-rt predict``, ``eval``, ``info`` and ``serve`` (and ``predict --engine ray``) take the bundle
from ``--bundle DIR``, else from ``$LRSL_RT_BUNDLE``, else the first of :data:`DEFAULT_BUNDLES` that
is a directory under the current one: ``artifacts/banking77/bundle`` (``make bundle``, full quality),
then ``artifacts/banking77-quick/bundle`` (``make demo`` without a full bundle). So after ``make
demo`` the README's commands find the demo's bundle, and a later ``make bundle`` takes over. This
module sits below :mod:`lrsl_rt.cli`, :mod:`lrsl_rt.serve` and :mod:`lrsl_rt.ray`, so they all ask it
and none imports another for it. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

BUNDLE_ENV = "LRSL_RT_BUNDLE"
# Looked for in this order, relative to the current directory, with the make target that builds each.
DEFAULT_BUNDLES = {
    "artifacts/banking77/bundle": "make bundle",
    "artifacts/banking77-quick/bundle": "make demo",
}
# Where a command looks when --bundle is not given, in order (its help says so).
FALLBACKS = f"${BUNDLE_ENV}, else " + ", else ".join(DEFAULT_BUNDLES)


def resolve_bundle(arg: str | None) -> tuple[Path | None, str]:
    """The bundle directory and where its name came from; ``(None, "the default")`` when neither the
    flag nor the environment names one and no default directory exists.

    >>> resolve_bundle("b")
    (PosixPath('b'), '--bundle')
    """
    if arg:
        return Path(arg), "--bundle"
    if os.environ.get(BUNDLE_ENV):
        return Path(os.environ[BUNDLE_ENV]), f"${BUNDLE_ENV}"
    for default in DEFAULT_BUNDLES:
        if Path(default).is_dir():
            return Path(default), "the default"
    return None, "the default"


def no_bundle_message() -> str:
    """What to say when no bundle is named and no default exists: the order looked in, and the fix.

    >>> print(no_bundle_message().replace(os.getcwd(), "/here"))  # doctest: +NORMALIZE_WHITESPACE
    no bundle: --bundle and $LRSL_RT_BUNDLE are not given, and neither artifacts/banking77/bundle
    (make bundle) nor artifacts/banking77-quick/bundle (make demo) is a directory under /here;
    pass --bundle DIR or set LRSL_RT_BUNDLE
    """
    defaults = " nor ".join(f"{path} ({target})" for path, target in DEFAULT_BUNDLES.items())
    return (
        f"no bundle: --bundle and ${BUNDLE_ENV} are not given, and neither {defaults} is a directory "
        f"under {Path.cwd()}; pass --bundle DIR or set {BUNDLE_ENV}"
    )


def require_bundle(arg: str | None) -> Path:
    """The bundle directory of :func:`resolve_bundle`; a ``UsageError`` (exit 2) when there is none.

    >>> require_bundle("nowhere")
    Traceback (most recent call last):
    ...
    lrsl_rt.errors.UsageError: bundle directory nowhere (--bundle) not found; pass --bundle DIR or set LRSL_RT_BUNDLE
    """
    path, how = resolve_bundle(arg)
    if path is None:
        raise UsageError(no_bundle_message())
    if not path.is_dir():
        raise UsageError(f"bundle directory {path} ({how}) not found; pass --bundle DIR or set {BUNDLE_ENV}")
    return path
