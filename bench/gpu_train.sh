#!/usr/bin/env bash
# Issue 3's GPU figures in one batch command that ends inside 8 minutes (one GPU, 16 cores):
#   render    a 100,000-patch set of SRC_IMAGE at 256 px; its rate is extrapolated to ImageNet's 1,281,167 patches
#             (about 38 GiB at 256 px: rendering it takes longer, and more disk, than a lent GPU has)
#   steps     training steps per method with the loader taken out, and the shard reader's rate (bench/train_throughput.py)
#   rotnet, deepcluster
#             real end-to-end `train` runs on the 100,000-patch set (loader, augmentation, bf16 steps), whose
#             metrics.jsonl give the images/s and DeepCluster's clustering pass (features of every sample, PCA,
#             k-means) in seconds
#   cluster   the clustering arithmetic alone at ImageNet scale: PCA-whitening of 1,281,167 fc7-sized rows and
#             k-means with k = 10,000 (synthetic rows drawn on the GPU)
# Every step is time-boxed (timeout -k; boxes 60 + 90 + 60 + 100 + 60 = 370 s) and independent of the others'
# success: each training run first resumes the set's render (nothing to do when it is complete), and the step
# timings render their own small set. Each step's log lands in OUT_DIR; one line per step and per figure is printed.
#
#   bash bench/gpu_wheels.sh                       # once, where PyPI is reachable (wheels into .whl/, carried along)
#   bash bench/gpu_train.sh SRC_IMAGE OUT_DIR
#   TINY=1 bash bench/gpu_train.sh SRC_IMAGE /tmp/dry   # dry run on a CPU: 32 px, 2,000 patches, CIFAR encoder
#
# Needs torch, torchvision, opencv, click and tqdm; webdataset and faiss-cpu are installed from .whl/ when missing.
# Environment: N_SET (patches of the set), WORK (scratch folder, default /tmp/gpu-train), DEVICE, PYTHON.
set -uo pipefail
if [ $# -ne 2 ] || [ ! -f "$1" ]; then
    echo "usage: bench/gpu_train.sh SRC_IMAGE OUT_DIR (SRC_IMAGE: an image file${1:+; $1 is none})" >&2
    exit 2
fi
src=$(realpath "$1") out=$(realpath -m "$2")
cd "$(dirname "$0")/.."
mkdir -p "$out"
source bench/gpu_common.sh
work=${WORK:-/tmp/gpu-train}
cores=$(nproc)
if [ "${TINY:-0}" = 1 ]; then
    device=${DEVICE:-cpu} size=32 n_set=${N_SET:-2000} shard=500 arch=cifar batch=32 steps=1 warmup=0
    rot_steps=8 dc_steps=6 log_every=2 cluster_n=20000 cluster_dim=512 reader_n=512
else
    device=${DEVICE:-cuda} size=256 n_set=${N_SET:-100000} shard=5000 arch=alexnet batch=256 steps=30 warmup=5
    rot_steps=300 dc_steps=200 log_every=20 cluster_n=1281167 cluster_dim=4096 reader_n=16384
fi
rm -rf "$work/set" "$work/rotnet" "$work/deepcluster"  # the render rate is measured from scratch
mkdir -p "$work"
setup_python
device_line "$device" | tee "$out/device.txt"

render=("$py" -m pipeline.cli render --n-src 1 --src "$src" --size "$size" --n-patches "$n_set"
        --shard-size "$shard" --workers "$cores" --out "$work/set")
# what `bash -c` runs before a training run: the set's render, resumed (a no-op once it is complete)
RENDER_SET=$(printf '%q ' "${render[@]}")
export RENDER_SET

step render 60 "${render[@]}"
"$py" - "$work/set" "$out/render.txt" <<'EOF' | tee -a "$out/render.txt"
import json, re, sys
from pathlib import Path
manifest = Path(sys.argv[1]) / "manifest.json"
took = re.findall(r"after (\d+) s", Path(sys.argv[2]).read_text())
if not manifest.exists() or not took:
    sys.exit("figure render: no shard finished")
shards = json.loads(manifest.read_text())["shards"]
n, size, secs = sum(s["count"] for s in shards), sum(s["bytes"] for s in shards), max(1, int(took[-1]))
full = 1_281_167
print(f"figure render: {n} patches in {secs} s (start-up included) = {n / secs:,.0f} patches/s, "
      f"{size / n / 1024:.1f} KiB each; extrapolated {full:,} patches: {full / (n / secs) / 60:.1f} min, "
      f"{size / n * full / 2**30:.1f} GiB")
EOF

step steps 90 "$py" bench/train_throughput.py --device "$device" --arch "$arch" --size "$size" --batch-size "$batch" \
    --steps "$steps" --warmup "$warmup" --methods rotnet,deepcluster,supervised,bigan,monogan \
    --render-n "$reader_n" --cluster-n 0
grep -E '^(train|reader|ratio) ' "$out/steps.txt" | sed 's/^/figure /'

for run in rotnet:"$rot_steps":60 deepcluster:"$dc_steps":100; do
    IFS=: read -r method max_steps box <<<"$run"
    rm -rf "$work/$method"
    step "$method" "$box" bash -c 'eval "$RENDER_SET" && exec "$@"' _ \
        "$py" -m train.cli "$method" "$work/set" --device "$device" --arch "$arch" --batch-size "$batch" \
        --max-steps "$max_steps" --log-every "$log_every" --ckpt-every 0 --no-progress --out "$work/$method"
    cp "$work/$method/metrics.jsonl" "$out/$method-metrics.jsonl" 2>/dev/null
    "$py" - "$work/$method/metrics.jsonl" "$method" <<'EOF'
import json, sys
from pathlib import Path
path, method = Path(sys.argv[1]), sys.argv[2]
recs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
steps = [r["images_per_s"] for r in recs if "loss" in r and "event" not in r][1:]  # the first window warms up
clusters = [r for r in recs if r.get("event") == "epoch_start"]
if steps:
    print(f"figure {method}: {sum(steps) / len(steps):,.0f} images/s end to end over {len(steps)} logged windows")
for c in clusters:
    print(f"figure {method}: clustering pass {c['cluster_seconds']:.1f} s (features {c['feature_seconds']:.1f} s)")
if not steps and not clusters:
    print(f"figure {method}: none (see its log)")
EOF
done

step cluster 60 "$py" bench/train_throughput.py --device "$device" --methods "" --render-n 0 --cluster-n "$cluster_n" \
    --cluster-dim "$cluster_dim"
grep -E '^cluster ' "$out/cluster.txt" | sed 's/^/figure /'
