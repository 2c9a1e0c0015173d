#!/usr/bin/env bash
# Install PyTorch into the virtualenv whose pip is $1, choosing a sensible build:
#   1. torch already importable            -> nothing to do
#   2. a local CPU wheel torch==2.13.0     -> that (offline machines ship it in pip's find-links)
#   3. an NVIDIA GPU is present            -> the default (CUDA) build from the package index
#   4. otherwise                           -> the CPU-only build (TORCH_CPU_INDEX, overridable)
set -euo pipefail
PIP="$1"
PY="$(dirname "$PIP")/python"
if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "torch already installed: $("$PY" -c 'import torch; print(torch.__version__)')"
  exit 0
fi
probe="$(mktemp -d)"
if "$PIP" download --no-index --no-deps "torch==2.13.0" -d "$probe" >/dev/null 2>&1 \
    && ls "$probe" | grep -q "+cpu"; then
  rm -rf "$probe"
  "$PIP" install "torch==2.13.0"
  exit 0
fi
rm -rf "$probe"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  "$PIP" install "torch>=2.1"
  exit 0
fi
"$PIP" install "torch>=2.1" --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" \
  --extra-index-url "${PIP_INDEX_URL:-https://pypi.org/simple}"
