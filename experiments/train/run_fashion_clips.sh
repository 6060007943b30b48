#!/usr/bin/env bash
# Fashion-MNIST (fashion-cnn, 8 epochs) and the moving-item clips (clips-cnn3d vs the
# per-frame baseline clips-frame2d, 10 epochs each), seed 0, one run at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
run() {  # run NAME ARGS...: train into runs/NAME, then copy report and plots
  local name=$1; shift
  $PY -m jaxcnn train "$@" --workdir "runs/$name" --no-progress
  $PY experiments/train/collect.py "runs/$name" "experiments/train/results/$name"
}
run fashion-cnn-seed0 --dataset fashion --model fashion-cnn --seed 0
run clips-cnn3d-seed0 --dataset clips --model clips-cnn3d --seed 0
run clips-frame2d-seed0 --dataset clips --model clips-frame2d --seed 0
