"""lrsl-rt: the torch-free runtime of LRSL (logits reranking via semantic labels for hard samples).

With the Banking77 bundle of ``make bundle`` (the last two lines need it, so doctests skip them):

>>> from lrsl_rt import Reranker
>>> r = Reranker.from_bundle("artifacts/banking77/bundle")  # doctest: +SKIP
>>> r.predict(["my card has not arrived yet"])[0].label  # doctest: +SKIP
'card_arrival'

``Reranker``, ``Prediction``, ``Fusion`` and ``decide`` (the LRSL rule, :mod:`lrsl_rt.rule`) are
imported on first use (PEP 562), so ``import lrsl_rt`` and ``lrsl-rt --help`` load neither numpy
nor onnxruntime. Importing has no side effects.
"""

from __future__ import annotations

from importlib import import_module

from . import errors
from .errors import BundleError, InputError, LrslError, OutputError, RuntimeBackendError, UsageError

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("lrsl-rt")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.1.0"

_LAZY = {
    "Reranker": "reranker",
    "Prediction": "prediction",
    "Explanation": "prediction",
    "Fusion": "fusion",
    "Decision": "rule",
    "decide": "rule",
}

__all__ = [
    "BundleError",
    "Decision",
    "Explanation",
    "Fusion",
    "InputError",
    "LrslError",
    "OutputError",
    "Prediction",
    "Reranker",
    "RuntimeBackendError",
    "UsageError",
    "__version__",
    "decide",
    "errors",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
