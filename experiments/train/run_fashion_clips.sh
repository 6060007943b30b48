#!/usr/bin/env bash
# Fashion-MNIST (fashion-cnn: 8 epochs, seed 0; the 10-minute recipe, seeds 0 and 1) and the
# moving-item clips (clips-cnn3d vs the per-frame baseline clips-frame2d, 10 epochs each),
# seed 0, one run at a time. Each names its layout, as its results were measured (the default is
# the platform's).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
run() {  # run NAME ARGS...: train into runs/NAME, then copy report and plots
  local name=$1; shift
  $PY -m jaxcnn train "$@" --workdir "runs/$name" --no-progress
  $PY experiments/train/collect.py "runs/$name" "experiments/train/results/$name"
}
run fashion-cnn-seed0 --dataset fashion --model fashion-cnn --channels-first --seed 0
for seed in 0 1; do
  run fashion-cnn-18ep-flip-seed$seed --dataset fashion --model fashion-cnn --channels-last --augment flip \
    --micro-batches 4 --batch-size 256 --epochs 18 --lr 4e-3 --eval-every 936 --seed $seed
done
run clips-cnn3d-seed0 --dataset clips --model clips-cnn3d --channels-first --seed 0
run clips-frame2d-seed0 --dataset clips --model clips-frame2d --seed 0
