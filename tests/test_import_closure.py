"""What importing lrsl_rt pulls in, checked in fresh interpreters (click's tests/test_imports.py idea).

The runtime must never import the training stack, and a bare ``import lrsl_rt`` (and ``lrsl-rt
--help``) must not even load onnxruntime. A missing onnxruntime is simulated by a meta-path finder
that refuses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

FORBIDDEN = ("torch", "transformers", "onnx", "sklearn", "sentence_transformers", "optimum")
SERVER_STACK = ("starlette", "uvicorn", "httptools", "prometheus_client", "httpx")
OPTIONAL = ("ray", "pyarrow", "pandas")  # the ray extra: only lrsl_rt.ray's modules import them
MODULES = (
    "cli",
    "errors",
    "fusion",
    "gate",
    "info",
    "io",
    "manifest",
    "accuracy",
    "prediction",
    "report",
    "reranker",
    "session",
    "tokenize",
    "tuning",
    "bundle",
    "output",
    "signals",
    "serve",
    "serve.settings",
    "serve.schema",
    "serve.batcher",
    "serve.metrics",
    "serve.state",
    "serve.app",
    "serve.supervisor",
    "serve.main",
    "ray",
)

BLOCK_ORT = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime' (blocked by the test)")
sys.meta_path.insert(0, _Block())
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


def loaded_after(code: str) -> set[str]:
    proc = run_python(code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")
    assert proc.returncode == 0, proc.stderr
    return {m.split(".")[0] for m in json.loads(proc.stdout.strip().splitlines()[-1])}


def test_bare_import_is_light():
    loaded = loaded_after("import lrsl_rt")
    assert not loaded & {
        *FORBIDDEN,
        *SERVER_STACK,
        *OPTIONAL,
        "onnxruntime",
        "numpy",
        "tokenizers",
        "matplotlib",
    }


def test_full_runtime_never_imports_training_stack():
    imports = "\n".join(f"import lrsl_rt.{m}" for m in MODULES)
    loaded = loaded_after(f"{imports}\nfrom lrsl_rt import Reranker, Prediction, Fusion, __version__")
    assert not loaded & {*FORBIDDEN, *OPTIONAL}, sorted(loaded & {*FORBIDDEN, *OPTIONAL})
    assert "onnxruntime" not in loaded and "matplotlib" not in loaded
    assert not loaded & set(SERVER_STACK), sorted(loaded & set(SERVER_STACK))  # only a server loads them
    assert "numpy" in loaded  # the modules did load


def test_cli_help_is_light():
    for command in ("predict", "serve"):
        loaded = loaded_after(f"from lrsl_rt.cli import main\nassert main(['{command}', '--help']) == 0")
        assert not loaded & {*FORBIDDEN, *SERVER_STACK, *OPTIONAL, "onnxruntime", "numpy", "tokenizers"}


def test_public_api():
    import lrsl_rt

    assert isinstance(lrsl_rt.__version__, str) and lrsl_rt.__version__
    assert lrsl_rt.Reranker.__name__ == "Reranker"
    assert lrsl_rt.Prediction.__name__ == "Prediction"
    assert lrsl_rt.Fusion().to_dict() == {"rule": "logits_cos", "p": 2, "scope": "all"}
    assert issubclass(lrsl_rt.errors.BundleError, lrsl_rt.LrslError)


def test_every_public_name_resolves():
    """``__all__`` and ``dir()`` list only names that really resolve (lazy ones import on access);
    run in a fresh interpreter so that no earlier import has filled the module's namespace."""
    proc = run_python(
        """
import lrsl_rt
for name in lrsl_rt.__all__:
    assert getattr(lrsl_rt, name) is not None, name
for name in dir(lrsl_rt):
    getattr(lrsl_rt, name)  # AttributeError for a name dir() lists but the module lacks
missing = [n for n in ("Reranker", "Prediction", "Fusion", "OutputError") if n not in lrsl_rt.__all__]
assert not missing, missing
try:
    lrsl_rt.NoSuchName
except AttributeError as e:
    print("REFUSED", e)
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert "REFUSED module 'lrsl_rt' has no attribute 'NoSuchName'" in proc.stdout


def test_missing_onnxruntime_names_the_extra():
    proc = run_python(
        BLOCK_ORT
        + """
from lrsl_rt.errors import RuntimeBackendError
from lrsl_rt.session import OnnxSession
try:
    OnnxSession("model.onnx")
except RuntimeBackendError as e:
    assert isinstance(e.__cause__, ImportError)
    print("MESSAGE", e)
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install -e '.[cpu]' in the lrsl-rt checkout" in proc.stdout and "gpu extra" in proc.stdout


def test_info_works_without_onnxruntime():
    proc = run_python(BLOCK_ORT + "from lrsl_rt.cli import main\nraise SystemExit(main(['info', '--json']))")
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)["environment"]
    assert env["providers"] is None and "pip install -e '.[cpu]'" in env["onnxruntime"]


def test_ray_modules_import_ray_but_not_the_training_stack():
    pytest.importorskip("ray.data", reason="the ray extra is not installed")
    loaded = loaded_after("import lrsl_rt.ray.job\nfrom lrsl_rt.ray import predict_dataset, read_inputs")
    assert "ray" in loaded and "pyarrow" in loaded
    assert not loaded & {*FORBIDDEN, "onnxruntime"}, sorted(loaded & {*FORBIDDEN, "onnxruntime"})
