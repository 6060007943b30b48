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
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn

LAYOUTS = ("channels_first", "channels_last")
MODES = ("fwd", "fwd+bwd")
DTYPES = ("float32", "bfloat16", "bfloat16-f32acc")  # the last: bf16 in, preferred_element_type f32
IMPLS = ("jax", "lax", "manual", "jaxcnn", "torch")
SCALES = ("auto", "full", "cpu", "quick")


# ----------------------------------------------------------------------------- the suite

@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked layer. Convs: ``x (N, C, *S)``, ``w (O, C/g, *K)``; ``conv_transpose``:
    ``w (C, O/g, *K)`` (PyTorch); pooling: ``O = C``, ``kernel`` is the window."""

    name: str
    op: str                                   # conv | conv_transpose | max_pool | avg_pool
    batch: int
    channels: int
    out_channels: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    groups: int = 1
    cpu: tuple[int, tuple[int, ...]] | None = None   # (batch, spatial) on CPU; None: unchanged
    training: bool = False                    # a layer of one of the training models

    @property
    def n(self) -> int:
        return len(self.spatial)

    def sized(self, scale: str) -> "Case":
        """The case at ``scale``: ``full`` (GPU), ``cpu`` (its ``cpu`` sizes) or ``quick``."""
        if scale == "full":
            return self
        if scale == "cpu":
            batch, spatial = self.cpu or (self.batch, self.spatial)
            return dataclasses.replace(self, batch=batch, spatial=tuple(spatial))
        channels, out = min(self.channels, 8), min(self.out_channels, 8)
        groups = 1 if self.groups == 1 else min(channels, out)
        spatial = tuple(min(s, 10 if self.n < 3 else 6) for s in self.spatial)
        return dataclasses.replace(self, batch=2, channels=channels, out_channels=out,
                                   groups=groups, spatial=spatial)

    def out_spatial(self) -> tuple[int, ...]:
        if self.op == "conv_transpose":
            return tuple((s - 1) * self.stride - 2 * self.padding + k
                         for s, k in zip(self.spatial, self.kernel))
        return tuple((s + 2 * self.padding - k) // self.stride + 1
                     for s, k in zip(self.spatial, self.kernel))

    def shapes(self, channels_last: bool) -> tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int, ...]]:
        """``(x, w, y)`` shapes in the layout (``w`` None for pooling)."""
        def act(c, sizes):
            return (self.batch, *sizes, c) if channels_last else (self.batch, c, *sizes)
        x, y = act(self.channels, self.spatial), act(self.out_channels, self.out_spatial())
        if self.op in ("max_pool", "avg_pool"):
            return x, None, y
        w_out, w_in = ((self.out_channels, self.channels // self.groups) if self.op == "conv"
                       else (self.channels, self.out_channels // self.groups))
        w = (*self.kernel, w_in, w_out) if channels_last else (w_out, w_in, *self.kernel)
        return x, w, y


def _conv_case(name, c, o, s, k, stride=1, groups=1, batch=32, cpu=None, training=False, op="conv"):
    n = len(s)
    return Case(name, op, batch, c, o, tuple(s), (k,) * n, stride, k // 2 if op == "conv" else 1,
                groups, cpu, training)


CASES: tuple[Case, ...] = (
    _conv_case("resnet3x3_64", 64, 64, (56, 56), 3, cpu=(2, (56, 56))),
    _conv_case("resnet3x3_256", 256, 256, (14, 14), 3, cpu=(2, (14, 14))),
    _conv_case("stem7x7_s2", 3, 64, (224, 224), 7, stride=2, cpu=(2, (112, 112))),
    _conv_case("depthwise3x3", 256, 256, (56, 56), 3, groups=256, cpu=(2, (56, 56))),
    _conv_case("conv1d_k7", 64, 64, (1024,), 7, cpu=(8, (1024,))),
    _conv_case("conv3d_3x3x3", 32, 32, (16, 56, 56), 3, batch=8, cpu=(1, (8, 28, 28))),
    _conv_case("mnist5x5", 1, 32, (28, 28), 5, batch=128, cpu=(32, (28, 28))),
    # The layers the training models run (jaxcnn train): the same sizes on every device.
    _conv_case("mnist1d_k3", 64, 64, (40,), 3, batch=100, training=True),
    _conv_case("mnist1d_k5", 64, 64, (40,), 5, batch=100, training=True),
    _conv_case("fashion_conv1", 1, 32, (28, 28), 3, batch=128, training=True),
    _conv_case("fashion_conv2", 32, 64, (14, 14), 3, batch=128, training=True),
    _conv_case("clip3d_conv2", 8, 16, (8, 32, 32), 3, batch=16, training=True),
    # conv_transpose (PyTorch's k=4, s=2, p=1 upsampling): output = 2 × input.
    _conv_case("transpose2d_k4s2", 64, 32, (28, 28), 4, stride=2, op="conv_transpose", cpu=(4, (28, 28))),
    _conv_case("transpose1d_k4s2", 64, 64, (256,), 4, stride=2, op="conv_transpose", cpu=(8, (256,))),
    Case("maxpool3x3_s2", "max_pool", 32, 64, 64, (112, 112), (3, 3), 2, 1, cpu=(2, (112, 112))),
    Case("fashion_maxpool2", "max_pool", 128, 32, 32, (28, 28), (2, 2), 2, training=True),
    Case("mnist1d_maxpool2", "max_pool", 100, 64, 64, (40,), (2,), 2, training=True),
    Case("avgpool2x2", "avg_pool", 32, 64, 64, (56, 56), (2, 2), 2, cpu=(4, (56, 56))),
)


# --quick (a CI smoke run of the whole harness) runs one conv and one pooling case.
QUICK_CASES = ("resnet3x3_64", "maxpool3x3_s2")


def select_cases(patterns: str | None, cases: Sequence[Case] = CASES) -> list[Case]:
    """Cases whose name matches one of the comma-separated ``fnmatch`` patterns (or contains
    it); ``training`` selects the training layers; None selects all."""
    if not patterns:
        return list(cases)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    def hit(case, p):
        return (p == "training" and case.training) or p in case.name or fnmatch.fnmatch(case.name, p)
    return [c for c in cases if any(hit(c, p) for p in wanted)]


def conv_flops(batch: int, channels: int, out_channels: int, groups: int,
               kernel: Sequence[int], out_spatial: Sequence[int]) -> int:
    """Forward cost of a convolution: ``2·N·O·(C/g)·∏K·∏S_out`` (one multiply-add = 2)."""
    return 2 * batch * out_channels * (channels // groups) * math.prod(kernel) * math.prod(out_spatial)


def case_flops(case: Case, mode: str) -> int | None:
    """FLOPs of ``case`` in ``mode`` (×3 for fwd+bwd); None for pooling (no multiply-adds).
    ``conv_transpose`` is a conv from its output back to its input: ``∏S`` of the input."""
    if case.op == "conv":
        f = conv_flops(case.batch, case.channels, case.out_channels, case.groups, case.kernel,
                       case.out_spatial())
    elif case.op == "conv_transpose":
        f = conv_flops(case.batch, case.out_channels, case.channels, case.groups, case.kernel,
                       case.spatial)
    else:
        return None
    return 3 * f if mode == "fwd+bwd" else f


def available(case: Case) -> str | None:
    """Why ``case`` cannot run in this jaxcnn (None if it can)."""
    name = "conv" if case.op == "conv" else case.op
    return None if hasattr(jaxcnn, name) else f"jaxcnn.{name} does not exist yet"


# ----------------------------------------------------------------------------- the contenders

def _lax_specs(n: int, channels_last: bool, transpose: bool) -> tuple[str, str, str]:
    sp = "DHW"[3 - n:] if n <= 3 else None
    if sp is None:
        raise ValueError(f"case: expected 1 to 3 spatial axes for the lax baseline; got {n}")
    act = f"N{sp}C" if channels_last else f"NC{sp}"
    kernel = (f"{sp}OI" if transpose else f"{sp}IO") if channels_last else ("IO" if transpose else "OI") + sp
    return act, kernel, act


def baseline_fn(case: Case, channels_last: bool, acc: Any = None) -> Callable:
    """Plain ``lax``, differentiated by JAX autodiff: the baseline every ratio divides by."""
    n, pads = case.n, [(case.padding, case.padding)] * case.n
    if case.op in ("max_pool", "avg_pool"):
        window = (1, *case.kernel, 1) if channels_last else (1, 1, *case.kernel)
        strides = (1, *(case.stride,) * n, 1) if channels_last else (1, 1, *(case.stride,) * n)
        full = [(0, 0)] + pads + [(0, 0)] if channels_last else [(0, 0), (0, 0)] + pads
        if case.op == "max_pool":
            return lambda x: jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max,
                                                   window, strides, full)
        return lambda x: jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, window, strides,
                                               full) / math.prod(case.kernel)
    dn = _lax_specs(n, channels_last, case.op == "conv_transpose")
    if case.op == "conv":
        return lambda x, w: jax.lax.conv_general_dilated(
            x, w, (case.stride,) * n, pads, dimension_numbers=dn, feature_group_count=case.groups,
            preferred_element_type=acc)
    # conv_transpose = the input-gradient of a conv: dilate x by the stride, pad by K−1−p and
    # correlate with the flipped kernel (its I/O roles read swapped through the dimension numbers).
    if case.groups != 1:
        raise ValueError(f"case: the conv_transpose baseline expects groups=1; got {case.groups}")
    flip_axes = tuple(range(n)) if channels_last else tuple(range(2, 2 + n))
    tpads = [(k - 1 - case.padding, k - 1 - case.padding) for k in case.kernel]
    return lambda x, w: jax.lax.conv_general_dilated(
        x, jnp.flip(w, flip_axes), (1,) * n, tpads, lhs_dilation=(case.stride,) * n,
        dimension_numbers=dn, preferred_element_type=acc)


def jaxcnn_fn(case: Case, channels_last: bool, impl: str, acc: Any = None) -> Callable:
    """jaxcnn's op for ``case`` (``impl`` "lax" or "manual"; pooling has one, "jaxcnn")."""
    if case.op in ("max_pool", "avg_pool"):
        pool = getattr(jaxcnn, case.op)
        return lambda x: pool(x, case.kernel, case.stride, case.padding, channels_last=channels_last)
    kwargs = dict(stride=case.stride, padding=case.padding, groups=case.groups,
                  channels_last=channels_last, impl=impl)
    if case.op == "conv":
        return lambda x, w: jaxcnn.conv(x, w, **kwargs, preferred_element_type=acc)
    return lambda x, w: jaxcnn.conv_transpose(x, w, **kwargs)


def torch_fn(case: Case) -> Callable:
    import torch.nn.functional as F
    n = case.n
    if case.op == "conv":
        conv = getattr(F, f"conv{n}d")
        return lambda x, w: conv(x, w, None, case.stride, case.padding, 1, case.groups)
    if case.op == "conv_transpose":
        conv = getattr(F, f"conv_transpose{n}d")
        return lambda x, w: conv(x, w, None, case.stride, case.padding, 0, case.groups)
    pool = getattr(F, f"{case.op}{n}d")
    return lambda x: pool(x, case.kernel, case.stride, case.padding)


# ----------------------------------------------------------------------------- timing

def time_call(call: Callable[[], Any], sync: Callable[[Any], Any], repeats: int,
              min_seconds: float = 0.0) -> tuple[list[float], Any]:
    """Milliseconds of synchronised calls after a first (compiling) call and a timed warm-up:
    ``repeats`` of them, or more (up to 50) until ``min_seconds`` are spent, which steadies the
    fast cases on a shared machine. Also returns the first call's output."""
    out = call()
    sync(out)
    start = time.perf_counter()
    sync(call())
    warm = time.perf_counter() - start
    count = max(repeats, min(50, math.ceil(min_seconds / max(warm, 1e-6))))
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - start)
    return [t * 1e3 for t in times], out


def matmul_peak(n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a square float32 ``n × n`` matmul on ``jax.devices()[0]``: the yardstick. A
    peak, so the fastest call counts (a shared machine only ever slows calls down)."""
    a = jax.device_put(jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32))
    f = jax.jit(jnp.matmul)
    times, _ = time_call(lambda: f(a, a), jax.block_until_ready, repeats)
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


class TorchSide:
    """PyTorch beside JAX: CUDA (cuDNN autotuned) if available, else CPU."""

    def __init__(self) -> None:
        import torch
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def sync(self, _: Any) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def memory_format(self, ndim: int, channels_last: bool):
        torch = self.torch
        if not channels_last or ndim == 3:   # torch has no channels-last format for 1D
            return torch.contiguous_format
        return torch.channels_last if ndim == 4 else torch.channels_last_3d

    def tensor(self, a: np.ndarray, kind: str, dtype: str, channels_last: bool, grad: bool = False):
        """``a`` (in the row's JAX layout) as a torch tensor, channels first, in channels-last
        memory format on channels-last rows. ``kind``: "act" or "kernel"."""
        if channels_last:
            a = np.moveaxis(a, -1, 1) if kind == "act" else np.moveaxis(a, (-1, -2), (0, 1))
        torch = self.torch
        t = torch.from_numpy(np.array(a, np.float32, order="C")).to(self.device, getattr(torch, dtype))
        return t.contiguous(memory_format=self.memory_format(t.ndim, channels_last)).requires_grad_(grad)

    def runner(self, case: Case, mode: str, operands: list, ct: Any) -> Callable:
        f, torch = torch_fn(case), self.torch
        if mode == "fwd":
            def forward():
                with torch.no_grad():
                    return (f(*operands),)
            return forward
        def forward_backward():
            loss = torch.sum(f(*operands).float() * ct.float())
            return torch.autograd.grad(loss, operands)
        return forward_backward

    @staticmethod
    def to_numpy(outs: Sequence[Any], channels_last: bool) -> list[np.ndarray]:
        """Torch outputs ``(y,)`` or ``(dx[, dw])`` back in the row's JAX layout."""
        arrays = [t.detach().float().cpu().numpy() for t in outs]
        if not channels_last:
            return arrays
        return [np.moveaxis(a, 1, -1) if i == 0 else np.moveaxis(a, (0, 1), (-1, -2))
                for i, a in enumerate(arrays)]


# ----------------------------------------------------------------------------- one row

def describe(case: Case) -> str:
    """``2×64×56×56 → 64 k3`` (batch × channels × spatial → out channels, kernel, stride, groups)."""
    shape = "×".join(map(str, (case.batch, case.channels, *case.spatial)))
    if case.op in ("max_pool", "avg_pool"):
        text = f"{shape} {case.op.split('_')[0]} {case.kernel[0]}"
    else:
        text = f"{shape} → {case.out_channels} k{case.kernel[0]}"
    text += f" s{case.stride}" if case.stride > 1 else ""
    return text + (f" g{case.groups}" if case.groups > 1 else "")


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
    ms: dict[str, float] = {}
    ms_min: dict[str, float] = {}
    errs: dict[str, float | None] = {}
    failures: dict[str, str] = {}
    ref = None
    for impl, f in contenders.items():
        try:
            run = _jax_runner(f, mode, len(operands))
            times, out = time_call(lambda: run(*jax_args), jax.block_until_ready, repeats, min_seconds)
            ms[impl], ms_min[impl] = statistics.median(times), min(times)
            outs = _jax_outputs(out, mode)
            ref = outs if ref is None else ref
            errs[impl] = rel_err(outs, ref)
        except Exception as err:  # a broken contender is reported, the run goes on
            failures[impl] = f"{type(err).__name__}: {err}"[:300]
    if torch_side is not None and "torch" in impls:
        tdtype = "bfloat16" if dtype.startswith("bfloat16") else dtype
        try:
            t_ops = [torch_side.tensor(a, kind, tdtype, channels_last, grad=mode != "fwd")
                     for kind, a in operands]
            t_ct = torch_side.tensor(ct, "act", tdtype, channels_last)
            times, out = time_call(torch_side.runner(case, mode, t_ops, t_ct), torch_side.sync,
                                   repeats, min_seconds)
            ms["torch"], ms_min["torch"] = statistics.median(times), min(times)
            if ref is not None:
                errs["torch"] = rel_err(torch_side.to_numpy(out, channels_last), ref)
        except Exception as err:
            failures["torch"] = f"{type(err).__name__}: {err}"[:300]
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
                                    torch_side, peak["gflops"], 0.0 if scale == "quick" else 0.2)
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
