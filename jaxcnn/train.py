"""``jaxcnn train``: an optax training run with exact resume, metrics and plots.

The run reads as Flax's MNIST example: ``train_step`` and ``eval_step`` are pure and
jit-compiled (the train step once, with its state buffers donated), and one entry point,
``train_and_evaluate(config, workdir)``, returns the final report.

Everything a step consumes is a function of ``(config, step)``: the batch is
``epoch_permutation(data_key, step // steps_per_epoch, N)`` sliced at ``step %
steps_per_epoch``, and the augmentation / dropout key is ``fold_in(train_key, step)``. A
checkpoint (params, optimizer state, step, keys, epoch and position) therefore resumes the
run bit for bit. Checkpoints are written atomically (a temporary file in the workdir, then
``os.replace``), and only after the losses up to their step were seen finite.

Files in the workdir: ``checkpoint.npz``, ``metrics.jsonl`` (one JSON object per train step
and per evaluation), ``report.json``, and the plots of ``jaxcnn.plots``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import _args, data, models, nn

DATASET_NAMES = ("mnist1d", "fashion", "clips")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
DTYPES = ("float32", "bfloat16")

# Per-dataset defaults: the recipes behind experiments/train/RESULTS.md.
DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist1d": dict(model="mnist1d-resnet", steps=4000, batch_size=100, lr=3e-3, weight_decay=5e-2, augment=True),
    "fashion": dict(model="fashion-cnn", epochs=8, batch_size=128, lr=3e-3, weight_decay=5e-2, augment=True),
    "clips": dict(model="clips-cnn3d", epochs=10, batch_size=64, lr=3e-3, weight_decay=5e-2, augment=True),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One run. ``None`` fields take the dataset's ``DEFAULTS``; give ``steps`` or ``epochs``.

    ``halt_after`` stops the loop after that many steps (as a kill would, after the
    checkpoint of that step): the resume tests use it. ``train_subset`` keeps the first n
    training examples. A resumed run must match its checkpoint in every field except
    ``resume``, ``halt_after``, ``progress``, ``plots``, ``data_dir`` and the logging and
    checkpoint intervals (``identity``).
    """

    dataset: str = "mnist1d"
    model: str | None = None
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str = "adamw"
    lr: float | None = None
    schedule: str = "onecycle"
    weight_decay: float | None = None
    seed: int = 0
    impl: str = "lax"
    dtype: str = "float32"
    augment: bool | None = None
    data_dir: str | None = None
    resume: bool = False
    log_every: int = 50
    checkpoint_every: int = 500
    eval_every: int | None = None
    eval_batch_size: int = 500
    train_subset: int | None = None
    halt_after: int | None = None
    progress: bool = True
    plots: bool = True

    def resolved(self) -> "TrainConfig":
        """Validated, with the dataset's defaults filled in."""
        dataset = _args.choice(self.dataset, DATASET_NAMES, "dataset")
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        defaults = dict(DEFAULTS[dataset])
        if "steps" in given or "epochs" in given:
            defaults.pop("steps", None), defaults.pop("epochs", None)
        config = dataclasses.replace(self, **{**defaults, **given, "dataset": dataset})
        if config.model not in models.MODELS:
            raise ValueError(f"model: expected one of {tuple(models.MODELS)}; got {config.model!r}")
        if models.DATASETS.get(config.model, dataset) != dataset:
            raise ValueError(f"model: {config.model} is made for the {models.DATASETS[config.model]} "
                             f"dataset; expected a model for {dataset}; got {config.model!r}")
        if (config.steps is None) == (config.epochs is None):
            raise ValueError(f"steps, epochs: expected exactly one; got steps={config.steps}, epochs={config.epochs}")
        for name in ("batch_size", "log_every", "checkpoint_every", "eval_batch_size"):
            _args.positive_int(getattr(config, name), name)
        for name in ("steps", "epochs", "eval_every", "train_subset", "halt_after"):
            if getattr(config, name) is not None:
                _args.positive_int(getattr(config, name), name)
        _args.choice(config.optimizer, OPTIMIZERS, "optimizer")
        _args.choice(config.schedule, SCHEDULES, "schedule")
        _args.choice(config.impl, _args.IMPLS, "impl")
        _args.choice(config.dtype, DTYPES, "dtype")
        for name in ("lr", "weight_decay"):
            value = getattr(config, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name}: expected a non-negative number; got {value!r}")
        return config

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with its checkpoint."""
        skip = {"resume", "halt_after", "progress", "plots", "data_dir", "log_every", "checkpoint_every"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- pieces

def load_dataset(config: TrainConfig) -> data.Dataset:
    """The named dataset, channels first, float32."""
    if config.dataset == "mnist1d":
        return data.load_mnist1d(cache_dir=config.data_dir)
    if config.dataset == "fashion":
        return data.load_fashion_mnist(config.data_dir, standardized=True)
    return data.load_fashion_clips(config.data_dir)


def augmentation(dataset_name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``augment(key, x) -> x``, jit-able: circular shifts of up to 4 samples for MNIST-1D,
    a 2-pixel padded crop and a horizontal flip for Fashion-MNIST, a common spatial shift of
    all frames on the clips' torus (flips would swap the directions, time shifts break motion)."""
    if dataset_name == "mnist1d":
        return lambda key, x: data.random_shift_1d(key, x, 4)
    if dataset_name == "fashion":
        def fashion(key: jax.Array, x: jax.Array) -> jax.Array:
            crop_key, flip_key = jax.random.split(key)
            return data.random_flip(flip_key, data.random_crop(crop_key, x, 2), -1)
        return fashion
    return lambda key, x: data.random_shift(key, x, (0, 4, 4), mode="circular")


def make_optimizer(config: TrainConfig, total_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """The optax optimizer and its learning-rate schedule, from the config."""
    if config.schedule == "onecycle":  # Smith & Topor (2017): warm up 25%, cosine down
        schedule = optax.cosine_onecycle_schedule(total_steps, config.lr, pct_start=0.25,
                                                  div_factor=25.0, final_div_factor=1e3)
    elif config.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(config.lr, total_steps)
    else:
        schedule = optax.constant_schedule(config.lr)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay), schedule
    decay = optax.add_decayed_weights(config.weight_decay)
    if config.optimizer == "adam":
        return optax.chain(decay, optax.adam(schedule)), schedule
    return optax.chain(decay, optax.sgd(schedule, momentum=0.9, nesterov=True)), schedule


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example ``−log softmax(logits)[label]``, in float32 at least."""
    logits = logits.astype(np.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_train_step(model: nn.Layer, optimizer: optax.GradientTransformation, train_key: jax.Array,
                    augment: Callable | None, dtype: Any) -> Callable:
    """The one jit-compiled step ``(state, x, y) -> (state, metrics)``, ``state`` donated.

    A step whose loss or gradient is not finite leaves params and optimizer state unchanged
    (``metrics["finite"]`` is false): the loop stops there, with the last good state.
    """
    def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, dict]:
        aug_key, dropout_key = jax.random.split(jax.random.fold_in(train_key, state.step))
        if augment is not None:
            x = augment(aug_key, x)
        x = x.astype(dtype)

        def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            logits = model.apply(params, x, train=True, key=dropout_key)
            return jnp.mean(cross_entropy(logits, y)), logits
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam: float ** int32 step count
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
        state = TrainState(keep(params, state.params), keep(opt_state, state.opt_state), state.step + 1)
        accuracy = jnp.mean((jnp.argmax(logits, axis=-1).astype(y.dtype) == y).astype(jnp.float32))
        return state, {"loss": loss.astype(jnp.float32), "accuracy": accuracy, "finite": finite}
    return jax.jit(train_step, donate_argnums=(0,))


def make_eval_step(model: nn.Layer, dtype: Any) -> Callable:
    """``(params, x, y, mask) -> (summed loss, correct count)`` over the masked rows."""
    @jax.jit
    def eval_step(params: Any, x: jax.Array, y: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = model.apply(params, x.astype(dtype))
        loss = jnp.sum(jnp.where(mask, cross_entropy(logits, y), 0.0))
        correct = jnp.sum(mask & (jnp.argmax(logits, axis=-1).astype(y.dtype) == y))
        return loss, correct
    return eval_step


def evaluate(eval_step: Callable, params: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict:
    """Mean loss and accuracy over ``(x, y)``; the last batch padded (one compilation)."""
    batch_size = min(batch_size, len(x))
    loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        pad = batch_size - len(xb)
        mask = np.arange(batch_size) < len(xb)
        xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)]) if pad else xb
        yb = np.concatenate([yb, np.zeros(pad, yb.dtype)]) if pad else yb
        batch_loss, batch_correct = eval_step(params, xb, yb, mask)
        loss, correct = loss + float(batch_loss), correct + int(batch_correct)
    return {"test_loss": loss / len(x), "test_accuracy": correct / len(x)}


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT = "checkpoint.npz"


def save_checkpoint(path: Path, state: TrainState, *, key: jax.Array, epoch: int, position: int,
                    elapsed: float, config: TrainConfig) -> None:
    """``np.savez`` of the flattened ``(params, opt_state)`` leaves, the step, the PRNG key
    and the data position, to a temporary file in the same directory, then ``os.replace``."""
    leaves = jax.tree_util.tree_leaves((state.params, state.opt_state))
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update(step=np.asarray(state.step), key=np.asarray(jax.random.key_data(key)),
                  epoch=np.asarray(epoch), position=np.asarray(position), elapsed=np.asarray(elapsed),
                  config=np.asarray(json.dumps(config.identity(), sort_keys=True)))
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, template: TrainState, config: TrainConfig) -> tuple[TrainState, dict]:
    """The state saved at ``path``, in ``template``'s tree structure (shapes and dtypes
    checked), and its ``key``, ``epoch``, ``position``, ``elapsed``."""
    with np.load(path) as saved:
        stored = json.loads(str(saved["config"]))
        mine = json.loads(json.dumps(config.identity(), sort_keys=True))
        for name in sorted(set(stored) | set(mine)):
            if stored.get(name) != mine.get(name):
                raise ValueError(f"{name}: the checkpoint in {path.parent} was made with "
                                 f"{name}={stored.get(name)!r}; got {mine.get(name)!r} (resume needs the same run)")
        leaves, treedef = jax.tree_util.tree_flatten((template.params, template.opt_state))
        restored = []
        for i, leaf in enumerate(leaves):
            value = saved[f"leaf_{i}"]
            if value.shape != leaf.shape or value.dtype != leaf.dtype:
                raise ValueError(f"checkpoint: leaf {i} is {value.dtype}{value.shape}; the model "
                                 f"expects {leaf.dtype}{leaf.shape}")
            restored.append(jnp.asarray(value))
        params, opt_state = jax.tree_util.tree_unflatten(treedef, restored)
        extra = {"key": jax.random.wrap_key_data(jnp.asarray(saved["key"])),
                 "epoch": int(saved["epoch"]), "position": int(saved["position"]),
                 "elapsed": float(saved["elapsed"])}
        return TrainState(params, opt_state, jnp.asarray(saved["step"])), extra


def load_trained(workdir: str | os.PathLike) -> tuple[TrainConfig, nn.Layer, Any]:
    """``(config, model, params)`` of the run whose checkpoint is in ``workdir`` (a named
    model of ``jaxcnn.models``), e.g. to evaluate it again: ``model.apply(params, x)``."""
    path = Path(workdir) / CHECKPOINT
    with np.load(path) as saved:
        config = TrainConfig(**json.loads(str(saved["config"]))).resolved()
    model = models.build(config.model, impl=config.impl)
    params, _ = model.init(jax.random.key(0), (config.batch_size, *models.INPUT_SHAPES[config.model]))
    optimizer, _ = make_optimizer(config, 1)
    template = TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))
    return config, model, load_checkpoint(path, template, config)[0].params


def _rewrite_metrics(path: Path, last_step: int) -> None:
    """Keep the metric lines up to ``last_step`` (a resumed run rewrites what came after)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and json.loads(line)["step"] <= last_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the run

def _write_lines(path: Path, records: list[dict]) -> None:
    with path.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def _progress(config: TrainConfig, total: int, start: int) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, disable=not config.progress, unit="step",
                dynamic_ncols=True, file=sys.stderr, desc=f"{config.dataset} {config.model}")


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, *,
                       dataset: data.Dataset | None = None) -> dict:
    """Train ``config.model`` on ``config.dataset`` (or the given ``dataset``) in ``workdir``.

    Returns the report (also written to ``workdir/report.json``): ``test_accuracy``,
    ``test_loss``, ``wall_time_s``, ``examples_per_s``, ``steps``, ``params``, ... A run
    stopped by ``halt_after`` returns ``{"halted_at": step, ...}`` and keeps its checkpoint.
    Raises ``NonFiniteLossError`` when the loss stops being finite (the checkpoint of the last
    good step survives).
    """
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    config = config.resolved()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config) if dataset is None else dataset
    x_train, y_train = dataset.x_train, dataset.y_train
    if config.train_subset is not None:
        x_train, y_train = x_train[:config.train_subset], y_train[:config.train_subset]
    n, batch_size = len(x_train), config.batch_size
    if batch_size > n:
        raise ValueError(f"batch_size: expected at most the {n} training examples; got {batch_size}")
    steps_per_epoch = n // batch_size
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    dtype = jnp.dtype(config.dtype)

    model = models.build(config.model, dataset.num_classes, impl=config.impl)
    root_key = jax.random.key(config.seed)
    init_key, _, _ = jax.random.split(root_key, 3)
    params, _ = model.init(init_key, (batch_size, *dataset.input_shape))
    optimizer, schedule = make_optimizer(config, total)
    state = TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))
    checkpoint, metrics_path = workdir / CHECKPOINT, workdir / "metrics.jsonl"
    elapsed_before = 0.0
    if config.resume and checkpoint.exists():
        state, extra = load_checkpoint(checkpoint, state, config)
        root_key, elapsed_before = extra["key"], extra["elapsed"]
        _rewrite_metrics(metrics_path, int(state.step))
        print(f"resuming from step {int(state.step)} (epoch {extra['epoch']}, batch {extra['position']})")
    else:
        metrics_path.unlink(missing_ok=True)
        checkpoint.unlink(missing_ok=True)
    _, data_key, train_key = jax.random.split(root_key, 3)

    train_step = make_train_step(model, optimizer, train_key,
                                 augmentation(config.dataset) if config.augment else None, dtype)
    eval_step = make_eval_step(model, dtype)
    eval_every = config.eval_every or steps_per_epoch * max(1, round(total / steps_per_epoch / 20))
    start = int(state.step)
    stop = total if config.halt_after is None else min(total, config.halt_after)
    saved_step, pending, order, order_epoch = start, [], None, -1
    startup_s, loop_start, last_eval = None, None, None
    bar = _progress(config, stop, start)
    try:
        for step in range(start, stop):
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = data.epoch_permutation(data_key, epoch, n), epoch
            index = order[position * batch_size:(position + 1) * batch_size]
            state, metrics = train_step(state, x_train[index], y_train[index])
            pending.append((step + 1, epoch, metrics))
            done = step + 1
            if startup_s is None:  # data, init, compilation, one step: kept out of the throughput
                jax.block_until_ready(metrics)
                startup_s, loop_start = time.perf_counter() - wall_start, time.perf_counter()
            boundary = {"eval": done % eval_every == 0 or done == total,
                        "save": done % config.checkpoint_every == 0 or done == stop}
            if not (done % config.log_every == 0 or any(boundary.values())):
                continue
            rate = (done - start - 1) * batch_size / max(time.perf_counter() - loop_start, 1e-9)
            records = _flush(pending, schedule, rate, saved_step, checkpoint)
            pending = []
            _write_lines(metrics_path, records)
            bar.update(len(records))
            bar.set_postfix(loss=f"{records[-1]['loss']:.4f}", acc=f"{records[-1]['accuracy']:.3f}",
                            ex_s=f"{rate:.0f}")
            if boundary["eval"]:
                last_eval = {"step": done, "epoch": done / steps_per_epoch,
                             **evaluate(eval_step, state.params, dataset.x_test, dataset.y_test,
                                        config.eval_batch_size)}
                _write_lines(metrics_path, [{"kind": "eval", **last_eval}])
                bar.write(f"step {done}: test accuracy {last_eval['test_accuracy']:.4f}")
            if boundary["save"]:
                train_time = elapsed_before + time.perf_counter() - wall_start
                save_checkpoint(checkpoint, state, key=root_key, epoch=done // steps_per_epoch,
                                position=done % steps_per_epoch, elapsed=train_time, config=config)
                saved_step = done
    finally:
        bar.close()
    wall = time.perf_counter() - wall_start
    steps_run = stop - start
    timing = {"wall_time_s": wall, "train_time_s": elapsed_before + wall, "startup_s": startup_s,
              "cpu_time_s": time.process_time() - cpu_start,
              "examples_per_s": ((steps_run - 1) * batch_size / (time.perf_counter() - loop_start)
                                 if steps_run > 1 else None)}
    if stop < total:
        return {"halted_at": stop, "steps": total, **timing}
    if last_eval is None:  # resumed a finished run: nothing trained, evaluate what was saved
        last_eval = {"step": total, "epoch": total / steps_per_epoch,
                     **evaluate(eval_step, state.params, dataset.x_test, dataset.y_test, config.eval_batch_size)}
    report = _report(config, dataset, model, state, last_eval, total, steps_per_epoch, timing,
                     train_step._cache_size())
    _atomic_json(workdir / "report.json", report)
    print(f"{config.dataset} {config.model} seed {config.seed}: test accuracy "
          f"{report['test_accuracy']:.4f} after {total} steps, {report['train_time_s']:.1f} s, "
          f"{report['examples_per_s'] or 0:.0f} examples/s")
    if config.plots:
        from jaxcnn import plots
        report["plots"] = plots.write_all(workdir, model, state.params, dataset, metrics_path)
    return report


def _flush(pending: list, schedule: Callable, rate: float, saved_step: int, checkpoint: Path) -> list[dict]:
    """Fetch the buffered step metrics (one host sync) and stop on a non-finite loss."""
    fetched = jax.device_get([m for _, _, m in pending])
    records = []
    for (step, epoch, _), m in zip(pending, fetched):
        if not bool(m["finite"]):
            raise NonFiniteLossError(
                f"loss: non-finite loss {float(m['loss'])} (or gradient) at step {step}; training "
                f"stopped. The last good checkpoint (step {saved_step}) is kept in {checkpoint}; "
                f"lower --lr or check the data")
        with jax.numpy_dtype_promotion("standard"):  # optax's schedules promote implicitly
            lr = float(schedule(step - 1))
        records.append({"kind": "train", "step": step, "epoch": epoch, "loss": float(m["loss"]),
                        "accuracy": float(m["accuracy"]), "lr": lr,
                        "examples_per_s": rate})
    return records


def _report(config: TrainConfig, dataset: data.Dataset, model: nn.Layer, state: TrainState,
            last_eval: dict, total: int, steps_per_epoch: int, timing: dict, compilations: int) -> dict:
    return {"dataset": config.dataset, "model": config.model, "seed": config.seed, "impl": config.impl,
            "dtype": config.dtype, "test_accuracy": last_eval["test_accuracy"],
            "test_loss": last_eval["test_loss"], "steps": total, "epochs": total / steps_per_epoch,
            "batch_size": config.batch_size, "params": nn.count_params(state.params), **timing,
            "train_step_compilations": compilations, "device": jax.devices()[0].device_kind,
            "cpu_count": os.cpu_count(), "jax": jax.__version__, "config": dataclasses.asdict(config)}


def _atomic_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- CLI

def parse_args(argv: list[str] | None) -> tuple[TrainConfig, str | None]:
    parser = argparse.ArgumentParser(prog="jaxcnn train", description="Train a named model; "
                                     "defaults per dataset: " + json.dumps(DEFAULTS))
    parser.add_argument("--dataset", choices=DATASET_NAMES, default="mnist1d")
    parser.add_argument("--model", choices=tuple(models.MODELS))
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int)
    length.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--schedule", choices=SCHEDULES, default="onecycle")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--impl", choices=_args.IMPLS, default="lax", help="every convolution's impl")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (params stay float32)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--workdir", help="default: runs/<dataset>-<model>-seed<k>")
    parser.add_argument("--data-dir")
    parser.add_argument("--resume", action="store_true", help="continue from workdir's checkpoint")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--no-plots", dest="plots", action="store_false")
    args = vars(parser.parse_args(argv))
    workdir = args.pop("workdir")
    return TrainConfig(**args), workdir


def main(argv: list[str] | None = None) -> int:
    """``jaxcnn train [flags]``: prints and writes the report; 3 on a non-finite loss."""
    config, workdir = parse_args(argv)
    try:
        config = config.resolved()
        workdir = workdir or f"runs/{config.dataset}-{config.model}-seed{config.seed}"
        train_and_evaluate(config, workdir)
    except NonFiniteLossError as err:
        print(f"jaxcnn train: {err}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as err:
        print(f"jaxcnn train: error: {err}", file=sys.stderr)
        return 2
    return 0
