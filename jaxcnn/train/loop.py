"""``jaxcnn train``: an optax training run with exact resume, metrics and plots.

The run reads as Flax's MNIST example: ``train_step`` and ``eval_step`` are pure and
jit-compiled (the train step once, with its state buffers donated), and one entry point,
``train_and_evaluate(config, workdir)``, returns the final report.

Everything a step consumes is a function of ``(config, step)``: the batch is
``epoch_permutation(data_key, step // steps_per_epoch, N)`` sliced at ``step %
steps_per_epoch``, and the augmentation / dropout key is ``fold_in(train_key, step)``. A
checkpoint (params, optimizer state, step, keys, epoch and position) therefore resumes the
run bit for bit. Checkpoints are written atomically (``jaxcnn.train.checkpoint``), and only after
the losses up to their step were seen finite. SIGINT or SIGTERM stops the run after the step
it is in, with its checkpoint written (``jaxcnn.train.interrupt``).

Files in the workdir: ``checkpoint.npz``, ``metrics.jsonl`` (one JSON object per train step
and per evaluation), ``report.json``, and the plots of ``jaxcnn.train.plots``.

On several devices or processes (``config.devices``, ``jaxcnn.distributed``) the same run is
data parallel: the same global batches, split over the devices; parameters and optimizer
state replicated; the files written by process 0 only. The checkpoint holds host copies of
the replicated state, so it resumes on any device or process count.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import data, distributed, models, nn
from jaxcnn._compat import jit_cache_size
from jaxcnn._files import atomic_write
from jaxcnn.train.config import Plan, TrainConfig, augmentation, make_optimizer, make_plan
from jaxcnn.train.interrupt import TrainingInterrupted, stop_requests
from jaxcnn.train.resume import (CHECKPOINT, METRICS, TrainState, check_workdir, initial_state, resume_or_start,
                                 save_checkpoint, settle)


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


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example ``−log softmax(logits)[label]``, in float32 at least."""
    logits = logits.astype(np.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


# ----------------------------------------------------------------------------- steps

def micro_batched(value_and_grad: Callable, params: Any, x: jax.Array, y: jax.Array,
                  key: jax.Array, micro_batches: int = 1) -> tuple[tuple[jax.Array, jax.Array], Any]:
    """``value_and_grad(params, x, y, key) -> ((mean loss, per-example outputs), grads)`` over
    the batch in ``micro_batches`` equal slices, one program: the mean of the slices' losses
    and gradients, the per-example outputs back in the batch's order.

    Slice ``i`` holds the examples ``i, i + k, i + 2k, ...`` (so a batch sharded in blocks
    over devices gives every device an equal share of each slice) and draws dropout from
    ``fold_in(key, i)``. The slices run unrolled (XLA's CPU loops ran them 2–6× slower). The
    result equals the one-slice step's up to float rounding wherever no statistic crosses
    examples (jaxcnn's models normalise per example); the dropout masks differ, drawn from the
    same distribution. Smaller slices keep each layer's activations in cache: fashion-resnet's
    step 0.75× on a 2-core CPU (BENCHMARKS.md).
    """
    if micro_batches == 1:
        return value_and_grad(params, x, y, key)
    slices = lambda a: a.reshape(a.shape[0] // micro_batches, micro_batches, *a.shape[1:])
    xs, ys = slices(x), slices(y)
    total, outputs = None, []
    for i in range(micro_batches):
        (loss, out), grads = value_and_grad(params, xs[:, i], ys[:, i], jax.random.fold_in(key, i))
        total = (loss, grads) if total is None else jax.tree_util.tree_map(jnp.add, total, (loss, grads))
        outputs.append(out)
    loss, grads = jax.tree_util.tree_map(lambda a: a / micro_batches, total)
    out = jnp.stack(outputs, axis=1)
    return (loss, out.reshape(x.shape[0], *out.shape[2:])), grads


def train_step(state: TrainState, x: jax.Array, y: jax.Array, *, model: nn.Layer,
               optimizer: optax.GradientTransformation, train_key: jax.Array,
               augment: Callable | None, dtype: Any, micro_batches: int = 1) -> tuple[TrainState, dict]:
    """One optimizer step on the batch ``(x, y)``: ``(state, metrics)``, pure.

    Augmentation and dropout draw from ``fold_in(train_key, state.step)``. A step whose loss
    or gradient is not finite leaves params and optimizer state unchanged
    (``metrics["finite"]`` is false): the loop stops there, with the last good state. With
    ``micro_batches`` > 1 the gradient is summed over slices of the batch (``micro_batched``).
    """
    aug_key, dropout_key = jax.random.split(jax.random.fold_in(train_key, state.step))
    if augment is not None:
        x = augment(aug_key, x)
    x = x.astype(dtype)

    def loss_fn(params: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = model.apply(params, x, train=True, key=key)
        return jnp.mean(cross_entropy(logits, y)), logits
    (loss, logits), grads = micro_batched(jax.value_and_grad(loss_fn, has_aux=True), state.params,
                                          x, y, dropout_key, micro_batches)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam: float ** int32 step count
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    state = TrainState(keep(params, state.params), keep(opt_state, state.opt_state), state.step + 1)
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1).astype(y.dtype) == y).astype(jnp.float32))
    return state, {"loss": loss.astype(jnp.float32), "accuracy": accuracy, "finite": finite}


def eval_step(params: Any, x: jax.Array, y: jax.Array, mask: jax.Array, *, model: nn.Layer,
              dtype: Any) -> dict:
    """``{"loss": summed loss, "correct": count}`` over the rows where ``mask`` is true, pure."""
    logits = model.apply(params, x.astype(dtype))
    loss = jnp.sum(jnp.where(mask, cross_entropy(logits, y), 0.0))
    return {"loss": loss, "correct": jnp.sum(mask & (jnp.argmax(logits, axis=-1).astype(y.dtype) == y))}


def make_train_step(model: nn.Layer, optimizer: optax.GradientTransformation, train_key: jax.Array,
                    augment: Callable | None, dtype: Any,
                    parallel: distributed.DataParallel | None = None, micro_batches: int = 1) -> Callable:
    """``train_step`` of this run, jit-compiled once: ``(state, x, y) -> (state, metrics)``,
    ``state`` donated. With ``parallel``: ``x``, ``y`` sharded along its mesh, ``state`` and
    the metrics replicated (XLA inserts the gradient's all-reduce)."""
    if parallel is None:
        return jax.jit(functools.partial(train_step, model=model, optimizer=optimizer, train_key=train_key,
                                         augment=augment, dtype=dtype, micro_batches=micro_batches),
                       donate_argnums=(0,))
    step = functools.partial(train_step, model=model, optimizer=optimizer,
                             train_key=parallel.replicate(train_key), augment=augment, dtype=dtype,
                             micro_batches=micro_batches)
    batch, replicated = parallel.batch_sharding, parallel.replicated
    return jax.jit(step, in_shardings=(replicated, batch, batch), out_shardings=(replicated, replicated),
                   donate_argnums=(0,))


def make_eval_step(model: nn.Layer, dtype: Any, parallel: distributed.DataParallel | None = None) -> Callable:
    """``eval_step`` of this run, jit-compiled: ``(params, x, y, mask) -> metrics``; with
    ``parallel``, the rows sharded along its mesh, ``params`` and the sums replicated."""
    step = functools.partial(eval_step, model=model, dtype=dtype)
    if parallel is None:
        return jax.jit(step)
    batch = parallel.batch_sharding
    return jax.jit(step, in_shardings=(parallel.replicated, batch, batch, batch),
                   out_shardings=parallel.replicated)


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    pad = rows - len(array)
    return np.concatenate([array, np.zeros((pad, *array.shape[1:]), array.dtype)]) if pad else array


def evaluate(eval_step: Callable, params: Any, x: np.ndarray, y: np.ndarray, batch_size: int,
             parallel: distributed.DataParallel | None = None) -> dict:
    """Mean loss and accuracy over ``(x, y)``; the last batch padded (one compilation). With
    ``parallel``, batches padded to a multiple of its devices and this process's rows placed
    (``eval_step`` made with the same ``parallel``)."""
    batch_size = min(batch_size, len(x))
    if parallel is not None:
        batch_size = -(-batch_size // parallel.size) * parallel.size
        rows = parallel.process_rows(batch_size)
        place = lambda array: parallel.batch(array[rows], batch_size)
    else:
        place = lambda array: array
    loss, correct = 0.0, 0
    for xb, yb in data.batches(0, x, y, batch_size, shuffle=False, drop_last=False):
        mask = np.arange(batch_size) < len(xb)
        metrics = eval_step(params, *map(place, (_pad_rows(xb, batch_size), _pad_rows(yb, batch_size), mask)))
        loss, correct = loss + float(metrics["loss"]), correct + int(metrics["correct"])
    return {"test_loss": loss / len(x), "test_accuracy": correct / len(x)}


def train_epoch(train_step: Callable, state: TrainState, batches: Iterator[tuple[Any, Any]],
                first_step: int, after_step: Callable[[int, TrainState, dict], None]) -> TrainState:
    """``train_step`` over ``batches``, numbered from ``first_step``; ``after_step(done, state,
    metrics)`` after each (logging, evaluation, checkpoints)."""
    for step, (x, y) in enumerate(batches, first_step):
        state, metrics = train_step(state, x, y)
        after_step(step + 1, state, metrics)
    return state


# ----------------------------------------------------------------------------- the run

@dataclasses.dataclass
class Monitor:
    """What happens between steps: metrics stay on the device until every ``log_every``-th
    step and the first (one host sync), the test set is evaluated every ``eval_every`` steps, a checkpoint
    is written every ``checkpoint_every`` steps once the losses up to it were seen finite, and
    after the step in which ``stop_requested()`` turned true (then ``TrainingInterrupted``).
    Only the writing process (``distributed.is_writer``) writes files and shows progress;
    every process evaluates (a collective)."""

    config: TrainConfig
    workdir: Path
    plan: Plan
    start: int  # the first step of this process (> 0 when resumed)
    schedule: Callable  # step -> learning rate
    test: Callable  # params -> {"test_loss", "test_accuracy"}
    root_key: jax.Array
    elapsed_before: float  # seconds trained before a resume
    wall_start: float
    writer: bool = True
    stop_requested: Callable[[], str | None] = lambda: None  # the signal's name, once one came
    pending: list = dataclasses.field(default_factory=list)
    last_eval: dict | None = None
    startup_s: float | None = None
    loop_start: float | None = None
    eval_s: float = 0.0  # evaluating since loop_start: kept out of the throughput

    def __post_init__(self) -> None:
        self.saved_step = self.start
        self.bar = _progress(self.config, self.plan.stop, self.start, self.writer)

    def after_step(self, done: int, state: TrainState, metrics: dict) -> None:
        plan = self.plan
        self.pending.append((done, (done - 1) // plan.steps_per_epoch, metrics))
        first = self.startup_s is None
        if first:  # data, init, compilation, one step and its logging: kept out of the throughput
            jax.block_until_ready(metrics)
            self.startup_s = time.perf_counter() - self.wall_start
        evaluate_now = done % plan.eval_every == 0 or done == plan.total
        stop = self.stop_requested()
        save_now = done % self.config.checkpoint_every == 0 or done == plan.stop or stop
        if first or done % self.config.log_every == 0 or evaluate_now or save_now:
            self.log()
        if evaluate_now:
            eval_start = time.perf_counter()
            self.last_eval = {"step": done, "epoch": done / plan.steps_per_epoch, **self.test(state.params)}
            self.eval_s += (time.perf_counter() - eval_start) if self.loop_start is not None else 0.0
            self._write([{"kind": "eval", **self.last_eval}])
            if self.writer:
                self.bar.write(f"step {done}: test accuracy {self.last_eval['test_accuracy']:.4f}")
        if save_now and self.writer:
            save_checkpoint(self.workdir / CHECKPOINT, state, key=self.root_key,
                            epoch=done // plan.steps_per_epoch, position=done % plan.steps_per_epoch,
                            elapsed=self.elapsed_before + time.perf_counter() - self.wall_start,
                            config=self.config)
        if save_now:
            self.saved_step = done
        if stop:
            raise TrainingInterrupted(done, self.workdir, stop)
        if first:
            self.loop_start = time.perf_counter()

    def rate(self, done: int) -> float:
        """Training examples per second over the steps after the first, up to ``done`` (0
        before), their results ready, the evaluations' time left out."""
        if self.loop_start is None or done <= self.start + 1:
            return 0.0
        seconds = time.perf_counter() - self.loop_start - self.eval_s
        return (done - self.start - 1) * self.plan.batch_size / max(seconds, 1e-9)

    def log(self) -> None:
        jax.block_until_ready(self.pending[-1][2])  # the time of the steps, not of their dispatch
        rate = self.rate(self.pending[-1][0])
        records = _flush(self.pending, self.schedule, rate, self.saved_step, self.workdir / CHECKPOINT)
        self.pending = []
        self._write(records)
        self.bar.update(len(records))
        self.bar.set_postfix(loss=f"{records[-1]['loss']:.4f}", acc=f"{records[-1]['accuracy']:.3f}",
                             ex_s=f"{rate:.0f}")

    def _write(self, records: list[dict]) -> None:
        if self.writer:
            with (self.workdir / METRICS).open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)

    def timing(self, cpu_start: float) -> dict:
        wall = time.perf_counter() - self.wall_start
        steps_run = self.plan.stop - self.start
        return {"wall_time_s": wall, "train_time_s": self.elapsed_before + wall, "startup_s": self.startup_s,
                "cpu_time_s": time.process_time() - cpu_start,
                "examples_per_s": self.rate(self.plan.stop) if steps_run > 1 else None}


def _progress(config: TrainConfig, total: int, start: int, writer: bool) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, disable=not (config.progress and writer), unit="step",
                dynamic_ncols=True, file=sys.stderr, desc=f"{config.dataset} {config.model}")


def epochs(data_key: jax.Array, x: np.ndarray, y: np.ndarray, plan: Plan, start: int,
           rows: slice | None = None) -> Iterator[tuple[int, Iterator]]:
    """``(first step, batches)`` of each epoch from step ``start`` to ``plan.stop``: the
    batches of ``data.batches`` for that epoch, from the step's position on (only ``rows``
    of each: this process's part)."""
    for epoch in range(start // plan.steps_per_epoch, -(-plan.stop // plan.steps_per_epoch)):
        first_step = max(start, epoch * plan.steps_per_epoch)
        batches = data.batches(data_key, x, y, plan.batch_size, epoch=epoch, rows=rows)
        yield first_step, itertools.islice(batches, first_step - epoch * plan.steps_per_epoch,
                                           min(plan.stop - epoch * plan.steps_per_epoch, plan.steps_per_epoch))


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, *,
                       dataset: data.Dataset | None = None) -> dict:
    """Train ``config.model`` on ``config.dataset`` (or the given ``dataset``) in ``workdir``.

    Returns the report (also written to ``workdir/report.json``): ``test_accuracy``,
    ``test_loss``, ``wall_time_s``, ``examples_per_s``, ``steps``, ``params``, ``layout``
    (``"channels_last"`` or ``"channels_first"``: the settled ``channels_last``), ... A run
    stopped by ``halt_after`` returns ``{"halted_at": step, ...}`` and keeps its checkpoint.
    Raises ``NonFiniteLossError`` when the loss stops being finite (the checkpoint of the last
    good step survives), ``TrainingInterrupted`` after the step in which SIGINT or SIGTERM came
    (its checkpoint written; a second signal raises ``KeyboardInterrupt`` at once),
    ``FileExistsError`` for a fresh run into a workdir holding one (``overwrite`` replaces it)
    and ``FileNotFoundError`` for ``resume`` with no checkpoint there.
    """
    with stop_requests() as stop_requested:
        return _train_and_evaluate(config, Path(workdir), dataset, stop_requested)


def _train_and_evaluate(config: TrainConfig, workdir: Path, dataset: data.Dataset | None,
                        stop_requested: Callable[[], str | None]) -> dict:
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    config = config.resolved()
    distributed.initialize(config.coordinator, config.num_processes, config.process_id)
    parallel = distributed.data_parallel(config.devices)
    parallel.check_batch(config.batch_size, config.micro_batches)
    stored = check_workdir(config, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config) if dataset is None else dataset
    x_train, y_train = dataset.x_train[:config.train_subset], dataset.y_train[:config.train_subset]
    plan = make_plan(config, len(x_train))
    config = settle(config, stored, plan, workdir)
    model = models.build(config.model, dataset.num_classes, impl=config.impl, channels_last=config.channels_last)
    optimizer, schedule = make_optimizer(config, config.schedule_steps)
    state = initial_state(config, model, optimizer, dataset.input_shape)
    state, root_key, elapsed_before = resume_or_start(config, workdir, state, plan)
    state = parallel.replicate(state)
    _, data_key, train_key = jax.random.split(root_key, 3)
    dtype, start = jnp.dtype(config.dtype), int(state.step)
    train_step = make_train_step(model, optimizer, train_key,
                                 augmentation(config.dataset, config.augment) if config.augment else None, dtype, parallel,
                                 config.micro_batches)
    test = functools.partial(evaluate, make_eval_step(model, dtype, parallel), x=dataset.x_test,
                             y=dataset.y_test, batch_size=config.eval_batch_size, parallel=parallel)
    monitor = Monitor(config, workdir, plan, start, schedule, test, root_key, elapsed_before, wall_start,
                      distributed.is_writer(), stop_requested)
    place = lambda batch: tuple(parallel.batch(array, plan.batch_size) for array in batch)
    try:
        for first_step, batches in epochs(data_key, x_train, y_train, plan, start,
                                          parallel.process_rows(plan.batch_size)):
            state = train_epoch(train_step, state, map(place, batches), first_step, monitor.after_step)
    finally:
        monitor.bar.close()
    if stop_requested():  # came during the last step's evaluation: its checkpoint is written
        raise TrainingInterrupted(plan.stop, workdir, stop_requested())
    timing = monitor.timing(cpu_start)
    if plan.stop < plan.total:
        return {"halted_at": plan.stop, "steps": plan.total, **timing}
    last_eval = monitor.last_eval or {"step": plan.total, "epoch": plan.total / plan.steps_per_epoch,
                                      **test(state.params)}  # resumed a finished run: evaluate it
    report = _report(config, dataset, state, last_eval, plan, timing, jit_cache_size(train_step), parallel)
    return _finish(config, workdir, report, model, state, dataset) if distributed.is_writer() else report


def _finish(config: TrainConfig, workdir: Path, report: dict, model: nn.Layer, state: TrainState,
            dataset: data.Dataset) -> dict:
    """Write ``report.json``, print the summary line, draw the plots (from host copies of
    the parameters, so that only this process computes them)."""
    atomic_write(workdir / "report.json", json.dumps(report, indent=2) + "\n")
    print(f"{config.dataset} {config.model} seed {config.seed}: test accuracy "
          f"{report['test_accuracy']:.4f} after {report['steps']} steps, {report['train_time_s']:.1f} s, "
          f"{report['examples_per_s'] or 0:.0f} examples/s")
    if config.plots:
        from jaxcnn.train import plots
        params = distributed.host(state.params)
        if config.channels_last:  # the plots read kernels and maps channels first: the twin draws them
            model = models.build(config.model, dataset.num_classes, impl=config.impl, channels_last=False)
            params = models.channels_first_params(params)
        report["plots"] = plots.write_all(workdir, model, params, dataset, workdir / METRICS)
    return report


def _flush(pending: list, schedule: Callable, rate: float, saved_step: int, checkpoint_path: Path) -> list[dict]:
    """Fetch the buffered step metrics (one host sync) and stop on a non-finite loss."""
    fetched = jax.device_get([m for _, _, m in pending])
    records = []
    for (step, epoch, _), m in zip(pending, fetched):
        if not bool(m["finite"]):
            raise NonFiniteLossError(
                f"loss: non-finite loss {float(m['loss'])} (or gradient) at step {step}; training "
                f"stopped. The last good checkpoint (step {saved_step}) is kept in {checkpoint_path}; "
                f"lower --lr or check the data")
        with jax.numpy_dtype_promotion("standard"):  # optax's schedules promote implicitly
            lr = float(schedule(step - 1))
        records.append({"kind": "train", "step": step, "epoch": epoch, "loss": float(m["loss"]),
                        "accuracy": float(m["accuracy"]), "lr": lr,
                        "examples_per_s": rate})
    return records


def _report(config: TrainConfig, dataset: data.Dataset, state: TrainState, last_eval: dict, plan: Plan,
            timing: dict, compilations: int, parallel: distributed.DataParallel) -> dict:
    return {"dataset": config.dataset, "model": config.model, "seed": config.seed, "impl": config.impl,
            "dtype": config.dtype, "layout": "channels_last" if config.channels_last else "channels_first",
            "test_accuracy": last_eval["test_accuracy"],
            "test_loss": last_eval["test_loss"], "steps": plan.total, "epochs": plan.total / plan.steps_per_epoch,
            "batch_size": config.batch_size, "params": nn.count_params(state.params), **timing,
            "train_step_compilations": compilations, "device": jax.devices()[0].device_kind,
            "devices": parallel.size, "processes": jax.process_count(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__, "config": dataclasses.asdict(config)}
