#!/usr/bin/env bash
# Everything in experiments/train/RESULTS.md, one run after another (about 1.5 hours on a
# shared 2-core CPU). Logs go to experiments/train/logs/.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export PYTHONUNBUFFERED=1
experiments/train/run_mnist1d.sh 0 1 2
$PY experiments/train/compare_impls.py
$PY -m jaxcnn train --dataset mnist1d --impl manual --seed 0 --workdir runs/mnist1d-resnet-manual-seed0 --no-progress
$PY experiments/train/collect.py runs/mnist1d-resnet-manual-seed0 experiments/train/results/mnist1d-resnet-manual-seed0
experiments/train/run_fashion_clips.sh
$PY experiments/train/summarize.py
