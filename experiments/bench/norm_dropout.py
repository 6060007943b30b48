"""GroupNorm and dropout in the training step: what XLA compiles, and the dropout mask's cost.

- GroupNorm with its ReLU (fashion-resnet's shapes, channels last, 8 groups): the forward and
  VJP in one jit-compiled program, as in the training step; the census of its compiled program
  (the fusions that read or write an activation-sized array, and which of them are
  reductions) and its time.
- Dropout (rate 0.3 on fashion-cnn's flattened ``(128, 6272)`` features): the forward and VJP
  with the mask ``jax.random.bernoulli`` draws (a 32-bit uniform per element, the mask before
  ``nn.layers.drop_mask``) and with ``drop_mask`` (16 bits per element), interleaved.
- The whole fashion-cnn training step (``jaxcnn.bench.train_step.jax_step``, lax, channels last)
  built with each of the two dropouts, interleaved.

With ``--baseline-norm PATH`` (a ``norm.py`` of another commit, e.g. ``git show
HEAD~1:jaxcnn/norm.py > old_norm.py``), the GroupNorm programs and the fashion-resnet step are
also timed with that file's ``group_norm``, interleaved with this one's.

Medians of interleaved rounds after a warm-up, so a shared machine's load falls on both alike;
the ratios are the result. ``--cpu-time`` times in process CPU time (run it pinned to one core
with one XLA thread: ``taskset -c 0``, ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``), which
a loaded machine's preemptions do not inflate.

    python experiments/bench/norm_dropout.py [--rounds R] [--json PATH] [--baseline-norm PATH]
                                             [--cpu-time]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import time
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxcnn import nn
from jaxcnn.bench import train_step
from jaxcnn.nn import layers

CLOCK = time.perf_counter

NORM_SHAPES = ((128, 28, 28, 32), (128, 14, 14, 64), (128, 7, 7, 128))


def bernoulli_dropout(rate: float) -> nn.Layer:
    """Dropout as it was: ``jax.random.bernoulli``'s mask, kept elements scaled by 1/(1 − rate)."""
    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        if not train:
            return x
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
    return nn.Layer(lambda key, input_shape: ({}, tuple(input_shape)), apply, f"Dropout({rate})")


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds of each call over ``rounds`` round-robin rounds, after two warm-up rounds."""
    for _ in range(2):
        for call in calls.values():
            jax.block_until_ready(call())
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = CLOCK()
            jax.block_until_ready(call())
            seconds[name].append(CLOCK() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def forward_and_vjp(fn: Callable, constant: int = 0) -> Callable:
    """``(y, vjp(y_bar))`` of ``fn`` in one jit-compiled program: called with ``fn``'s arguments
    and ``y_bar``; the first ``constant`` arguments are not differentiated (a PRNG key)."""
    def both(*args):
        y, pull = jax.vjp(partial(fn, *args[:constant]), *args[constant:-1])
        return y, pull(args[-1])
    return jax.jit(both)


def census(compiled_text: str, shape: tuple[int, ...]) -> dict[str, int]:
    """Fusions of the entry computation whose operands or result are ``shape``-sized."""
    entry = compiled_text[compiled_text.index("ENTRY"):]
    size = f"f32[{','.join(map(str, shape))}]"
    names = {m.group(1) for m in re.finditer(rf"%(\S+) = {re.escape(size)}", entry)}
    reads = writes = reductions = 0
    for line in entry.splitlines():
        match = re.match(r"\s*(?:ROOT )?%\S+ = (\S+) fusion\((.*?)\), kind=(\w+)", line)
        if not match:
            continue
        operands = re.findall(r"%([\w.\-]+)", match.group(2))
        big_reads = sum(o in names for o in operands)
        reads += big_reads
        writes += match.group(1).startswith(size)
        reductions += bool(big_reads) and not match.group(1).startswith(size)
    return {"activation_reads": reads, "activation_writes": writes, "reductions_over_it": reductions}


def norm_rows(rounds: int, norms: dict[str, Callable]) -> list[dict[str, Any]]:
    rows = []
    for shape in NORM_SHAPES:
        channels = shape[-1]
        keys = jax.random.split(jax.random.key(0), 4)
        x, y_bar = (jax.random.normal(k, shape) for k in keys[:2])
        scale = 1 + 0.1 * jax.random.normal(keys[2], (channels,))
        bias = 0.1 * jax.random.normal(keys[3], (channels,))
        steps = {name: forward_and_vjp(lambda x, s, b, norm=norm: jax.nn.relu(
                     norm(x, min(8, channels), s, b, channels_last=True))) for name, norm in norms.items()}
        text = steps["this"].lower(x, scale, bias, y_bar).compile().as_text()
        ms = {n: 1e3 * t for n, t in interleaved(
            {n: (lambda f=f: f(x, scale, bias, y_bar)) for n, f in steps.items()}, rounds).items()}
        rows.append({"shape": shape, "ms": ms, **census(text, shape)})
        print(f"group_norm + ReLU fwd+vjp {shape}: {rows[-1]}", flush=True)
    return rows


def step_rows(model: str, module: Any, attribute: str, variants: dict[str, Any],
              rounds: int) -> dict[str, float]:
    """Milliseconds of ``model``'s training step (lax, channels last) built with
    ``module.attribute`` set to each variant in turn (what the model's layers read while the
    step is traced), interleaved."""
    x, y = train_step.batch_data(model, 128)
    calls = {}
    for name, variant in variants.items():
        original = getattr(module, attribute)
        setattr(module, attribute, variant)
        try:
            compiled, args = train_step.jax_step(model, "lax", x, y, channels_last=True)["compiled"]["step"]
        finally:
            setattr(module, attribute, original)
        calls[name] = lambda compiled=compiled, args=args: compiled(*args)
    ms = {n: 1e3 * s for n, s in interleaved(calls, rounds).items()}
    first, second = ms.values()
    print(f"{model} step: {ms}, {' / '.join(ms)} {first / second:.3f}", flush=True)
    return ms


def dropout_rows(rounds: int) -> dict[str, float]:
    x, y_bar = (jax.random.normal(k, (128, 6272)) for k in jax.random.split(jax.random.key(1)))
    key = jax.random.key(5)      # an argument, as in the step: a constant key's mask is folded
    steps = {name: forward_and_vjp(lambda key, x, layer=layer: layer.apply({}, x, train=True, key=key), 1)
             for name, layer in (("bernoulli", bernoulli_dropout(0.3)), ("drop_mask", nn.Dropout(0.3)))}
    ms = {n: 1e3 * s for n, s in interleaved({n: (lambda f=f: f(key, x, y_bar)) for n, f in steps.items()},
                                              rounds).items()}
    print(f"dropout fwd+vjp (128, 6272): {ms}, drop_mask / bernoulli {ms['drop_mask'] / ms['bernoulli']:.2f}",
          flush=True)
    return ms


def main() -> None:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", default=None)
    parser.add_argument("--baseline-norm", default=None, help="a norm.py to compare with")
    parser.add_argument("--cpu-time", action="store_true", help="time in process CPU time")
    args = parser.parse_args()
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    norms = {"this": layers.group_norm}
    if args.baseline_norm:
        spec = importlib.util.spec_from_file_location("baseline_norm", args.baseline_norm)
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
        norms["baseline"] = baseline.group_norm
    result = {"clock": CLOCK.__name__, "norm": norm_rows(args.rounds, norms),
              "dropout_ms": dropout_rows(args.rounds),
              # models.fashion_cnn reads nn.Dropout; GroupNorm's apply reads layers.group_norm
              "fashion_cnn_step_ms": step_rows("fashion-cnn", nn, "Dropout", {
                  "drop_mask": layers.Dropout, "bernoulli": bernoulli_dropout}, args.rounds)}
    if args.baseline_norm:
        result["fashion_resnet_step_ms"] = step_rows("fashion-resnet", layers, "group_norm", norms, args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
