"""One sharded train step against one single-device step, along a real training trajectory.

Usage: ``python experiments/distributed/step_agreement.py [--steps 50]`` (forces 8 CPU devices).

Free-running float32 curves of ``mnist1d-resnet`` on 1 and 8 devices drift apart after a few
steps (``run.py``): any change in the order of float32 sums does that to this model under
AdamW. This script separates the step from the drift, on the default MNIST-1D recipe with a
global batch of 128:

- teacher-forced: at every step ``t`` of the 1-device run, the same state and batch go through
  the 1-, 2- and 8-device steps; the loss and the updated parameters are compared
  (``max|a − b| / max|b|``, the worst leaf), so each comparison holds one step's rounding;
- control: the 1-device run from initial parameters moved by one float32 ulp (``nextafter``),
  free-running, against the unmoved run: how far 50 steps carry a rounding-sized difference
  with no sharding at all.

Writes ``step_agreement.json`` and ``step_agreement.md`` beside this file.
"""
from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxcnn import distributed, models, train  # noqa: E402

HERE = Path(__file__).parent


def worst(a, b) -> float:
    """The largest ``max|a − b| / max|b|`` over the leaves of two pytrees."""
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / max(float(np.max(np.abs(y))), 1e-30))
               for x, y in pairs)


def setup(steps: int):
    config = train.TrainConfig(dataset="mnist1d", steps=steps, batch_size=128).resolved()
    dataset = train.load_dataset(config)
    plan = train.make_plan(config, len(dataset.x_train))
    model = models.build(config.model, dataset.num_classes, channels_last=False)  # the layout it was measured in
    optimizer, _ = train.make_optimizer(config, plan.total)
    state = train.initial_state(config, model, optimizer, dataset.input_shape)
    _, data_key, train_key = jax.random.split(jax.random.key(config.seed), 3)
    make = lambda parallel: train.make_train_step(model, optimizer, train_key, train.augmentation("mnist1d"),
                                                  np.float32, parallel)
    batches = [b for _, epoch in train.epochs(data_key, dataset.x_train, dataset.y_train, plan, 0) for b in epoch]
    return state, make, batches


def run(steps: int) -> dict:
    state, make, batches = setup(steps)
    layouts = {n: distributed.data_parallel(n) for n in (1, 2, 8)}
    step = {n: make(p) for n, p in layouts.items()}
    put = lambda n, tree: layouts[n].replicate(distributed.host(tree))
    batch = lambda n, b: tuple(layouts[n].batch(a, len(a)) for a in b)
    forced = {n: {"loss": 0.0, "params": 0.0} for n in (2, 8)}
    teacher, curve = put(1, state), []
    for b in batches:
        before = distributed.host(teacher)
        teacher, metrics = step[1](teacher, *batch(1, b))
        curve.append(float(metrics["loss"]))
        for n in (2, 8):
            student, m = step[n](put(n, before), *batch(n, b))
            forced[n]["loss"] = max(forced[n]["loss"], abs(float(m["loss"]) - curve[-1]) / abs(curve[-1]))
            forced[n]["params"] = max(forced[n]["params"], worst(student.params, teacher.params))
    moved = state._replace(params=jax.tree_util.tree_map(
        lambda p: np.nextafter(np.asarray(p), np.float32(np.inf)), state.params))
    control, control_curve = put(1, moved), []
    for b in batches:
        control, metrics = step[1](control, *batch(1, b))
        control_curve.append(float(metrics["loss"]))
    curve, control_curve = np.array(curve), np.array(control_curve)
    return {"steps": steps, "teacher_forced": {str(n): v for n, v in forced.items()},
            "control_loss_rel_error": float(np.max(np.abs(control_curve - curve)) / np.max(np.abs(curve))),
            "control_params_rel_error": worst(control.params, teacher.params),
            "control_first_step_over_1e-5": int(np.argmax(np.abs(control_curve - curve) / np.abs(curve) > 1e-5)) + 1}


def markdown(r: dict) -> str:
    rows = [f"| {n} devices | {v['loss']:.1e} | {v['params']:.1e} |" for n, v in r["teacher_forced"].items()]
    return "\n".join([
        f"# One sharded step against one device (mnist1d-resnet, MNIST-1D, batch 128, {r['steps']} steps)", "",
        "Reproduce: `python experiments/distributed/step_agreement.py`.", "",
        "Teacher-forced, worst over the steps (state and batch of the 1-device run at every step):", "",
        "| step on | loss, rel. error | updated params, worst leaf rel. error |", "|---|---|---|", *rows, "",
        f"Control, no sharding: 1 device from initial parameters one float32 ulp away, free-running: "
        f"loss curve rel. error {r['control_loss_rel_error']:.1e} (above 1e-5 from step "
        f"{r['control_first_step_over_1e-5']}), final params worst leaf {r['control_params_rel_error']:.1e}.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    results = run(parser.parse_args().steps)
    (HERE / "step_agreement.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "step_agreement.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
