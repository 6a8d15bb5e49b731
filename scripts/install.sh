#!/usr/bin/env bash
# Installs everything lrsl-rt needs into a virtual environment (default .venv), idempotently:
#   1. the venv itself, 2. the CPU build of torch pinned to 2.13.0 (an unpinned torch would pull a
#   multi-GB CUDA build), 3. the project in editable mode with its cpu, train, bench, serve, ray and dev extras.
# Re-running is cheap: a stamp records the hash of pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-cpu,train,bench,serve,ray,dev}

stamp="$VENV/.lrsl-rt-installed"
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import lrsl_rt, torch" 2>/dev/null; then
  echo "install: $VENV is up to date"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "install: creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "install: $TORCH_SPEC (CPU build)"
  pip install "$TORCH_SPEC"
fi
echo "install: lrsl-rt[$EXTRAS] (editable)"
pip install -e ".[$EXTRAS]"
echo "$want" > "$stamp"
echo "install: done ($("$VENV/bin/python" -c 'import torch, onnxruntime; print("torch", torch.__version__, "/ onnxruntime", onnxruntime.__version__)'))"
