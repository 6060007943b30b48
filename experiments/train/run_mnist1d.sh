#!/usr/bin/env bash
# MNIST-1D with the default recipe (mnist1d-resnet, shift augmentation, one-cycle AdamW,
# 4000 steps of batch 100) for seeds 0, 1, 2; then the same run with --impl manual. Channels
# first, as its results were measured (the default layout is the platform's).
# One run at a time (the machine has 2 cores). Usage: experiments/train/run_mnist1d.sh [seeds...]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(0 1 2)
for seed in "${seeds[@]}"; do
  $PY -m jaxcnn train --dataset mnist1d --seed "$seed" --channels-first --workdir "runs/mnist1d-resnet-seed$seed" --no-progress
  $PY experiments/train/collect.py "runs/mnist1d-resnet-seed$seed" "experiments/train/results/mnist1d-resnet-seed$seed"
done
