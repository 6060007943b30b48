"""The native pooling kernels against the XLA forms, interleaved in one process.

For each pooling of the clips-cnn3d and fashion-cnn training steps (channels last, float32,
their batch), ``x ↦ ∇ₓ Σ pool(relu(x)) · probe`` (forward and backward, the ReLU that XLA fuses
into the XLA form's pooling included), compiled once with the kernels and once without
(``pooling.uses_kernels`` patched off); then both models' whole training step (``jax_step``,
AdamW) the same two ways. Rounds alternate the two programs; the medians and their ratio are
written to ``pool_kernels.json`` and ``pool_kernels.md`` beside this file (absolute times on a
shared machine move with its load: read the ratios).

    python experiments/bench/pool_kernels.py [--rounds 15]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn.bench.train_step import batch_data, jax_step
from jaxcnn._conv.native import pooling

HERE = Path(__file__).parent
# name: (op, channels-last input shape, window)
OPS = {
    "clips avg (1,2,2) 64x8x32x32x1 (C < 8: XLA both)": ("avg_pool", (64, 8, 32, 32, 1), (1, 2, 2)),
    "clips max (1,2,2) 64x8x16x16x16": ("max_pool", (64, 8, 16, 16, 16), (1, 2, 2)),
    "clips max (2,2,2) 64x8x8x8x32": ("max_pool", (64, 8, 8, 8, 32), (2, 2, 2)),
    "fashion max 2x2 128x28x28x32": ("max_pool", (128, 28, 28, 32), (2, 2)),
    "fashion max 2x2 128x14x14x64": ("max_pool", (128, 14, 14, 64), (2, 2)),
}


@contextlib.contextmanager
def kernels_off(forms=pooling):
    """The XLA forms: ``forms.uses_kernels`` (a native-forms module's test) answers no."""
    original = forms.uses_kernels
    forms.uses_kernels = lambda *a, **k: False
    try:
        yield
    finally:
        forms.uses_kernels = original


def op_programs(op, shape, window):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    y_shape = jax.eval_shape(lambda x: getattr(jaxcnn, op)(x, window, channels_last=True), x).shape
    probe = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)

    def make():
        return jax.jit(jax.grad(lambda x: jnp.sum(getattr(jaxcnn, op)(jax.nn.relu(x), window, channels_last=True)
                                                  * probe))).lower(x).compile()
    kernel = make()
    with kernels_off():
        xla = make()
    return (lambda: kernel(x)), (lambda: xla(x))


def step_programs(name):
    x, y = batch_data(name, {"clips-cnn3d": 64, "fashion-cnn": 128}[name])
    compiled, args = jax_step(name, "lax", x, y, channels_last=True)["compiled"]["step"]
    with kernels_off():
        xla, _ = jax_step(name, "lax", x, y, channels_last=True)["compiled"]["step"]
    return (lambda: compiled(*args)), (lambda: xla(*args))


def interleaved(kernel, xla, rounds):
    for run in (kernel, xla, kernel, xla):   # warm-up
        jax.block_until_ready(run())
    times = {"kernel": [], "xla": []}
    for _ in range(rounds):
        for label, run in (("kernel", kernel), ("xla", xla)):
            start = time.perf_counter()
            jax.block_until_ready(run())
            times[label].append((time.perf_counter() - start) * 1e3)
    k, x = statistics.median(times["kernel"]), statistics.median(times["xla"])
    return {"kernel_ms": round(k, 3), "xla_ms": round(x, 3), "xla_over_kernel": round(x / k, 2)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-steps", action="store_true")
    args = parser.parse_args()
    results = {}
    for label, (op, shape, window) in OPS.items():
        results[label] = interleaved(*op_programs(op, shape, window), args.rounds)
        print(label, results[label], flush=True)
    if not args.no_steps:
        for name in ("clips-cnn3d", "fashion-cnn"):
            results[f"{name} training step"] = interleaved(*step_programs(name), args.rounds)
            print(name, results[f"{name} training step"], flush=True)
    (HERE / "pool_kernels.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["| what (fwd+bwd, float32, channels last) | kernel ms | XLA form ms | XLA / kernel |",
             "|---|---|---|---|"]
    lines += [f"| {k} | {v['kernel_ms']} | {v['xla_ms']} | {v['xla_over_kernel']} |" for k, v in results.items()]
    (HERE / "pool_kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
