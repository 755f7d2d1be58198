#!/usr/bin/env bash
# Issue 22's checks on a GPU, in one command that ends inside 8 minutes, one line per check:
#   1. the tests marked `cuda` (tests/train): stale bf16 weights between two optimiser steps (item 1), crops in fp32
#      under autocast and TF32 (2), the CUDA random state round trip (6), every method for 24 steps in bf16 with
#      channels_last and a resume at step 10 equal bit for bit under --deterministic (7, 9), pinned batches (10),
#      training steps under torch.cuda.set_sync_debug_mode("error") (11);
#   2. training throughput per method (AlexNet-BN, 256 px renders, batch 256, bf16) and the shard reader's rate
#      (bench/train_throughput.py);
#   3. the CPU-pinned train tests on a machine where CUDA is present (item 9), in parallel where pytest-xdist is.
# Each step is time-boxed (timeout -k) and independent of the others' success; logs land in OUT_DIR.
#
#   bash bench/gpu_wheels.sh                    # once, where PyPI is reachable: wheels into .whl/ (carry it along)
#   bash bench/gpu_check.sh [OUT_DIR]           # on the GPU machine, from anywhere (default OUT_DIR /tmp/gpu-check)
#   TINY=1 bash bench/gpu_check.sh /tmp/dry     # a dry run on a CPU-only machine: the CPU counterparts of the
#                                               # checks, toy sizes, a subset of the suite
#
# Needs torch, torchvision, opencv, click, tqdm, scikit-image, matplotlib and pytest; webdataset and faiss-cpu are
# installed from .whl/ when missing. Boxes: 200 + 100 + 130 s = 430 s, plus start-up.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/gpu-check}
mkdir -p "$out"
source bench/gpu_common.sh

if [ "${TINY:-0}" = 1 ]; then
    device=${DEVICE:-cpu} arch=cifar size=32 batch=16 steps=2 warmup=1 render_n=256
    checks=(-m "not cuda" tests/train/test_device_paths.py tests/train/test_views.py -k "not ddp")
    suite=(tests/train/test_views.py tests/train/test_models.py)
else
    device=${DEVICE:-cuda} arch=alexnet size=256 batch=256 steps=20 warmup=5 render_n=8192
    checks=(-m cuda tests/train)
    suite=(-m "not cuda" tests/train)
fi
# pyproject.toml's addopts name pytest-xdist and pytest-timeout, which a GPU machine may lack: replaced here
xdist=(-o "addopts=-ra --import-mode=importlib")
if "$py" -c "import xdist" 2>/dev/null; then
    xdist+=(-n "$(( $(nproc) > 8 ? 8 : $(nproc) ))" --dist loadgroup)
fi

setup_python
device_line "$device" | tee "$out/device.txt"

step checks 200 "$py" -m pytest -q -rA -p no:cacheprovider -o "addopts=-ra --import-mode=importlib" "${checks[@]}"
grep -E '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) ' "$out/checks.txt" | sed 's/^/check /'

step throughput 100 "$py" bench/train_throughput.py --device "$device" --arch "$arch" --size "$size" --batch-size "$batch" \
    --steps "$steps" --warmup "$warmup" --render-n "$render_n" --cluster-n 0
grep -E '^(train|reader) ' "$out/throughput.txt" | sed 's/^/figure /'

step suite 130 "$py" -m pytest -q -p no:cacheprovider "${xdist[@]}" "${suite[@]}"
grep -E '^(FAILED|ERROR) |(passed|failed|error)' "$out/suite.txt" | tail -n 20 | sed 's/^/suite /'
