"""--impl manual vs --impl lax on MNIST-1D over the first 100 steps of the default recipe.

Three comparisons, same seed, init, batches and augmentation keys; only the convolution's
implementation differs:

1. free-running float32: two ``jaxcnn train`` runs (``halt_after=100``), loss per step.
   Each run feeds its own rounding back into its parameters, so float32 differences of one
   ulp grow step by step (the training dynamics amplify them).
2. teacher-forced float32: along the lax run's trajectory, both impls evaluate the loss and
   the gradient at the *same* parameters each step: the per-step agreement, no feedback.
3. free-running float64: the same loop as 1 in float64. If the impls compute the same
   function, the curves agree to ~1e-10 and the float32 gap of 1 is rounding amplified.

Writes results/mnist1d-impl-curves.json and .png. Usage: python experiments/train/compare_impls.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # for comparison 3; everything else sets its dtypes

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from jaxcnn import data, models, train  # noqa: E402

ROOT = Path(__file__).resolve().parent


def rel(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-30)


def free_running_float32(steps: int) -> dict[str, np.ndarray]:
    curves = {}
    for impl in ("lax", "manual"):
        workdir = Path("runs") / f"mnist1d-impl-curve-{impl}"
        config = train.TrainConfig(dataset="mnist1d", impl=impl, halt_after=steps, log_every=1,
                                   progress=False, plots=False, channels_last=False)  # as measured
        train.train_and_evaluate(config, workdir)
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        curves[impl] = np.array([r["loss"] for r in records if r["kind"] == "train"])
    return curves


def mirror_loop(dataset: data.Dataset, steps: int, dtype, teacher_forced: bool) -> dict[str, np.ndarray]:
    """The default recipe's first ``steps`` steps (the keys and batches of ``jaxcnn.train``),
    with both impls: free-running each on its own params, or both on the lax params."""
    config = train.TrainConfig(dataset="mnist1d").resolved()
    n, bs = len(dataset.x_train), config.batch_size
    init_key, data_key, train_key = jax.random.split(jax.random.key(config.seed), 3)
    built = {impl: models.build(config.model, 10, impl=impl, channels_last=False) for impl in ("lax", "manual")}
    params, _ = built["lax"].init(init_key, (bs, 1, 40))
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
    optimizer, _ = train.make_optimizer(config, config.steps)
    augment = train.augmentation("mnist1d")

    def loss_fn(model):
        def loss(p, x, y, key):
            return jnp.mean(train.cross_entropy(model.apply(p, x, train=True, key=key), y))
        return jax.jit(jax.value_and_grad(loss))
    grads_of = {impl: loss_fn(model) for impl, model in built.items()}
    state = {impl: (params, optimizer.init(params)) for impl in built}
    out = {"loss_lax": [], "loss_manual": [], "grad_rel_diff": []}
    for step in range(steps):
        epoch, position = divmod(step, n // bs)
        index = data.epoch_permutation(data_key, epoch, n)[position * bs:(position + 1) * bs]
        aug_key, dropout_key = jax.random.split(jax.random.fold_in(train_key, step))
        x = augment(aug_key, jnp.asarray(dataset.x_train[index])).astype(dtype)
        y = jnp.asarray(dataset.y_train[index])
        results = {}
        for impl in built:
            p = state["lax" if teacher_forced else impl][0]
            results[impl] = grads_of[impl](p, x, y, dropout_key)
        for impl in built:
            if teacher_forced and impl == "manual":
                continue
            p, opt_state = state[impl]
            updates, opt_state = optimizer.update(results[impl][1], opt_state, p)
            state[impl] = (optax.apply_updates(p, updates), opt_state)
        out["loss_lax"].append(float(results["lax"][0]))
        out["loss_manual"].append(float(results["manual"][0]))
        g_lax = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(results["lax"][1])])
        g_man = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(results["manual"][1])])
        out["grad_rel_diff"].append(float(np.max(np.abs(g_man - g_lax)) / np.max(np.abs(g_lax))))
    return {k: np.array(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    steps = parser.parse_args().steps
    dataset = data.load_mnist1d()
    free32 = free_running_float32(steps)
    forced = mirror_loop(dataset, steps, jnp.float32, teacher_forced=True)
    free64 = mirror_loop(dataset, steps, jnp.float64, teacher_forced=False)
    curves = {"free-running float32 (jaxcnn train)": rel(free32["manual"], free32["lax"]),
              "teacher-forced float32 (same params)": rel(forced["loss_manual"], forced["loss_lax"]),
              "free-running float64": rel(free64["loss_manual"], free64["loss_lax"])}
    result = {"steps": steps,
              "max_rel_loss_diff": {k: float(v.max()) for k, v in curves.items()},
              "first_step_rel_loss_diff_above_1e-5": {
                  k: next((i + 1 for i, d in enumerate(v) if d > 1e-5), None) for k, v in curves.items()},
              "teacher_forced_float32_max_rel_grad_diff": float(forced["grad_rel_diff"].max()),
              "free_running_float64_max_rel_grad_diff": float(free64["grad_rel_diff"].max()),
              "loss_lax_float32": free32["lax"].tolist(), "loss_manual_float32": free32["manual"].tolist()}
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "mnist1d-impl-curves.json").write_text(json.dumps(result, indent=1) + "\n")
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    x = np.arange(1, steps + 1)
    left.plot(x, free32["lax"], label="--impl lax")
    left.plot(x, free32["manual"], "--", label="--impl manual")
    left.set(xlabel="step", ylabel="training loss", title="MNIST-1D, first steps (float32)")
    left.legend()
    for name, values in curves.items():
        right.semilogy(x, np.maximum(values, 1e-17), label=name)
    right.axhline(1e-5, color="gray", ls=":", label="float32 tolerance 1e-5")
    right.set(xlabel="step", ylabel="|loss manual - loss lax| / loss lax", title="relative difference")
    right.legend(fontsize=7)
    fig.savefig(out / "mnist1d-impl-curves.png", dpi=110)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("loss_")}, indent=1))


if __name__ == "__main__":
    main()
