#!/usr/bin/env bash
# Why does the student distilled from Image B stay below its teacher in `reproduce distill`'s quick preset? A small
# sweep around that row, one change at a time, each student scored by `probe classify` on the CIFAR-10 test split:
#   steps x3 (4,680 instead of 1,560; the learning rate is constant, so this only trains longer),
#   T = 4 instead of 8, mixing none and mixup instead of CutMix.
# It reuses the quick preset's work folder (its teacher, its Image B shards and its baseline student), so run it after
#   python -m experiments distill --preset quick --work WORK
#
#   bash bench/distill_sweep.sh WORK         # resumable: finished runs and scores are skipped
# Results: bench/results/distill-quick.md ("Why below the bar: the sweep").
set -euo pipefail
work=${1:?usage: bash bench/distill_sweep.sh WORK (the --work of the quick preset)}
bin=$(dirname "$(readlink -f "$0")")/../.venv/bin
data=${DATA:-cifar10-jpg:$(dirname "$(readlink -f "$0")")/../../shared/data/cifar10-jpg}
teacher=$work/runs/teacher-cifar10/encoder.pt
shards=$work/shards/distill-imageB
for f in "$teacher" "$shards/manifest.json"; do
  [ -f "$f" ] || { echo "$f: not found; run the quick preset of reproduce distill with --work $work first" >&2; exit 2; }
done
# the quick preset's student: resnet18-cifar-w16 at batch 128 (experiments/targets/distill.py)
common="--teacher $teacher --arch resnet18-cifar-w16 --batch-size 128 --workers 2 --no-progress --no-tensorboard"
declare -A variant=(
  [steps-x3]="--epochs 12 --max-steps 4680"
  [t4]="--epochs 4 --max-steps 1560 --temperature 4"
  [mix-none]="--epochs 4 --max-steps 1560 --mix none"
  [mix-mixup]="--epochs 4 --max-steps 1560 --mix mixup"
)
for name in steps-x3 t4 mix-none mix-mixup; do  # the most telling first
  run=$work/sweep/distill-imageB-$name
  if [ ! -f "$run/encoder.pt" ]; then
    resume=(); [ -f "$run/checkpoint.pt" ] && resume=(--resume)
    # shellcheck disable=SC2086  # the options are word lists
    "$bin/train" distill "$shards" --out "$run" $common ${variant[$name]} "${resume[@]}"
  fi
  [ -f "$work/sweep/classify-$name/results.json" ] || "$bin/probe" classify "$run/encoder.pt" --data "$data" \
      --out "$work/sweep/classify-$name" --no-progress --workers 2
done
# one line per run: top-1 of the baseline (the preset's own student) and of each variant
for dir in "$work/classify/distill-imageB-cifar10" "$work"/sweep/classify-*; do
  "$bin/python" -c 'import json, sys; r = json.load(open(sys.argv[1] + "/results.json")); print(sys.argv[1].rsplit("/", 1)[-1], r["scores"]["top1"])' "$dir"
done
