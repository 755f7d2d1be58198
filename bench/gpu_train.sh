#!/usr/bin/env bash
# Issue 3's GPU figures in one batch command (one H100, 16 cores): render an ImageNet-scale set of Image A,
# time the training steps with the loader taken out (bench/train.py), then real end-to-end `train rotnet` and
# `train deepcluster` runs on the rendered set (loader, augmentation, bf16 steps), whose metrics.jsonl give the
# images/s and DeepCluster's clustering pass (features of every sample + PCA + k-means) in seconds.
#
#   bench/gpu_train.sh SRC_IMAGE OUT_DIR [N_PATCHES]
#
# Needs the project importable (PYTHONPATH) with webdataset and faiss-cpu. Every step is time-boxed so the
# whole script ends inside a 10-minute batch slot; each step's log lands in OUT_DIR.
set -uo pipefail
src=$1 out=$2 n=${3:-1281167}
work=${WORK:-/tmp/gpu-train}
cores=$(nproc)
workers=$((cores > 2 ? cores - 1 : 1))
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS CMD...: run, time-box, log to OUT_DIR/NAME.txt
    local name=$1 secs=$2; shift 2
    echo "== $name: $*" | tee "$out/$name.txt"
    local t0=$SECONDS
    # progress bars (tqdm, '\r'-separated) are dropped from the log; the tools print their own summaries
    timeout "$secs" "$@" 2>&1 | tr '\r' '\n' | grep -v -E '%\||^\s*$' >>"$out/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$out/$name.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
"$py" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
    | tee -a "$out/device.txt"

step render 200 "$py" -m pipeline.cli render --n-src 1 --src "$src" --size 256 --n-patches "$n" \
    --shard-size 5000 --workers "$cores" --out "$work/set"
step steps 120 "$py" bench/train.py --arch alexnet --size 256 --batch-size 256 --steps 30 --warmup 5 \
    --methods rotnet,deepcluster,supervised,bigan --set "$work/set" --workers "$workers" --render-n 100000 \
    --cluster-n 0
step rotnet 90 "$py" -m train.cli rotnet "$work/set" --arch alexnet --batch-size 256 --workers "$workers" \
    --max-steps 400 --log-every 20 --ckpt-every 0 --out "$work/rotnet" --no-progress
cp "$work/rotnet/metrics.jsonl" "$out/rotnet-metrics.jsonl" 2>/dev/null
step deepcluster 240 "$py" -m train.cli deepcluster "$work/set" --arch alexnet --batch-size 256 \
    --workers "$workers" --max-steps 300 --log-every 20 --ckpt-every 0 --out "$work/deepcluster" --no-progress
cp "$work/deepcluster/metrics.jsonl" "$out/deepcluster-metrics.jsonl" 2>/dev/null
