"""CPU time of jaxcnn's gradient step (issue 28): a before/after yardstick on a loaded machine.

For fashion-resnet, clips-cnn3d and fashion-cnn (channels last, ``impl="lax"``, each model's
batch) this jit-compiles ``jax.grad`` of a loss over the parameters (the step without its
optimizer) and records, over 15 calls after 3 warm-up calls, the median wall-clock time and the
median CPU time of the process (every thread): where other jobs load the machine, the
wall-clock time counts the time the step's threads waited for a core and the CPU time only the
work they did. Run it once per version (``PYTHONPATH`` naming the checkout) and compare:

    python experiments/bench/train_step_cpu_time.py experiments/bench/issue28/step_after.json
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from jaxcnn import models

MODELS = (("fashion-resnet", models.fashion_resnet, (128, 1, 28, 28)),
          ("clips-cnn3d", models.clips_cnn3d, (64, 1, 8, 32, 32)),
          ("fashion-cnn", models.fashion_cnn, (128, 1, 28, 28)))


def measure(layer, shape, calls: int = 15) -> dict[str, float]:
    params, _ = layer.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(2), shape)

    def loss(params, x):
        return jnp.mean(layer.apply(params, x, train=True, key=jax.random.key(1)) ** 2)
    step = jax.jit(jax.grad(loss))
    for _ in range(3):
        jax.block_until_ready(step(params, x))
    wall, cpu = [], []
    for _ in range(calls):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(step(params, x))
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_ms": 1e3 * statistics.median(wall), "cpu_ms": 1e3 * statistics.median(cpu)}


def main() -> None:
    results = {}
    for name, model, shape in MODELS:
        results[name] = measure(model(channels_last=True), shape)
        print(name, results[name], flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
