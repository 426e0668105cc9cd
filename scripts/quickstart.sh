#!/usr/bin/env bash
# Quickstart, step 1: install everything into .venv, then run the main job on the embedded
# default (manifests/demo.toml): precompute -> pair -> train -> eval.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/just demo
