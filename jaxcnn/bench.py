r"""``jaxcnn bench``: time jaxcnn's ops beside ``jax.grad`` of plain ``lax`` and PyTorch.

For each case of a fixed suite (ResNet-like 3×3, a 7×7 stride-2 stem, depthwise, 1D, 3D, the
layers of the training models, ``conv_transpose``, pooling), dtype and layout, one run times
``fwd`` (the op) and ``fwd+bwd`` (``value_and_grad`` of ``Σ y·ct`` for a fixed random ``ct``,
with respect to ``x`` and ``w``), jit-compiled, of: ``lax`` and ``manual`` (jaxcnn's two impls;
``jaxcnn`` for pooling), ``jax`` (the baseline: JAX autodiff of plain ``lax.conv_general_dilated``
or ``lax.reduce_window``; ratio = ms / its ms) and ``torch`` (``torch.nn.functional``, the
channels-last rows in ``torch.channels_last`` memory format, cuDNN on a GPU) where installed.
Times are medians of synchronised calls after a compiling call and a warm-up. A conv costs
``2·N·O·(C/g)·∏K·∏S_out`` FLOPs forward, 3× that forward+backward (``dx`` and ``dw`` each cost
one forward); GFLOP/s are also a fraction of a square float32 matmul timed on the same device at
the start. Every output is compared with the baseline's (``max_rel_err``): a fast wrong answer
shows. Shapes are full on a GPU, shrunk on CPU (each case's ``cpu`` sizes), tiny with ``--quick``.

The suite (``Case``, ``CASES``) lives in ``jaxcnn._bench_cases``, the contenders in
``jaxcnn._bench_contenders``; this module times them, reports, and re-exports both.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._bench_cases import (CASES, QUICK_CASES, Case, available, case_flops, conv_flops,
                                 describe, select_cases)
from jaxcnn._bench_contenders import TorchSide, baseline_fn, jaxcnn_fn, torch_fn

LAYOUTS = ("channels_first", "channels_last")
MODES = ("fwd", "fwd+bwd")
DTYPES = ("float32", "bfloat16", "bfloat16-f32acc")  # the last: bf16 in, preferred_element_type f32
IMPLS = ("jax", "lax", "manual", "jaxcnn", "torch")
SCALES = ("auto", "full", "cpu", "quick")


# ----------------------------------------------------------------------------- timing

def _failure(err: Exception) -> str:
    """A contender's exception as the one line the report keeps."""
    return f"{type(err).__name__}: {err}"[:300]


def time_interleaved(calls: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]], repeats: int,
                     min_seconds: float = 0.0) -> tuple[dict[str, list[float]], dict[str, Any], dict[str, str]]:
    """Milliseconds of every contender's synchronised calls, timed **in rounds**: after each
    one's first (compiling) call and a warm-up, every round calls each contender once, the
    order rotating by one per round, so a burst of load or a clock change hits them all alike
    and the ratios stay fair. ``repeats`` rounds, or more (up to 50) until ``min_seconds`` of
    rounds are spent. Returns the times, each contender's first output, and the failures (a
    contender that raises is reported and left out, the others go on)."""
    outs, failures, warm = {}, {}, 0.0
    for name, (call, sync) in calls.items():
        try:
            outs[name] = call()
            sync(outs[name])
            start = time.perf_counter()
            sync(call())
            warm += time.perf_counter() - start
        except Exception as err:  # a broken contender is reported, the run goes on
            failures[name] = _failure(err)
    names = [n for n in calls if n not in failures]
    count = max(repeats, min(50, math.ceil(min_seconds / max(warm, 1e-6))))
    times: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(count):
        for i in range(len(names)):
            name = names[(i + round_) % len(names)]
            call, sync = calls[name]
            start = time.perf_counter()
            sync(call())
            times[name].append((time.perf_counter() - start) * 1e3)
    return times, outs, failures


def matmul_peak(n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a square float32 ``n × n`` matmul on ``jax.devices()[0]``: the yardstick. A
    peak, so the fastest call counts (a shared machine only ever slows calls down)."""
    a = jax.device_put(jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32))
    f = jax.jit(jnp.matmul)
    times, _, failures = time_interleaved({"matmul": (lambda: f(a, a), jax.block_until_ready)}, repeats)
    if failures:
        raise RuntimeError(f"matmul peak: {failures['matmul']}")
    times = times["matmul"]
    return {"n": n, "ms": min(times), "gflops": 2 * n ** 3 / min(times) / 1e6}


def _jax_runner(f: Callable, mode: str, n_operands: int) -> Callable:
    """``f`` jitted (fwd), or ``value_and_grad`` of ``Σ f(...)·ct`` w.r.t. every operand."""
    if mode == "fwd":
        return jax.jit(f)
    def loss(*args):
        *operands, ct = args
        return jnp.sum(f(*operands).astype(jnp.float32) * ct.astype(jnp.float32))
    return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(n_operands))))


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


# Sanity bounds on max_rel_err against the baseline (float32 sums of ~10⁴ terms; bfloat16 has
# 8 mantissa bits and the manual impl adds its taps in the operand dtype).
AGREEMENT = {"float32": 1e-4, "bfloat16": 5e-2, "bfloat16-f32acc": 5e-2}


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
    for impl, f in contenders.items():
        run = _jax_runner(f, mode, len(operands))
        calls[impl] = (partial(run, *jax_args), jax.block_until_ready)
    failures: dict[str, str] = {}
    if torch_side is not None and "torch" in impls:
        tdtype = "bfloat16" if dtype.startswith("bfloat16") else dtype
        try:
            t_ops = [torch_side.tensor(a, kind, tdtype, channels_last, grad=mode != "fwd")
                     for kind, a in operands]
            t_ct = torch_side.tensor(ct, "act", tdtype, channels_last)
            calls["torch"] = (torch_side.runner(case, mode, t_ops, t_ct), torch_side.sync)
        except Exception as err:
            failures["torch"] = _failure(err)
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
            failures[name] = _failure(err)
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
        "gflops": {k: flops / v / 1e6 for k, v in ms.items()} if flops else {},
        "peak_fraction": {k: flops / v / 1e6 / peak_gflops for k, v in ms.items()} if flops else {},
        "max_rel_err": errs, "agree": all(e <= AGREEMENT[dtype] for e in errs.values()),
        "failures": failures,
        "torch_memory_format": (None if torch_side is None else
                                str(torch_side.memory_format(len(x_shape), channels_last)).split(".")[-1]),
    }


# ----------------------------------------------------------------------------- reporting

def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per row: ms per contender, ratios to ``jax``, and ours' GFLOP/s (% of peak)."""
    head = ("| case | shape | dtype | layout | mode | jax ms | lax ms | manual ms | torch ms "
            "| lax/jax | manual/jax | torch/jax | lax GFLOP/s (% peak) |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        ours = "jaxcnn" if "jaxcnn" in r["ms"] else "lax"
        g, frac = r["gflops"].get(ours), r["peak_fraction"].get(ours)
        perf = "—" if g is None else f"{g:.3g} ({100 * frac:.2g}%)"
        layout = "NC…" if r["layout"] == "channels_first" else "N…C"
        lines.append(
            f"| {r['case']} | {r['shape']} | {r['dtype']} | {layout} | {r['mode']} | "
            f"{_num(r['ms'].get('jax'))} | {_num(r['ms'].get(ours))} | {_num(r['ms'].get('manual'))} | "
            f"{_num(r['ms'].get('torch'))} | {_num(r['ratio'].get(ours), 2)} | "
            f"{_num(r['ratio'].get('manual'), 2)} | {_num(r['ratio'].get('torch'), 2)} | {perf} |")
    return "\n".join(lines)


def device_info() -> dict[str, Any]:
    device = jax.devices()[0]
    info = {"platform": device.platform, "device_kind": device.device_kind,
            "jax": jax.__version__, "python": platform.python_version(), "cpu": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"], info["cpu_cores"] = models[0], len(models)
    except (OSError, IndexError):
        pass
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_device"] = "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["torch"] = None
    return info


def _load() -> list[float] | None:
    """1, 5 and 15-minute load averages: how shared the machine was during the run."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- command line

def _choices(text: str, options: Sequence[str], name: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in options]
    if bad or not values:
        raise ValueError(f"{name}: expected a comma-separated list from {tuple(options)}; got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jaxcnn bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size: tiny shapes, 1 repeat, float32")
    p.add_argument("--json", metavar="PATH", help="write every row and the device to PATH")
    p.add_argument("--markdown", metavar="PATH", help="write the results table to PATH")
    p.add_argument("--cases", help="comma-separated names or fnmatch patterns ('training': the training layers)")
    p.add_argument("--dtype", help=f"comma-separated, from {DTYPES} (default float32,bfloat16; quick: float32)")
    p.add_argument("--layout", default=",".join(LAYOUTS), help=f"comma-separated, from {LAYOUTS}")
    p.add_argument("--mode", default=",".join(MODES), help=f"comma-separated, from {MODES}")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {IMPLS} (jax always runs)")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (default: 1 quick, 5 CPU, 20 GPU)")
    p.add_argument("--scale", default="auto", choices=SCALES,
                   help="shapes: full (GPU), cpu (shrunk), quick; auto picks by device and --quick")
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    platform_name = jax.devices()[0].platform
    scale = args.scale if args.scale != "auto" else (
        "quick" if args.quick else "cpu" if platform_name == "cpu" else "full")
    cases = select_cases(args.cases or (",".join(QUICK_CASES) if scale == "quick" else None))
    if args.list:
        for case in cases:
            print(f"{case.name:<18} {case.op:<15} full {describe(case):<28} cpu {describe(case.sized('cpu'))}")
        return 0
    if not cases:
        raise ValueError(f"--cases: expected names or patterns matching {[c.name for c in CASES]}; got {args.cases!r}")
    dtypes = _choices(args.dtype or ("float32" if scale == "quick" else "float32,bfloat16"), DTYPES, "--dtype")
    layouts = _choices(args.layout, LAYOUTS, "--layout")
    modes = _choices(args.mode, MODES, "--mode")
    impls = _choices(args.impls, IMPLS, "--impls")
    repeats = args.repeats if args.repeats is not None else (
        1 if scale == "quick" else 5 if platform_name == "cpu" else 20)
    if repeats < 1:
        raise ValueError(f"--repeats: expected a positive int; got {repeats}")
    torch_side = None
    if "torch" in impls:
        try:
            torch_side = TorchSide()
        except ImportError:
            print("torch is not installed: no PyTorch column", file=sys.stderr)
    matmul_n = 256 if scale == "quick" else 2048 if platform_name == "cpu" else 8192
    peak = matmul_peak(matmul_n, max(repeats, 3))
    print(f"device: {device_info()['device_kind']} ({platform_name}); float32 {matmul_n}² matmul "
          f"{peak['gflops']:.1f} GFLOP/s; scale {scale}, {repeats} repeats", flush=True)
    rows, skipped, load_start = [], [], _load()
    for case in cases:
        reason = available(case)
        if reason:
            skipped.append({"case": case.name, "reason": reason})
            print(f"skip {case.name}: {reason}", flush=True)
            continue
        sized = case.sized(scale)
        for dtype in dtypes:
            if dtype == "bfloat16-f32acc" and case.op != "conv":
                continue   # only conv takes preferred_element_type
            for layout in layouts:
                for mode in modes:
                    row = bench_row(sized, dtype, layout == "channels_last", mode, impls, repeats,
                                    torch_side, peak["gflops"], 0.0 if scale == "quick" else 1.0)
                    rows.append(row)
                    print(markdown_table([row]).splitlines()[-1], flush=True)
    report = {"command": "jaxcnn bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": device_info(), "matmul": peak, "scale": scale, "repeats": repeats,
              "load_average": {"start": load_start, "end": _load()},
              "rows": rows, "skipped": skipped}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(rows) + "\n")
    bad = [r["case"] for r in rows if r["failures"] or not r["agree"]]
    if bad:
        print(f"failures or disagreements in: {sorted(set(bad))}", file=sys.stderr)
    return 1 if bad else 0
