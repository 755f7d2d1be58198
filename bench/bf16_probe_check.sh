#!/usr/bin/env bash
# bf16 autocast against fp32 on the CPU, measured where it matters: the same RotNet and SimCLR runs trained both
# ways (the trainer's --amp / --no-amp) from the same seed, then probed with the same shortened protocol; the probe's
# own seed spread (a second probe seed on each fp32 encoder) and the training seed spread (training seeds 0, 1 and 2
# of each precision) are the yardsticks. Results: bench/results/cpu-bf16.md.
#
#   bash bench/bf16_probe_check.sh [WORK]        # default runs/bf16; resumable: finished steps are skipped
set -euo pipefail
work=${1:-runs/bf16}
bin=$(dirname "$(readlink -f "$0")")/../.venv/bin
data=cifar10-jpg:../shared/data/cifar10-jpg
shards=$work/shards-imageB
mkdir -p "$work"
[ -f "$shards/manifest.json" ] || "$bin/pipeline" render --src ../shared/data/paper-images/animals.png \
    --n-patches 10000 --size 32 --out "$shards"
# RotNet: the demo's schedule (448 steps at batch 32, experiments/make_demo.py); SimCLR: modern's quick preset
# (width 16, batch 128, 390 steps, experiments/targets/modern.py)
declare -A args=(
  [rotnet]="--arch cifar --epochs 4 --milestones 3 --batch-size 32 --head-dim 1024 --workers 1"
  [simclr]="--arch resnet18-cifar-w16 --epochs 5 --batch-size 128 --workers 1"
)
probe_args="--limit-train 10000 --limit-test 5000 --epochs 10 --milestones 3,6,8 --workers 1"
for method in rotnet simclr; do
  for seed in 0 1 2; do
    for precision in no-amp amp; do
      name=$method-$precision$([ "$seed" = 0 ] || echo "-train-seed$seed")  # seed 0 keeps the first runs' names
      [ -f "$work/$name/encoder.pt" ] || "$bin/train" "$method" "$shards" --out "$work/$name" ${args[$method]} \
          --"$precision" --seed "$seed" --no-progress --no-tensorboard
      [ -f "$work/probe-$name/results.json" ] || "$bin/probe" linear "$work/$name/encoder.pt" --data "$data" \
          --out "$work/probe-$name" $probe_args
    done
  done
  [ -f "$work/probe-$method-no-amp-seed1/results.json" ] || "$bin/probe" linear "$work/$method-no-amp/encoder.pt" \
      --data "$data" --out "$work/probe-$method-no-amp-seed1" $probe_args --seed 1
done
