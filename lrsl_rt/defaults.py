"""Settings shared by the runtime, the export, training and the benchmarks, defined once.

A plain module with no imports, so the command lines can show these defaults in ``--help`` without
loading numpy or onnxruntime; it also says, once, how an extra is installed.
"""

from __future__ import annotations

# The gate's sureness measures (lrsl_rt.gate computes them); variance is the paper's.
MEASURES = ("variance", "margin", "max_prob", "entropy")
DEFAULT_MEASURE = "variance"

# The precisions a bundle's models can have: int8 for CPUs (with a preset, export.optimize.PRESETS),
# fp16 for GPUs.
PRECISIONS = ("fp32", "fp16", "int8")

# The two ONNX models of a bundle, in the order they run.
MODEL_ROLES = ("classifier", "embedder")
# What the Reranker's ``on_run`` hook names: the two models' ONNX Runtime runs, and the steps around
# them (tokenization in ``predict``/``predict_iter``, the rule's gate and fusion, the abstain score).
STAGES = ("tokenize", "classifier", "embedder", "rule", "abstain")

# Texts per model call. A call of many texts is sorted by token count and cut into batches of this
# size, so each batch is padded only to its own longest text; on CPU, small length-sorted batches
# beat one large padded batch, and an int8 model agrees more often with fp32 because dynamic
# quantization scales the activations of a whole batch. The export records the batch size it
# evaluated a bundle with, and the runtime reuses it. Figures: docs/results/.
DEFAULT_BATCH_SIZE = 8

# Texts the Reranker holds at a time when streaming (predict_iter) or stacking arrays.
DEFAULT_CHUNK_SIZE = 1024


def install_hint(extras: str) -> str:
    """The command that installs ``extras``: lrsl-rt is installed from its checkout (README, Install).

    >>> install_hint("serve")
    "pip install -e '.[serve]' in the lrsl-rt checkout"
    """
    return f"pip install -e '.[{extras}]' in the lrsl-rt checkout"
