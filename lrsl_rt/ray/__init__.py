"""Scale-out batch prediction on Ray Data (the optional extra ``ray``).

>>> import ray
>>> from lrsl_rt.ray import predict_dataset, read_inputs  # doctest: +SKIP
>>> ds = read_inputs(["tickets.csv"], column="text")  # doctest: +SKIP
>>> predict_dataset(ds, "artifacts/banking77/bundle", actors=4).write_parquet("out/")  # doctest: +SKIP

- :func:`read_inputs` (``_source``): CSV, JSON lines and Parquet files as a dataset of rows
  ``source, line, text, error``, read by lrsl-rt's own per-file reader, so a malformed row becomes a
  row with an ``error`` instead of a failed or silently shortened Ray read;
- :func:`predict_dataset` (``_predict``): adds the CLI record's prediction columns to every row of any
  dataset with a text column, on a pool of actors that each load the bundle once;
- :func:`run_job` (``job``): what ``lrsl-rt predict --engine ray`` runs: read, predict, write to a
  temporary directory, check rows in = rows out, rename into place.

Importing this package does not import Ray: the modules that need it are loaded on first use, and
:func:`require_ray` turns a missing Ray into an error that names the extra to install.
"""

from __future__ import annotations

from importlib import import_module

from ..errors import UsageError

INSTALL_HINT = "pip install 'lrsl-rt[ray]'"

_LAZY = {
    "predict_dataset": "_predict",
    "read_inputs": "_source",
    "expand_inputs": "_source",
    "run_job": "job",
}

__all__ = ["INSTALL_HINT", "expand_inputs", "predict_dataset", "read_inputs", "require_ray", "run_job"]


def require_ray() -> None:
    """Import Ray Data (and pyarrow) or raise a UsageError that says which extra to install."""
    try:
        import pyarrow  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise UsageError(
            f"--engine ray needs Ray Data and pyarrow ({e}); install them: {INSTALL_HINT}"
        ) from e


def __getattr__(name: str):
    if name in _LAZY:
        require_ray()
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
