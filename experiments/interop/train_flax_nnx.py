"""Flax NNX CNNs on MNIST-1D, each trained with optax twice: stock, and with jaxcnn's rules.

    python experiments/interop/train_flax_nnx.py [--epochs 50] [--out experiments/interop]
    python experiments/interop/train_flax_nnx.py --from-json experiments/interop/results.json

Two architectures (``ARCHITECTURES``: plain convolutions, and depthwise-separable ones). The
two variants of each differ in one argument, ``conv_general_dilated=jaxcnn.lax.conv_general_dilated``
on each ``nnx.Conv``; they start from the same parameters and see the same batches. Three
measurements per architecture, written to ``OUT/results.json`` and ``OUT/results.md``:

1. float64: the loss curves of ``--steps64`` Adam steps, their largest difference (the claim:
   at most 1e-10; both compute the same sums in float64, possibly in different orders).
2. float32 (the default, x64 off): a full run of ``--epochs`` epochs, each model's test
   accuracy and loss.
3. the float32 train step (forward, gradient, Adam update; jit-compiled), both timed in
   interleaved rounds after warm-up, medians, beside the float32 matmul peak of the run and
   each step's convolution GFLOP/s (3× the forward's multiply-adds: forward, input and weight
   gradients).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxcnn.lax
from jaxcnn import data
from jaxcnn._compat import enable_x64
from jaxcnn.bench.report import device_info, load_average
from jaxcnn.bench.timing import matmul_peak, time_interleaved
from jaxcnn.train import cross_entropy, evaluate

CONVS = {"stock": jax.lax.conv_general_dilated, "jaxcnn": jaxcnn.lax.conv_general_dilated}
# (in, out, kernel, nnx.Conv options) per layer, each followed by a ReLU. "plain": Flax paddings
# of four kinds, 40 → 40 → 20 → 10 → 10 samples. "separable": depthwise (one channel per group)
# and pointwise (kernel 1) convolutions, as MobileNet's blocks, 40 → 40 → 20 → 20 → 10 → ….
ARCHITECTURES = {
    "plain": ((1, 32, 5, {"padding": "CIRCULAR"}), (32, 32, 3, {"strides": 2}),
              (32, 64, 3, {"strides": 2}), (64, 64, 3, {"padding": "CAUSAL", "kernel_dilation": 2})),
    "separable": ((1, 32, 5, {"padding": "CIRCULAR"}),
                  (32, 32, 5, {"strides": 2, "feature_group_count": 32}), (32, 64, 1, {}),
                  (64, 64, 5, {"strides": 2, "feature_group_count": 64}), (64, 64, 1, {}),
                  (64, 64, 3, {"padding": "CAUSAL", "kernel_dilation": 2, "feature_group_count": 64}),
                  (64, 64, 1, {})),
}


class CNN(nnx.Module):
    """MNIST-1D classifier: ``x (N, 40, 1)`` (channels last, Flax's layout) → logits ``(N, 10)``.
    The convolutions of ``layers``, each with a ReLU, a global average over the signal, a
    linear layer."""

    def __init__(self, layers: tuple, conv_general_dilated: Callable, *, dtype: Any, rngs: nnx.Rngs):
        self.convs = nnx.List([nnx.Conv(c_in, c_out, k, **options, param_dtype=dtype, rngs=rngs,
                                        conv_general_dilated=conv_general_dilated)
                               for c_in, c_out, k, options in layers])
        self.head = nnx.Linear(layers[-1][1], 10, param_dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return self.head(jnp.mean(x, axis=1))


def conv_macs(layers: tuple, length: int = 40) -> int:
    """Multiply-adds of the convolutions' forward, per example."""
    total = 0
    for c_in, c_out, k, options in layers:
        length = -(-length // options.get("strides", 1))     # SAME, CIRCULAR, CAUSAL: ceil(L / s)
        total += c_in // options.get("feature_group_count", 1) * c_out * k * length
    return total


def build(arch: str, which: str, dtype: Any, seed: int) -> tuple[nnx.GraphDef, Any]:
    """``(graph, params)`` of the model; the same seed gives both variants the same params."""
    return nnx.split(CNN(ARCHITECTURES[arch], CONVS[which], dtype=dtype, rngs=nnx.Rngs(seed)))


def make_steps(graph: nnx.GraphDef, optimizer: optax.GradientTransformation) -> tuple[Callable, Callable]:
    """``train_step(params, opt_state, x, y) -> (params, opt_state, loss)`` and
    ``eval_step(params, x, y, mask) -> {"loss", "correct"}``, pure and jit-compiled."""
    def loss_fn(params, x, y):
        return jnp.mean(cross_entropy(nnx.merge(graph, params)(x), y))

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def eval_step(params, x, y, mask):
        logits = nnx.merge(graph, params)(x)
        loss = jnp.sum(jnp.where(mask, cross_entropy(logits, y), 0.0))
        return {"loss": loss, "correct": jnp.sum(mask & (jnp.argmax(logits, axis=-1) == y))}
    return train_step, eval_step


def load(dtype: Any) -> data.Dataset:
    """MNIST-1D in Flax's layout, ``x (N, 40, 1)``, as ``dtype``."""
    d = data.load_mnist1d()
    return data.Dataset(np.moveaxis(d.x_train, 1, -1).astype(dtype), d.y_train,
                        np.moveaxis(d.x_test, 1, -1).astype(dtype), d.y_test, d.num_classes, d.name)


def train_and_evaluate(arch: str, which: str, dataset: data.Dataset, *, dtype: Any, epochs: int,
                       batch_size: int, learning_rate: float, max_steps: int | None = None,
                       seed: int = 0) -> dict:
    """Adam on shuffled batches (the order a function of ``seed`` and the epoch): the loss of
    every step and, after the last, the test metrics (``jaxcnn.train.evaluate``)."""
    optimizer = optax.adam(learning_rate)
    graph, params = build(arch, which, dtype, seed)
    opt_state = optimizer.init(params)
    train_step, eval_step = make_steps(graph, optimizer)
    losses = []
    for epoch in range(epochs):
        for x, y in data.batches(seed, dataset.x_train, dataset.y_train, batch_size, epoch=epoch):
            params, opt_state, loss = train_step(params, opt_state, x, y)
            losses.append(float(loss))
            if max_steps is not None and len(losses) == max_steps:
                break
        if max_steps is not None and len(losses) == max_steps:
            break
    return {"losses": losses, "params": params,
            **evaluate(eval_step, params, dataset.x_test, dataset.y_test, 500)}


def compare_float64(arch: str, steps: int, batch_size: int, learning_rate: float) -> dict:
    with enable_x64(True):
        dataset = load(np.float64)
        epochs = -(-steps // (len(dataset.x_train) // batch_size))
        runs = {w: train_and_evaluate(arch, w, dataset, dtype=jnp.float64, epochs=epochs, max_steps=steps,
                                      batch_size=batch_size, learning_rate=learning_rate)
                for w in CONVS}
        stock, ours = runs["stock"], runs["jaxcnn"]
        param_diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(
            jax.tree.leaves(ours["params"]), jax.tree.leaves(stock["params"])))
    return {"steps": steps, "losses": {w: r["losses"] for w, r in runs.items()},
            "max_abs_loss_difference": float(np.max(np.abs(np.subtract(ours["losses"], stock["losses"])))),
            "max_relative_param_difference": param_diff}


def full_run_float32(arch: str, epochs: int, batch_size: int, learning_rate: float) -> dict:
    dataset = load(np.float32)
    result = {}
    for which in CONVS:
        start = time.perf_counter()
        run = train_and_evaluate(arch, which, dataset, dtype=jnp.float32, epochs=epochs,
                                 batch_size=batch_size, learning_rate=learning_rate)
        result[which] = {"test_accuracy": run["test_accuracy"], "test_loss": run["test_loss"],
                         "final_train_loss": float(np.mean(run["losses"][-40:])),
                         "steps": len(run["losses"]), "seconds": time.perf_counter() - start}
    return {"epochs": epochs, **result}


def time_train_steps(arch: str, batch_size: int, learning_rate: float, repeats: int) -> dict:
    """Median ms of each model's float32 train step, interleaved, on one fixed batch."""
    dataset = load(np.float32)
    x, y = jnp.asarray(dataset.x_train[:batch_size]), jnp.asarray(dataset.y_train[:batch_size])
    optimizer = optax.adam(learning_rate)
    calls, primitives = {}, {}
    for which in CONVS:
        graph, params = build(arch, which, jnp.float32, 0)
        train_step, _ = make_steps(graph, optimizer)
        opt_state = optimizer.init(params)
        calls[which] = (lambda s=train_step, p=params, o=opt_state: s(p, o, x, y), jax.block_until_ready)
        jaxpr = str(jax.make_jaxpr(train_step)(params, opt_state, x, y))   # nested jaxprs too
        primitives[which] = [name for name in ("conv_general_dilated", "jaxcnn_conv",
                                               "jaxcnn_conv_input_grad", "jaxcnn_conv_weight_grad")
                             if f" {name}[" in jaxpr]
    times, _, failures = time_interleaved(calls, repeats, min_seconds=10.0)
    if failures:
        raise RuntimeError(f"train step failed: {failures}")
    flops = 3 * 2 * conv_macs(ARCHITECTURES[arch]) * batch_size
    medians = {w: float(np.median(t)) for w, t in times.items()}
    return {"batch_size": batch_size, "rounds": len(times["stock"]), "median_ms": medians,
            "conv_primitives_in_step": primitives,
            "min_ms": {w: float(np.min(t)) for w, t in times.items()},
            "conv_gflops": {w: flops / ms / 1e6 for w, ms in medians.items()},
            "speedup": medians["stock"] / medians["jaxcnn"], "conv_gflop_per_step": flops / 1e9}


def _load_words(load: float) -> str:
    """What the 1-minute load average at the start says of the run's times (2 cores)."""
    if load > 2.5:
        return "the machine is shared and was busy, so the times are noisy (interleaved rounds keep the ratio fair)."
    return "nothing else ran (the load is the run's own); steps timed in interleaved rounds."


def markdown(report: dict) -> str:
    """The results table: one row per architecture, stock and jaxcnn side by side."""
    peak = report["matmul"]
    lines = [
        "# Flax NNX on MNIST-1D: stock vs jaxcnn's rules", "",
        f"Command: `{report['command']}`. jax {report['jax']}, flax {report['flax']}, optax "
        f"{report['optax']}; {report['cpu']}. Load average (1, 5, 15 min) at start "
        f"{report['load_average']['start']}, at end {report['load_average']['end']}: "
        f"{_load_words(report['load_average']['start'][0])} "
        f"Matmul peak of the run: float32 {peak['n']}² in {peak['ms']:.3g} ms = "
        f"{peak['gflops']:.1f} GFLOP/s.", "",
        "| model | float64: max \\|Δ loss\\| over the steps | float32: test accuracy, stock / jaxcnn "
        "| train step ms, stock / jaxcnn | jaxcnn speedup | conv GFLOP/s, stock / jaxcnn |",
        "|---|---|---|---|---|---|"]
    for arch in ARCHITECTURES:
        f64, f32, t = report[arch]["float64"], report[arch]["float32"], report[arch]["timing"]
        lines.append(
            f"| {arch} | {f64['max_abs_loss_difference']:.1e} ({f64['steps']} Adam steps) | "
            f"{100 * f32['stock']['test_accuracy']:.1f}% / {100 * f32['jaxcnn']['test_accuracy']:.1f}% "
            f"({f32['epochs']} epochs) | {t['median_ms']['stock']:.2f} / {t['median_ms']['jaxcnn']:.2f} | "
            f"×{t['speedup']:.2f} | {t['conv_gflops']['stock']:.1f} / {t['conv_gflops']['jaxcnn']:.1f} |")
    first = report[next(iter(ARCHITECTURES))]["timing"]
    lines += ["", f"Train step: forward, gradient and Adam update of a float32 batch of "
              f"{first['batch_size']}, jit-compiled; medians of interleaved rounds after warm-up. "
              "conv GFLOP/s: 3 × the forward convolutions' FLOPs (forward, input and weight "
              "gradients) over the step's time. Convolution primitives in each train step's jaxpr: "
              + "; ".join(f"{w}: {', '.join(f'`{n}`' for n in names)}"
                          for w, names in first["conv_primitives_in_step"].items()) + ".", "",
              "On a CPU, jaxcnn computes a one-group 1D convolution and its two gradients with the "
              "same lax convolutions as JAX's own rules, so the plain model's numbers are bitwise "
              "JAX's and its step takes the same time. Depthwise convolutions (one channel per "
              "group) take jaxcnn's depthwise forms (`jaxcnn/_conv/forms.py`): a tap sum instead of "
              "XLA's grouped convolution, faster, and summed in another order, so float32 runs "
              "drift apart by rounding over thousands of steps and end at different points of "
              "the same quality; in float64 the curves agree to rounding.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--steps64", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--from-json", type=Path, help="rewrite OUT/results.md from this JSON only")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        (args.out / "results.md").write_text(markdown(json.loads(args.from_json.read_text())))
        return
    import flax
    given = sys.argv[1:] if argv is None else argv
    report = {"command": " ".join(["python experiments/interop/train_flax_nnx.py", *given]),
              "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
              "cpu": f"{device_info().get('cpu')}, {device_info().get('cpu_cores')} cores",
              "load_average": {"start": load_average()}}
    for arch in ARCHITECTURES:
        result = report[arch] = {}
        result["float64"] = compare_float64(arch, args.steps64, args.batch_size, args.learning_rate)
        print(arch, "float64 max |Δ loss|:", result["float64"]["max_abs_loss_difference"])
        result["float32"] = full_run_float32(arch, args.epochs, args.batch_size, args.learning_rate)
        print(arch, "float32 accuracy:", {w: result["float32"][w]["test_accuracy"] for w in CONVS})
        result["timing"] = time_train_steps(arch, args.batch_size, args.learning_rate, args.repeats)
    report["matmul"] = matmul_peak(1024, 10)
    report["load_average"]["end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
