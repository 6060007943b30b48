"""--impl manual vs --impl lax on MNIST-1D: the loss curves of the first 100 steps.

Both runs use the default MNIST-1D recipe (same seed, same init, same batches, same
augmentation keys) and stop after 100 steps (``halt_after``); only the convolution's
implementation differs. Writes results/mnist1d-impl-curves.json and .png.

Usage: python experiments/train/compare_impls.py [--steps 100]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxcnn import train

ROOT = Path(__file__).resolve().parent


def losses(workdir: Path) -> np.ndarray:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return np.array([r["loss"] for r in records if r["kind"] == "train"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    curves = {}
    for impl in ("lax", "manual"):
        workdir = Path("runs") / f"mnist1d-impl-curve-{impl}"
        config = train.TrainConfig(dataset="mnist1d", impl=impl, halt_after=args.steps, log_every=1,
                                   progress=False, plots=False)
        timing = train.train_and_evaluate(config, workdir)
        curves[impl] = losses(workdir)
        print(impl, {k: timing[k] for k in ("wall_time_s", "cpu_time_s", "examples_per_s")})
    diff = np.abs(curves["manual"] - curves["lax"])
    result = {"steps": args.steps, "max_abs_diff": float(diff.max()),
              "max_rel_diff": float((diff / np.abs(curves["lax"])).max()),
              "first_step_where_rel_diff_exceeds_1e-5": next(
                  (int(i) + 1 for i, d in enumerate(diff / np.abs(curves["lax"])) if d > 1e-5), None),
              "loss_lax": curves["lax"].tolist(), "loss_manual": curves["manual"].tolist()}
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "mnist1d-impl-curves.json").write_text(json.dumps(result, indent=1) + "\n")
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    steps = np.arange(1, args.steps + 1)
    left.plot(steps, curves["lax"], label="--impl lax")
    left.plot(steps, curves["manual"], "--", label="--impl manual")
    left.set(xlabel="step", ylabel="training loss", title="MNIST-1D, first steps")
    left.legend()
    right.semilogy(steps, np.maximum(diff / np.abs(curves["lax"]), 1e-10))
    right.axhline(1e-5, color="gray", ls=":", label="float32 tolerance 1e-5")
    right.set(xlabel="step", ylabel="|manual - lax| / |lax|", title="relative difference")
    right.legend()
    fig.savefig(out / "mnist1d-impl-curves.png", dpi=110)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("loss_")}))


if __name__ == "__main__":
    main()
