"""Where the clip models' errors are: item accuracy (``label // 4``) and direction accuracy
(``label % 4``) of each trained clips model on the test clips.

The per-frame baseline should know the item about as well as the 3D CNN but the direction
only at chance (25 %): every single frame has the same distribution for all four directions.
Writes results/clips-breakdown.json. Usage: python experiments/train/clips_breakdown.py [RUN ...]
(default runs/clips-cnn3d-seed0 runs/clips-frame2d-seed0).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from jaxcnn import data, train

ROOT = Path(__file__).resolve().parent


def predictions(model, params, x: np.ndarray, batch: int = 250) -> np.ndarray:
    apply = jax.jit(model.apply)
    return np.concatenate([np.argmax(apply(params, x[i:i + batch]), axis=-1) for i in range(0, len(x), batch)])


def main() -> None:
    runs = sys.argv[1:] or ["runs/clips-cnn3d-seed0", "runs/clips-frame2d-seed0"]
    clips = data.load_fashion_clips()
    item, direction = clips.extras["item_test"], clips.extras["direction_test"]
    result = {}
    for run in runs:
        config, model, params = train.load_trained(run)
        predicted = predictions(model, params, clips.x_test)
        result[config.model] = {
            "run": run, "test_accuracy": float(np.mean(predicted == clips.y_test)),
            "item_accuracy": float(np.mean(predicted // len(data.DIRECTIONS) == item)),
            "direction_accuracy": float(np.mean(predicted % len(data.DIRECTIONS) == direction)),
            "test_clips": int(len(predicted))}
        print(config.model, result[config.model])
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "clips-breakdown.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
