"""``make gpu-check`` where there is no CUDA device: it says so in one line, installs nothing, exits 1.

The GPU path itself (an environment with onnxruntime-gpu, fp16 bundles, CUDA-vs-CPU parity and
timings) runs only as ``make gpu-check`` on a machine with a CUDA device; a test never installs
onnxruntime-gpu.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ROOT

from benchmarks import gpu_check


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="a CUDA machine: make gpu-check would install"
)
def test_make_gpu_check_without_cuda_says_so_and_installs_nothing(tmp_path):
    venv = tmp_path / "gpu-venv"
    env = {**os.environ, "VENV": str(ROOT / ".venv")}
    p = subprocess.run(
        ["make", "-s", "gpu-check", f"GPU_VENV={venv}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0
    assert "no CUDA device here (nvidia-smi lists none); nothing installed" in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "no CUDA provider is available: onnxruntime" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not venv.exists()


def test_the_check_stops_before_building_anything(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    code = gpu_check.main(["--out", str(out), "--work", str(tmp_path / "work")])
    assert code == 1
    assert "no CUDA provider is available" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "work").exists()
