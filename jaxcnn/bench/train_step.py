r"""``jaxcnn bench --train``: the training step of every named model, end to end.

One optimizer step (cross-entropy of the model's logits, ``jax.value_and_grad``, AdamW) of
each model of ``TRAIN_MODELS`` at its training batch size, float32, timed in interleaved
rounds (``timing.time_interleaved``; medians) for each contender:

- ``jaxcnn lax`` / ``jaxcnn manual``: ``jaxcnn.models`` with that ``impl`` (channels first:
  the models' layout);
- ``jax``: the same network, the same parameters, with every jaxcnn op replaced by its
  ``jaxcnn.reference`` twin (plain ``lax``, differentiated by JAX autodiff): what a user of
  plain JAX would write (``plain_lax_ops``);
- ``torch`` / ``torch channels_last``: the same network in PyTorch eager (``torch_forward``,
  ``torch.nn.functional`` on the same parameters), NCHW and ``channels_last`` memory format
  (2D and 3D models);
- ``… ×k``: the same step with its gradient summed over ``k`` slices of the batch
  (``jaxcnn.train.micro_batched``, one program; PyTorch: ``k`` backward passes into the same
  gradients, then one optimizer step; k = 2, 4, 8), for ``jaxcnn lax`` and PyTorch in the layout each runs
  fastest: smaller slices keep activations in cache, on both sides.

Beside each JAX contender's time: XLA's compiled temp memory of the step. For the fastest
jaxcnn contender a profile: XLA's per-op trace of its step summed by category
(``jaxcnn.bench.profile``: convolutions forward / backward, pooling, normalisation, dropout,
dense, optimizer, the rest) and the compiled program's op census. The test of this
module checks that every contender computes the same loss and gradients.

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
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn import models, reference
from jaxcnn.bench.profile import step_profile
from jaxcnn.bench.rows import compiled_temp_bytes
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
    """The compiled phases of one contender: ``step`` (value-and-grad over ``micro_batches``
    slices, and AdamW), ``grad`` (value-and-grad), ``forward`` (the loss), with their arguments."""
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

    key = jax.random.key(1)
    args = (params, opt_state, jnp.asarray(x), jnp.asarray(y), key)
    phases = {"step": (jax.jit(step), args),
              "grad": (jax.jit(jax.value_and_grad(loss)), (params, *args[2:])),
              "forward": (jax.jit(loss), (params, *args[2:]))}
    context = plain_lax_ops() if impl == "jax" else contextlib.nullcontext()
    with context:
        compiled = {k: (f.lower(*a).compile(), a) for k, (f, a) in phases.items()}
        temp = compiled_temp_bytes(phases["step"][0], *args)
    return {"compiled": compiled, "temp_bytes": temp}


# ----------------------------------------------------------------------------- PyTorch

# Each model as a list of layer specs mirroring its ``nn.serial`` (one entry per layer, so
# the JAX parameter tuple indexes them): (kind, options).
_RES = "residual"
TORCH_SPECS: dict[str, list[tuple]] = {
    "mnist1d-resnet": [("conv", 1, 2), ("gn",), ("relu",), (_RES, 1), ("relu",), (_RES, 2), ("relu",),
                       (_RES, 2), ("relu",), ("flatten",), ("dense",)],
    "fashion-cnn": [("conv", 1, 1), ("relu",), ("maxpool", 2), ("conv", 1, 1), ("gn",), ("relu",),
                    ("maxpool", 2), ("conv", 1, 1), ("gn",), ("relu",), ("flatten",),
                    ("dropout", 0.3), ("dense",)],
    "fashion-resnet": [("conv", 1, 1), ("gn",), ("relu",), (_RES, 1), ("relu",), (_RES, 2), ("relu",),
                       (_RES, 2), ("relu",), ("gap",), ("dense",)],
    "clips-cnn3d": [("avgpool", (1, 2, 2)), ("conv", 1, 1), ("relu",), ("maxpool", (1, 2, 2)),
                    ("conv", 1, 1), ("gn",), ("relu",), ("maxpool", 2), ("conv", 1, 1), ("gn",),
                    ("relu",), ("gap",), ("dense",)],
}


def torch_forward(name: str, params: Any, x: Any, train: bool) -> Any:
    """The model's logits in PyTorch eager (``torch.nn.functional``), from the JAX parameter
    tree with torch tensors as leaves (channels first weights, as jaxcnn's)."""
    import torch.nn.functional as F
    n = x.dim() - 2

    def conv(x, p, stride, padding):
        return getattr(F, f"conv{n}d")(x, p["w"], p.get("b"), stride, padding)

    def gn(x, p):
        return F.group_norm(x, min(8, x.shape[1]), p["scale"], p["bias"], 1e-5)

    for (kind, *opt), p in zip(TORCH_SPECS[name], params, strict=True):
        if kind == "conv":
            x = conv(x, p, *opt)
        elif kind == "gn":
            x = gn(x, p)
        elif kind == "relu":
            x = F.relu(x)
        elif kind == "maxpool":
            x = getattr(F, f"max_pool{n}d")(x, opt[0])
        elif kind == "avgpool":
            x = getattr(F, f"avg_pool{n}d")(x, opt[0])
        elif kind == "dropout":
            x = F.dropout(x, opt[0], training=train)
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "gap":
            x = x.mean(dim=tuple(range(2, x.dim())))
        elif kind == "dense":
            x = x @ p["w"] + p["b"]
        else:                      # a basic block: conv-norm-relu-conv-norm + shortcut
            block = p["block"]
            y = F.relu(gn(conv(x, block[0], opt[0], 1), block[1]))
            y = gn(conv(y, block[3], 1, 1), block[4])
            x = y + (conv(x, p["shortcut"], opt[0], 0) if p["shortcut"] else x)
    return x


def torch_tree(params: Any, channels_last: bool, grad: bool = True) -> Any:
    """The JAX parameter tree with torch leaves; conv kernels in channels-last memory format."""
    import torch

    def leaf(a):
        t = torch.tensor(np.asarray(a, np.float32) if a.dtype != np.float64 else np.asarray(a))
        if channels_last and t.dim() in (4, 5):
            t = t.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)
        return t.requires_grad_(grad)
    return jax.tree_util.tree_map(leaf, params)


def torch_step(name: str, params: Any, x: np.ndarray, y: np.ndarray, channels_last: bool,
               micro_batches: int = 1) -> Callable:
    """One PyTorch AdamW step of the model on ``(x, y)``, as a closure (it trains in place):
    ``micro_batches`` backward passes, one per slice, accumulate into the gradients."""
    import torch
    tree = torch_tree(params, channels_last)
    leaves = jax.tree_util.tree_leaves(tree)
    optimizer = torch.optim.AdamW(leaves, lr=LR, weight_decay=WEIGHT_DECAY)
    xt = torch.tensor(x)
    if channels_last and xt.dim() in (4, 5):
        xt = xt.contiguous(memory_format=torch.channels_last if xt.dim() == 4 else torch.channels_last_3d)
    yt = torch.tensor(y, dtype=torch.long)

    def step():
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for xs, ys in zip(xt.chunk(micro_batches), yt.chunk(micro_batches)):
            loss = torch.nn.functional.cross_entropy(torch_forward(name, tree, xs, True), ys) / micro_batches
            loss.backward()
            total = total + loss.detach()
        optimizer.step()
        return total
    return step


# ----------------------------------------------------------------------------- the run

def _census(compiled: Any) -> dict[str, int]:
    """How many of each costly op the compiled program runs."""
    text = compiled.as_text()
    census = {op: len(re.findall(rf"= [^=]*? {op}\(", text))
              for op in ("convolution", "dot", "while", "reduce-window", "select-and-scatter")}
    census["native"] = len(re.findall(r'custom_call_target="jaxcnn_', text))   # jaxcnn._conv.native
    return census


def _label(base: str, channels_last: bool, micro_batches: int) -> str:
    return base + (" channels_last" if channels_last else "") + (f" ×{micro_batches}" if micro_batches > 1 else "")


def bench_model(name: str, repeats: int, impls: Sequence[str] = ("lax", "manual", "jax"),
                torch_layouts: Sequence[bool] = (False, True), batch: int | None = None,
                min_seconds: float = 1.0, micro_batches: Sequence[int] = (2, 4, 8)) -> dict[str, Any]:
    """Every contender's step on one model, interleaved; the profile of the fastest jaxcnn one.
    The JAX contenders run in both layouts where the model takes ``channels_last``; ``jaxcnn
    lax`` and PyTorch also over each of ``micro_batches`` slices (that divides the batch) in
    their faster layout (channels last where the model has one)."""
    batch = batch or BATCH[name]
    x, y = batch_data(name, batch)
    calls, temp, failures, steps = {}, {}, {}, {}
    layouts = (False, True) if name in models.LAYOUT_MODELS else (False,)
    sliced = [m for m in micro_batches if m > 1 and batch % m == 0]
    configs = [(i, cl, 1) for i in impls for cl in layouts]
    configs += [("lax", layouts[-1], m) for m in sliced if "lax" in impls]
    for impl, channels_last, m in configs:
        label = _label(impl if impl == "jax" else f"jaxcnn {impl}", channels_last, m)
        try:
            steps[label] = jax_step(name, impl, x, y, channels_last, m)
        except Exception as err:   # a contender that fails is reported, the others go on
            failures[label] = failure_message(err)
            continue
        compiled, args = steps[label]["compiled"]["step"]
        calls[label] = (lambda c=compiled, a=args: c(*a), jax.block_until_ready)
        temp[label] = steps[label]["temp_bytes"]
    if torch_layouts and importlib.util.find_spec("torch") is None:
        failures["torch"] = "torch is not installed"
    elif torch_layouts:
        _, params = jax_loss(name, "lax")
        layouts = [cl for cl in torch_layouts if not (cl and len(models.INPUT_SHAPES[name]) == 2)]
        for channels_last, m in [(cl, 1) for cl in layouts] + [(layouts[-1], m) for m in sliced]:
            calls[_label("torch", channels_last, m)] = (torch_step(name, params, x, y, channels_last, m),
                                                        lambda out: out.item())
    times, _, call_failures = time_interleaved(calls, repeats, min_seconds)
    failures.update(call_failures)
    ms = {k: statistics.median(v) for k, v in times.items()}
    ours = [k for k in ms if k.startswith("jaxcnn")]
    theirs = [k for k in ms if k.startswith("torch")]
    row = {"model": name, "batch": batch, "ms": ms, "temp_bytes": temp, "failures": failures,
           "fastest_jaxcnn": min(ours, key=ms.get) if ours else None,
           "fastest_torch": min(theirs, key=ms.get) if theirs else None}
    if row["fastest_jaxcnn"]:
        row["profile"] = profile(steps[row["fastest_jaxcnn"]]["compiled"], repeats, min_seconds)
    return row


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


def markdown(rows: Sequence[dict[str, Any]], peak: dict[str, float] | None = None) -> str:
    """The step table (ms, ratio to the fastest PyTorch, temp MiB) and the profile table."""
    head = ["| model | batch | contender | ms / step | / fastest torch | temp MiB |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        best_torch = r["ms"].get(r["fastest_torch"]) if r["fastest_torch"] else None
        for label, ms in sorted(r["ms"].items(), key=lambda kv: kv[1]):
            ratio = "—" if not best_torch else f"{ms / best_torch:.2f}"
            mem = r["temp_bytes"].get(label)
            head.append(f"| {r['model']} | {r['batch']} | {label} | {ms:.3g} | {ratio} | "
                        f"{'—' if mem is None else f'{mem / 2 ** 20:.3g}'} |")
    kinds = ("conv forward", "conv backward", "pooling", "normalisation", "dropout", "dense",
             "optimizer", "rest")
    prof = ["", "Profile of the fastest jaxcnn step (XLA's per-op trace, ms per step by category; "
            "op census of the program):", "",
            "| model | contender | " + " | ".join(kinds) + " | convolutions | native | dots | loops |",
            "|---|---|" + "---|" * (len(kinds) + 4)]
    for r in rows:
        if "profile" in r:
            p, c = r["profile"]["ms"], r["profile"]["census"]
            cells = " | ".join("—" if k not in p else f"{p[k]:.3g}" for k in kinds)
            prof.append(f"| {r['model']} | {r['fastest_jaxcnn']} | {cells} | {c['convolution']} | "
                        f"{c.get('native', '—')} | {c['dot']} | {c['while']} |")
    note = [] if peak is None else ["", f"float32 {peak['n']}² matmul: {peak['gflops']:.1f} GFLOP/s "
                                        "(the machine's speed during the run); OMP_WAIT_POLICY="
                                        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}."]
    return "\n".join(head + prof + note) + "\n"


def run(model_names: Sequence[str], repeats: int, markdown_path: str | None = None,
        json_path: str | None = None, batch: int | None = None) -> int:
    """``jaxcnn bench --train``: every model's row, printed and written."""
    import json
    from jaxcnn.bench.report import device_info, load_average
    from jaxcnn.bench.timing import matmul_peak
    peak = matmul_peak(2048 if batch is None else 256, 3)
    rows, load = [], load_average()
    for name in model_names:
        rows.append(bench_model(name, repeats, batch=batch, min_seconds=0.0 if batch else 1.0))
        print(markdown(rows[-1:]).split("\n\n")[0], flush=True)
    table = markdown(rows, peak)
    print(table)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"device": device_info(), "matmul": peak, "rows": rows,
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                       "load_average": {"start": load, "end": load_average()}}, f, indent=1)
    bad = [r["model"] for r in rows if r["failures"]]
    if bad:
        print(f"failures in: {bad}", file=sys.stderr)
    return 1 if bad else 0


__all__ = ["TRAIN_MODELS", "BATCH", "plain_lax_ops", "batch_data", "jax_loss", "jax_step",
           "torch_forward", "torch_tree", "torch_step", "bench_model", "profile", "markdown", "run"]
