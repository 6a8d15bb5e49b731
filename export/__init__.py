"""Export a training checkpoint (``python -m train``) to an lrsl-rt bundle (``lrsl_rt.manifest``).

Run from the checkout: ``python -m export CHECKPOINT_DIR OUT_BUNDLE_DIR [--precision int8|fp32|fp16]
[--preset static_avx512_vnni|avx512_vnni|avx2_s8rr|static_avx2_s8rr|avx2|arm64] [--max-accuracy-drop
POINTS] ...`` (default preset: this CPU's, ``export.optimize.DEFAULT_PRESETS``), or from Python::

    from export import build_bundle
    build_bundle("artifacts/banking77/ckpt", "artifacts/banking77/bundle", precision="int8")

Modules, in the order the export uses them:

- ``source``       read and check the checkpoint (embedder pooling, shared tokenizer, splits);
- ``onnx_export``  PyTorch -> ONNX fp32 (mean pooling + L2 normalisation inside the embedder graph);
- ``optimize``     transformer fusions, int8 presets (after optimum's), fp16 conversion;
- ``reference``    the PyTorch side: parity with ONNX fp32, PyTorch LRSL accuracy (lrsl.json calibration);
- ``evaluate``     parity, re-calibration, the accuracy gate (numpy only);
- ``bundle``       atomic staging directory, manifest writing;
- ``build``        ``build_bundle``: the steps in order, with progress and timings.

Importing ``export`` loads neither torch nor onnxruntime; they are imported when a step needs them.
"""

from __future__ import annotations

from .build import build_bundle
from .errors import AccuracyGateError, ExportError, ParityError
from .optimize import PRESETS, detect_preset

__all__ = ["PRESETS", "AccuracyGateError", "ExportError", "ParityError", "build_bundle", "detect_preset"]
