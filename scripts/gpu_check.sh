#!/usr/bin/env bash
# `make gpu-check`: the GPU check (benchmarks/gpu_check.py) in an environment of its own.
#
# onnxruntime and onnxruntime-gpu install the same module, and the shared .venv holds the CPU build of
# torch and onnxruntime; so the check gets its own virtual environment ($GPU_VENV, default .venv-gpu)
# with onnxruntime-gpu, torch from PyPI (a CUDA build on Linux) and this checkout's train extra,
# created on the first run and reused after (a stamp records what it was made from).
# Without a CUDA device (nvidia-smi lists none) nothing is installed: the check runs in the shared
# environment, which says that no CUDA provider is available, and the exit status is 1.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_VENV=${GPU_VENV:-.venv-gpu}
SHARED_VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
  echo "gpu-check: no CUDA device here (nvidia-smi lists none); nothing installed" >&2
  exec "$SHARED_VENV/bin/python" -m benchmarks.gpu_check "$@"
fi

stamp="$GPU_VENV/.lrsl-rt-gpu-installed"
want="$(cat pyproject.toml scripts/gpu_check.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x "$GPU_VENV/bin/python" ] || "$PY" -m venv "$GPU_VENV"
  echo "gpu-check: installing onnxruntime-gpu, torch (CUDA) and lrsl-rt[gpu,train] into $GPU_VENV" >&2
  "$GPU_VENV/bin/python" -m pip --disable-pip-version-check -q install -e ".[gpu,train]"
  echo "$want" > "$stamp"
fi
exec "$GPU_VENV/bin/python" -m benchmarks.gpu_check "$@"
