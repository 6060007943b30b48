r"""``jaxcnn bench --train``: the training step of every named model, end to end.

One optimizer step (cross-entropy of the model's logits, its gradient, AdamW) of each model of
``TRAIN_MODELS`` at its training batch size, float32, timed in interleaved rounds
(``timing.time_interleaved``: medians after a first call and a warm-up; each turn runs two steps
of a contender and times the second, which follows its own step as in a training loop, not
another contender's) for each contender:

- ``jaxcnn lax`` / ``jaxcnn manual``: ``jaxcnn.models`` with that ``impl``, channels first
  and (``channels_last``) channels last;
- ``jax``: the same network, the same parameters, with every jaxcnn op replaced by its
  ``jaxcnn.reference`` twin (plain ``lax``, differentiated by JAX autodiff; ``plain_lax_ops``);
- ``flax nnx``: the model in stock Flax NNX (``jaxcnn.bench.flax_models``: ``nnx.Conv``,
  ``nnx.Linear``, ``nnx.value_and_grad``, ``optax.adamw``, ``nnx.jit``; channels last, Flax's
  layout), the JAX baseline a Flax user has;
- ``torch eager`` / ``torch eager channels_last`` / ``torch compiled channels_last``: the model
  as a PyTorch user writes it (``jaxcnn.bench.torch_models``: ``nn.Module``\ s, the module and
  its batch in ``channels_last`` memory format, AdamW), eager and under ``torch.compile``
  (inductor; the 1D model has no channels-last format: ``torch eager``, ``torch compiled``);
- ``… ×k``: the same step with its gradient summed over ``k`` slices of the batch (k = 2, 4,
  8; jaxcnn: ``jaxcnn.train.micro_batched``, one program; PyTorch: ``k`` backward passes into
  the same gradients, then one optimizer step), for ``jaxcnn lax`` in its faster layout and
  for each PyTorch contender in channels-last format.

Every contender's **first step** is reported apart from its steady-state median: for the
jaxcnn and ``jax`` contenders the ahead-of-time lowering and compilation of the step plus its
first call; for Flax, ``nnx.jit``'s first call; for ``torch.compile``, its first call
(dynamo and inductor, forward and backward: inductor's on-disk cache, warm after a first run,
shortens it). jaxcnn's native kernels are built or loaded once, before anything is timed (once
per machine: the build is cached). The report (``jaxcnn.bench.train_report``) names the CPU's
vector ISA and the float32 matmul speed of the run, and divides jaxcnn's fastest plain step by
the fastest plain PyTorch step (eager or compiled); micro-batched steps have their own columns.

Beside each JAX contender's time: XLA's compiled temp memory of the step. For the fastest
jaxcnn contender a profile: XLA's per-op trace of its step summed by category
(``jaxcnn.bench.profile``) and the compiled program's op census. The tests check that every
contender computes the same loss and gradients from the same weights.

On a machine shared with other work, PyTorch's OpenMP threads spin while they wait (a 3 ms
step measured 1.5 s under a load of 18 on 2 cores); run with ``OMP_WAIT_POLICY=PASSIVE``
there, and with the default on a quiet machine. The report records the policy.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import statistics
import sys
import time
from functools import partial
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn import models, reference
from jaxcnn.bench.profile import step_profile
from jaxcnn.bench import train_report
from jaxcnn.bench.train_report import label, side, split_label
from jaxcnn.bench.timing import failure_message, time_interleaved

TRAIN_MODELS = ("mnist1d-resnet", "fashion-cnn", "fashion-resnet", "clips-cnn3d")
BATCH = {"mnist1d-resnet": 100, "fashion-cnn": 128, "fashion-resnet": 128, "clips-cnn3d": 64}
LR, WEIGHT_DECAY = 3e-3, 5e-2
OPS = ("conv", "conv_transpose", "max_pool", "avg_pool", "global_avg_pool")


@contextlib.contextmanager
def plain_lax_ops() -> Iterator[None]:
    """While tracing inside, ``jaxcnn.conv`` & co. are ``jaxcnn.reference``'s (the layers look
    them up at call time): the same network in plain lax, differentiated by JAX autodiff."""
    saved = {name: getattr(jaxcnn, name) for name in OPS}
    try:
        for name in OPS:
            setattr(jaxcnn, name, getattr(reference, name))
        yield
    finally:
        for name, op in saved.items():
            setattr(jaxcnn, name, op)


def batch_data(name: str, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random float32 batch of the model's input shape and integer labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *models.INPUT_SHAPES[name])).astype(np.float32)
    classes = models.NUM_CLASSES[models.DATASETS[name]]
    return x, rng.integers(0, classes, batch).astype(np.int32)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    log_p = jax.nn.log_softmax(logits.astype(np.promote_types(logits.dtype, np.float32)))
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))


def jax_loss(name: str, impl: str, channels_last: bool = False) -> tuple[Callable, Any]:
    """``(loss(params, x, y, key, train), params)`` of the model; ``impl`` "lax", "manual" or
    "jax" (the model built with impl="lax", traced under ``plain_lax_ops``: call the loss
    inside that context)."""
    model = models.build(name, impl="lax" if impl == "jax" else impl, channels_last=channels_last)
    params, _ = model.init(jax.random.key(0), (2, *models.INPUT_SHAPES[name]))

    def loss(params, x, y, key, train=True):
        return _cross_entropy(model.apply(params, x, train=train, key=key), y)
    return loss, params


def jax_step(name: str, impl: str, x: np.ndarray, y: np.ndarray, channels_last: bool = False,
             micro_batches: int = 1) -> dict[str, Any]:
    """One contender's step (value-and-grad over ``micro_batches`` slices, and AdamW), lowered
    and compiled ahead of time: ``{"compiled": {"step": (compiled, args)}, "temp_bytes": XLA's
    temp memory of it, "compile_s": the seconds its tracing, lowering and compilation took,
    "step": the step function itself (to compile for other shardings)}``."""
    import optax
    from jaxcnn.train import micro_batched
    loss, params = jax_loss(name, impl, channels_last)
    optimizer = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)
    # micro_batched's per-example output: the labels, which cost nothing to put back in order
    value_and_grad = jax.value_and_grad(lambda p, x, y, key: (loss(p, x, y, key), y), has_aux=True)

    def step(params, opt_state, x, y, key):
        (value, _), grads = micro_batched(value_and_grad, params, x, y, key, micro_batches)
        with jax.numpy_dtype_promotion("standard"):   # optax's Adam: float ** int32 count
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    args = (params, opt_state, jnp.asarray(x), jnp.asarray(y), jax.random.key(1))
    jax.block_until_ready(args)
    context = plain_lax_ops() if impl == "jax" else contextlib.nullcontext()
    with context:
        start = time.perf_counter()
        compiled = jax.jit(step).lower(*args).compile()
        compile_s = time.perf_counter() - start
    try:
        stats = compiled.memory_analysis()
        temp = None if stats is None else int(stats.temp_size_in_bytes)
    except Exception:   # a backend without memory analysis
        temp = None
    return {"compiled": {"step": (compiled, args)}, "temp_bytes": temp, "compile_s": compile_s,
            "step": step}


# ----------------------------------------------------------------------------- the run

def _census(compiled: Any) -> dict[str, int]:
    """How many of each costly op the compiled program runs."""
    text = compiled.as_text()
    census = {op: len(re.findall(rf"= [^=]*? {op}\(", text))
              for op in ("convolution", "dot", "while", "reduce-window", "select-and-scatter")}
    census["native"] = len(re.findall(r'custom_call_target="jaxcnn_', text))   # jaxcnn._conv.native
    return census



def torch_variants(name: str) -> list[tuple[bool, bool, bool]]:
    """The PyTorch contenders of a model: ``(compiled, channels_last, micro-batched too)``:
    eager in both memory formats, compiled in channels-last format (1D has only the
    contiguous one), the channels-last ones also over micro-batches."""
    if len(models.INPUT_SHAPES[name]) == 2:
        return [(False, False, True), (True, False, True)]
    return [(False, False, False), (False, True, True), (True, True, True)]


def _missing(module: str, extra: str) -> str | None:
    """Why a contender that needs ``module`` cannot run (the extra that has it), or None."""
    if importlib.util.find_spec(module) is None:
        return f"needs the '{extra}' extra, missing {module}: pip install 'jaxcnn[{extra}]'"
    return None


def bench_model(name: str, repeats: int, impls: Sequence[str] = ("lax", "manual", "jax"),
                torch_modes: Sequence[tuple[bool, bool, bool]] | None = None, flax: bool = True,
                batch: int | None = None,
                min_seconds: float = 1.0, micro_batches: Sequence[int] = (2, 4, 8)) -> dict[str, Any]:
    """Every contender's step on one model, interleaved; the profile of the fastest jaxcnn one.
    The jaxcnn and ``jax`` contenders run in both layouts where the model takes
    ``channels_last``, ``jaxcnn lax`` also over each of ``micro_batches`` slices (that divides
    the batch) in its faster layout (channels last where the model has one); PyTorch's as
    ``torch_modes`` says (``(compiled, channels_last, micro-batched too)`` each; default
    ``torch_variants(name)``, ``()`` none); stock Flax NNX once (channels last) where ``flax``. A contender that cannot run
    is named with the reason, the others go on: ``skipped`` (a framework not installed) or
    ``failures`` (it raised: a compiler missing, a bug)."""
    batch = batch or BATCH[name]
    x, y = batch_data(name, batch)
    calls: dict[str, tuple[Callable, Callable]] = {}
    temp, failures, skipped, steps, compile_s, first_ms = {}, {}, {}, {}, {}, {}
    layouts = (False, True) if name in models.LAYOUT_MODELS else (False,)
    sliced = [m for m in micro_batches if m > 1 and batch % m == 0]
    configs = [(i, cl, 1) for i in impls for cl in layouts]
    configs += [("lax", layouts[-1], m) for m in sliced if "lax" in impls]
    for impl, channels_last, m in configs:
        key = label((impl if impl == "jax" else f"jaxcnn {impl}") + (" channels_last" if channels_last else ""), m)
        try:
            steps[key] = jax_step(name, impl, x, y, channels_last, m)
        except Exception as err:   # a contender that fails is reported, the others go on
            failures[key] = failure_message(err)
            continue
        compiled, args = steps[key]["compiled"]["step"]
        calls[key] = (lambda c=compiled, a=args: c(*a), jax.block_until_ready)
        temp[key], compile_s[key] = steps[key]["temp_bytes"], steps[key]["compile_s"]
    params = jax_loss(name, "lax")[1]   # channels first: the weights every other framework starts from
    builders: dict[str, Callable[[], Callable]] = {}
    if flax:
        reason = _missing("flax", "interop")
        if reason:
            skipped["flax nnx"] = reason
        else:
            from jaxcnn.bench import flax_models
            builders["flax nnx"] = lambda: flax_models.train_step(name, params, x, y, lr=LR, weight_decay=WEIGHT_DECAY)
    torch_modes = torch_variants(name) if torch_modes is None else torch_modes
    if torch_modes:
        reason = _missing("torch", "torch")
        if reason:
            skipped["torch"] = reason
        else:
            from jaxcnn.bench import torch_models
            torch_models.reset_compiled()   # the compile caches of the models before: not this one's
            for compiled, channels_last, micro in torch_modes:
                family = f"torch {'compiled' if compiled else 'eager'}" + (" channels_last" if channels_last else "")
                for m in [1] + (sliced if micro else []):
                    builders[label(family, m)] = partial(
                        torch_models.train_step, name, params, x, y, channels_last=channels_last,
                        compiled=compiled, micro_batches=m, lr=LR, weight_decay=WEIGHT_DECAY)
    for key, build in builders.items():
        try:
            calls[key] = (build(), jax.block_until_ready if side(key) == "flax" else lambda out: out.item())
        except Exception as err:   # reported, the others go on
            failures[key] = failure_message(err)
    times, _, call_failures = time_interleaved(calls, repeats, min_seconds, first_ms, follow_itself=True)
    failures.update(call_failures)
    ms = {k: statistics.median(v) for k, v in times.items()}
    row = {"model": name, "batch": batch, "ms": ms, "temp_bytes": temp, "failures": failures,
           "skipped": skipped, "compile_s": compile_s,
           "first_step_s": {k: compile_s.get(k, 0.0) + v / 1e3 for k, v in first_ms.items() if k in ms}}
    row.update(fastest(ms))
    if row["fastest_jaxcnn"]:
        row["profile"] = profile(steps[row["fastest_jaxcnn"]]["compiled"], repeats, min_seconds)
    return row


def fastest(ms: dict[str, float]) -> dict[str, Any]:
    """The fastest jaxcnn, PyTorch and Flax contenders among plain steps and among micro-batched
    ones, and the ratios the report leads with: jaxcnn's fastest plain step over PyTorch's
    (eager or compiled), the same for micro-batched steps, jaxcnn's fastest plain over Flax."""
    def best(who: str, micro: bool) -> str | None:
        names = [k for k in ms if side(k) == who and (split_label(k)[1] > 1) == micro]
        return min(names, key=ms.get) if names else None

    out = {f"fastest_{who}{'_micro' if micro else ''}": best(who, micro)
           for who in ("jaxcnn", "torch", "flax") for micro in (False, True)}
    ratio = lambda a, b: ms[out[a]] / ms[out[b]] if out[a] and out[b] else None
    out["ratio"] = ratio("fastest_jaxcnn", "fastest_torch")
    out["ratio_micro"] = ratio("fastest_jaxcnn_micro", "fastest_torch_micro")
    out["ratio_flax"] = ratio("fastest_jaxcnn", "fastest_flax")
    return out


def profile(compiled: dict[str, tuple[Any, tuple]], repeats: int, min_seconds: float) -> dict[str, Any]:
    """Where one step spends its time: XLA's per-op trace summed by category
    (``jaxcnn.bench.profile``: convolutions forward and backward, pooling, normalisation,
    dropout, dense, optimizer, the rest), and the op census of its compiled program."""
    step, args = compiled["step"]
    try:
        ms = step_profile(step, args, max(repeats, 2))
    except Exception as err:   # a profiler that cannot run here: the census still says something
        ms = {"error": failure_message(err)}
    return {"ms": ms, "census": _census(step)}


def native_kernels() -> dict[str, Any]:
    """Build or load jaxcnn's native CPU kernels now, before anything is timed: whether they
    are available and the seconds it took (a build once per machine, then a load from the cache)."""
    from jaxcnn._conv import native as conv_native
    start = time.perf_counter()
    available = conv_native.available()
    return {"available": available, "seconds": time.perf_counter() - start}


def run(model_names: Sequence[str], repeats: int, markdown_path: str | None = None,
        json_path: str | None = None, batch: int | None = None) -> int:
    """``jaxcnn bench --train``: the header, then every model's rows as they come, then the
    tables; written to ``markdown_path`` and ``json_path`` where given."""
    import json
    from jaxcnn.bench.report import device_info, load_average
    from jaxcnn.bench.timing import matmul_peak
    reason = _missing("optax", "train")
    if reason:
        raise ImportError(f"jaxcnn bench --train: {reason}")
    native = native_kernels()
    peak = matmul_peak(2048 if batch is None else 256, 3)
    info = device_info()
    header = train_report.header(info, peak, native)
    print(header, flush=True)
    print(train_report.steps_table([]), flush=True)
    rows, load = [], load_average()
    with _torch_compile_settings():
        for name in model_names:
            rows.append(bench_model(name, repeats, batch=batch, min_seconds=0.0 if batch else 1.0))
            print(train_report.steps_table(rows[-1:]).split("\n", 2)[2], flush=True)
    table = train_report.markdown(rows, header)
    print(table)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"device": info, "matmul": peak, "native_kernels": native, "rows": rows,
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                       "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
                       "load_average": {"start": load, "end": load_average()}}, f, indent=1)
    bad = [r["model"] for r in rows if r["failures"]]
    if bad:
        print(f"failures in: {bad}", file=sys.stderr)
    return 1 if bad else 0


@contextlib.contextmanager
def _torch_compile_settings() -> Iterator[None]:
    """``torch.compile`` raises where it would run a step eagerly after too many recompiles:
    a compiled contender never times eager code unnoticed."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    from jaxcnn.bench import torch_models
    with torch_models.strict_compile():
        yield


__all__ = ["TRAIN_MODELS", "BATCH", "plain_lax_ops", "batch_data", "jax_loss", "jax_step", "label",
           "split_label", "side", "torch_variants", "bench_model", "fastest", "profile",
           "native_kernels", "run"]
