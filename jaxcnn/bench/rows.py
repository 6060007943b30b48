"""One ``jaxcnn bench`` row: every contender timed on one (case, dtype, layout, mode), its
outputs compared with the baseline's."""
from __future__ import annotations

import math
import statistics
from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.bench.cases import Case, case_flops, describe
from jaxcnn.bench.contenders import TorchSide, baseline_fn, jaxcnn_fn
from jaxcnn.bench.timing import failure_message, paired_ratios, time_interleaved
from jaxcnn.tolerances import BENCH_AGREEMENT


def _jax_runner(f: Callable, mode: str, n_operands: int) -> Callable:
    """``f`` jitted (fwd), or ``value_and_grad`` of ``Σ f(...)·ct`` w.r.t. every operand."""
    if mode == "fwd":
        return jax.jit(f)
    def loss(*args):
        *operands, ct = args
        return jnp.sum(f(*operands).astype(jnp.float32) * ct.astype(jnp.float32))
    return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(n_operands))))


def compiled_temp_bytes(jitted: Callable, *args: Any) -> int | None:
    """XLA's temporary memory for ``jitted(*args)``: the bytes its compiled program allocates
    beyond its arguments and outputs (``memory_analysis().temp_size_in_bytes``); None where the
    backend does not say. Deterministic, from the compiler: no timing involved."""
    try:
        stats = jitted.lower(*args).compile().memory_analysis()
    except Exception:   # a backend without memory analysis
        return None
    return None if stats is None else int(stats.temp_size_in_bytes)


def _jax_outputs(out: Any, mode: str) -> list[np.ndarray]:
    """``[y]`` (fwd) or the gradients ``[dx, dw]`` (fwd+bwd; the loss is their consequence)."""
    leaves = [out] if mode == "fwd" else list(out[1])
    return [np.asarray(a).astype(np.float32) for a in leaves]


def rel_err(outs: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> float:
    """Largest ``max|a − b| / max|b|`` over paired outputs (shapes must agree)."""
    errs = []
    for a, b in zip(outs, refs, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"outputs: expected shape {b.shape}; got {a.shape}")
        errs.append(float(np.max(np.abs(a - b), initial=0.0)) / max(float(np.max(np.abs(b), initial=0.0)), 1e-30))
    return max(errs)


# Sanity bounds on max_rel_err against the baseline, by the bench's dtype names: two
# implementations against each other at benchmark sizes (derived in jaxcnn.tolerances).
AGREEMENT = BENCH_AGREEMENT


# ----------------------------------------------------------------------------- one row

def bench_row(case: Case, dtype: str, channels_last: bool, mode: str, impls: Sequence[str],
              repeats: int, torch_side: TorchSide | None, peak_gflops: float,
              min_seconds: float = 0.0) -> dict[str, Any]:
    """Time every contender on one (case, dtype, layout, mode) and compare its outputs."""
    acc = jnp.float32 if dtype == "bfloat16-f32acc" else None
    jdtype = jnp.bfloat16 if dtype.startswith("bfloat16") else jnp.dtype(dtype)
    x_shape, w_shape, y_shape = case.shapes(channels_last)
    rng = np.random.default_rng(sum(map(ord, case.name)))
    operands = [("act", rng.standard_normal(x_shape))]
    if w_shape is not None:
        fan_in = (case.channels if case.op == "conv" else case.out_channels) // case.groups
        operands.append(("kernel", rng.standard_normal(w_shape) / math.sqrt(fan_in * math.prod(case.kernel))))
    ct = rng.standard_normal(y_shape)
    jax_args = [jnp.asarray(a, jdtype) for _, a in operands] + [jnp.asarray(ct, acc or jdtype)]
    if mode == "fwd":
        jax_args = jax_args[:-1]
    pooling = case.op in ("max_pool", "avg_pool")
    contenders = {"jax": baseline_fn(case, channels_last, acc)}
    for impl in ("jaxcnn",) if pooling else ("lax", "manual"):
        if impl in impls:
            contenders[impl] = jaxcnn_fn(case, channels_last, impl, acc)
    calls: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {}
    temp: dict[str, int | None] = {}
    for impl, f in contenders.items():
        run = _jax_runner(f, mode, len(operands))
        calls[impl] = (partial(run, *jax_args), jax.block_until_ready)
        temp[impl] = compiled_temp_bytes(run, *jax_args)
    failures: dict[str, str] = {}
    if torch_side is not None and "torch" in impls:
        tdtype = "bfloat16" if dtype.startswith("bfloat16") else dtype
        try:
            t_ops = [torch_side.tensor(a, kind, tdtype, channels_last, grad=mode != "fwd")
                     for kind, a in operands]
            t_ct = torch_side.tensor(ct, "act", tdtype, channels_last)
            calls["torch"] = (torch_side.runner(case, mode, t_ops, t_ct), torch_side.sync)
        except Exception as err:
            failures["torch"] = failure_message(err)
    times, outs, call_failures = time_interleaved(calls, repeats, min_seconds)
    failures.update(call_failures)
    ms = {k: statistics.median(v) for k, v in times.items()}
    ms_min = {k: min(v) for k, v in times.items()}
    errs: dict[str, float | None] = {}
    ref = _jax_outputs(outs["jax"], mode) if "jax" in outs else None
    for name, out in outs.items() if ref is not None else ():
        try:
            got = (torch_side.to_numpy(out, channels_last) if name == "torch"
                   else _jax_outputs(out, mode))
            errs[name] = rel_err(got, ref)
        except Exception as err:
            failures[name] = failure_message(err)
    flops = case_flops(case, mode)
    base = ms.get("jax")
    return {
        "case": case.name, "op": case.op, "training": case.training, "shape": describe(case),
        "x_shape": list(x_shape), "w_shape": None if w_shape is None else list(w_shape),
        "y_shape": list(y_shape), "stride": case.stride, "padding": case.padding,
        "groups": case.groups, "dtype": dtype,
        "layout": "channels_last" if channels_last else "channels_first", "mode": mode,
        "flops": flops, "ms": ms, "ms_min": ms_min,
        "ratio": {k: v / base for k, v in ms.items()} if base else {},
        "paired_ratio": paired_ratios(times, "jax"),
        "gflops": {k: flops / v / 1e6 for k, v in ms.items()} if flops else {},
        "peak_fraction": {k: flops / v / 1e6 / peak_gflops for k, v in ms.items()} if flops else {},
        "temp_bytes": temp,
        "temp_ratio": ({k: v / temp["jax"] for k, v in temp.items() if v is not None}
                       if temp.get("jax") else {}),
        "max_rel_err": errs, "agree": all(e <= AGREEMENT[dtype] for e in errs.values()),
        "failures": failures,
        "torch_memory_format": (None if torch_side is None else
                                str(torch_side.memory_format(len(x_shape), channels_last)).split(".")[-1]),
    }
