"""The verification matrix behind ``jaxcnn gradcheck``: every op's configurations.

Each op is one entry of ``OPS``: a function ``(rng) -> list[Case]`` giving its configurations
(arguments and keyword arguments; ``cases``). ``jaxcnn.gradcheck.command`` runs them. Together they cover 1D/2D/3D × strides × paddings (ints,
per-axis ints, ``(lo, hi)`` pairs, every string, any case) × padding modes × dilations ×
groups × layouts × impls. Rather than the full product (thousands of compilations), each
variant runs once per number of spatial axes, the (impl, layout) pair cycling so that every
variant meets both impls and both layouts and every dimension all four pairs. Each case is
checked in float64 against autodiff and finite differences (``checks.check``); every
third also in float32 against the float64 reference (``checks.check_dtype``), and one per
dimension at order 2 (grad-of-grad). Each float64 order-1 case is also checked in forward
mode and batched (``pytrees.check_modes``: the JVP against autodiff of the reference and finite
differences, the jvp/vjp consistency, ``vmap`` of the VJP and of the JVP against the
per-example ones); an op with no forward mode on this build (a ``jax.custom_vjp``) is marked
``n/a (no forward mode)`` there instead of failing, and its batched reverse mode still runs.
"""
from __future__ import annotations

import zlib
from typing import Callable

import jax
import numpy as np

from jaxcnn import reference
from jaxcnn import sharded as _sharded
from jaxcnn.conv import conv, conv1d, conv2d, conv3d, conv_input_grad, conv_weight_grad
from jaxcnn.gradcheck.cases import (KERNELS, SIZES, Case, both_layouts, expand, geometry,
                                    layout_label, per_axis)
from jaxcnn.norm import group_norm
from jaxcnn.pool import avg_pool, global_avg_pool, max_pool
from jaxcnn.transpose import conv_transpose, convolve
from jaxcnn import lax as jaxcnn_lax

# The functions under test, by the name a Case gives (``jaxcnn.<name>``).
FUNCTIONS = {f.__name__: f for f in (conv, conv1d, conv2d, conv3d, conv_input_grad,
                                     conv_weight_grad, convolve, conv_transpose, max_pool,
                                     avg_pool, global_avg_pool, group_norm)}
FUNCTIONS.update({"lax.conv_general_dilated": jaxcnn_lax.conv_general_dilated,
                  "lax.conv_transpose": jaxcnn_lax.conv_transpose})


# Ops whose reference has another name than ``reference_name``'s rule gives.
REFERENCE_NAMES: dict[str, str] = {}


def reference_name(op: str) -> str:
    """The name of ``op``'s reference in ``jaxcnn.reference`` (``lax.x`` → ``lax_x``), or the
    one ``REFERENCE_NAMES`` gives."""
    return REFERENCE_NAMES.get(op, op.replace(".", "_"))


# ----------------------------------------------------------------------------- conv family

# (label, input channels, output channels, bias, kwargs for n spatial axes)
CONV_VARIANTS = (
    ("plain", 3, 4, True, lambda n: {}),
    ("stride 2, padding 1", 3, 2, True, lambda n: dict(stride=2, padding=1)),
    ("SAME, dilation 2", 2, 3, False, lambda n: dict(padding="SAME", dilation=2)),
    ("same, stride 2", 2, 2, True, lambda n: dict(padding="same", stride=2)),
    ("FULL, groups 2", 4, 2, True, lambda n: dict(padding="FULL", groups=2)),
    ("CAUSAL, dilation 2", 2, 2, False, lambda n: dict(padding="causal", dilation=2)),
    ("(lo, hi) pairs, per-axis stride and dilation", 2, 3, True, lambda n: dict(
        padding=per_axis(((1, 0), (0, 2), (2, 1)), n), stride=per_axis((1, 2, 1), n),
        dilation=per_axis((2, 1, 1), n))),
    ("per-axis int padding, groups 2", 4, 4, False, lambda n: dict(
        padding=per_axis((1, 0, 1), n), groups=2)),
    ("VALID, per-axis stride", 3, 2, False, lambda n: dict(padding="VALID",
                                                           stride=per_axis((2, 1, 2), n))),
    ("reflect, padding 1, stride 2", 2, 3, True, lambda n: dict(padding=1, padding_mode="reflect",
                                                                stride=2)),
    ("replicate, SAME", 3, 2, False, lambda n: dict(padding="SAME", padding_mode="replicate")),
    ("circular, padding 2, depthwise", 4, 4, True, lambda n: dict(
        padding=2, padding_mode="circular", groups=4)),
)
ZERO_PADDED = tuple(v for v in CONV_VARIANTS if "padding_mode" not in v[4](1))


def _conv_arrays(op, variant, n, channels_last, rng):
    label, c_in, c_out, bias, kwargs = variant
    shapes = geometry(op, n, c_in, channels_last, out_channels=c_out, bias=bias, **kwargs(n))
    kwargs = dict(kwargs(n), channels_last=channels_last)
    x = rng.standard_normal(shapes.x_shape())
    w = rng.standard_normal(shapes.w_shape())
    b = rng.standard_normal(c_out) if bias else None
    return label, x, w, b, kwargs, shapes


def _conv_case(op: str, name_by_n: bool = False):
    def build(variant, n, impl, channels_last, rng):
        label, x, w, b, kwargs, shapes = _conv_arrays(op, variant, n, channels_last, rng)
        # Half the cases (lax channels-last, manual channels-first) through conv1d/2d/3d.
        function = f"{op}{n}d" if name_by_n and channels_last == (impl == "lax") else op
        return Case(op, function, op, f"{n}D {label}, {layout_label(impl, channels_last)}",
                    (x, w, b), dict(kwargs, impl=impl), geometry=shapes.replace(impl=impl))
    return build


def _grad_case(op: str):
    def build(variant, n, impl, channels_last, rng):
        label, x, w, _, kwargs, shapes = _conv_arrays(op, variant, n, channels_last, rng)
        kwargs = dict(kwargs, impl=impl)
        dy = rng.standard_normal(shapes.y_shape())
        args = (dy, w, x.shape) if op == "conv_input_grad" else (x, dy, w.shape)
        return Case(op, op, op, f"{n}D {label}, {layout_label(impl, channels_last)}", args, kwargs,
                    geometry=shapes.replace(impl=impl, bias=False))
    return build


# ----------------------------------------------------------------------------- conv_transpose

TRANSPOSE_SIZES = {1: (5,), 2: (4, 3), 3: (3, 2, 3)}
TRANSPOSE_VARIANTS = (
    ("plain", 3, 2, True, lambda n: {}),
    ("stride 2, padding 1, output_padding 1", 2, 3, True, lambda n: dict(
        stride=2, padding=1, output_padding=1)),
    ("SAME, stride 2", 2, 2, False, lambda n: dict(padding="SAME", stride=2)),
    ("dilation 2, stride 2, output_padding 1", 2, 2, True, lambda n: dict(
        dilation=2, stride=2, output_padding=1)),
    ("groups 2, (lo, hi) pairs, per-axis stride", 4, 4, False, lambda n: dict(
        groups=2, padding=per_axis(((1, 0), (0, 1), (1, 1)), n), stride=per_axis((2, 1, 2), n))),
    ("VALID, stride 3", 2, 3, True, lambda n: dict(padding="valid", stride=3)),
    ("reflect, padding 1", 2, 2, True, lambda n: dict(padding=1, padding_mode="reflect")),
    ("circular, padding 1, stride 2", 2, 3, False, lambda n: dict(padding=1, stride=2,
                                                                  padding_mode="circular")),
    ("replicate, padding 1", 3, 2, False, lambda n: dict(padding=1, padding_mode="replicate")),
)


def _transpose_case(variant, n, impl, channels_last, rng):
    label, c_in, c_out, bias, kwargs = variant
    shapes = geometry("conv_transpose", n, c_in, channels_last, out_channels=c_out, bias=bias,
                      sizes=TRANSPOSE_SIZES[n], impl=impl, **kwargs(n))
    kwargs = dict(kwargs(n), channels_last=channels_last, impl=impl)
    x = rng.standard_normal(shapes.x_shape())
    w = rng.standard_normal(shapes.w_shape())     # (C_in, C_out // groups, *K), as PyTorch
    b = rng.standard_normal(c_out) if bias else None
    return Case("conv_transpose", "conv_transpose", "conv_transpose",
                f"{n}D {label}, {layout_label(impl, channels_last)}", (x, w, b), kwargs,
                geometry=shapes)


# ----------------------------------------------------------------------------- jaxcnn.lax
# lax's argument forms, not jaxcnn.conv's: dimension-number strings in several orders, lhs
# dilation (a transposed conv), batch groups (lax's weight-gradient form), negative padding.
# Layout per n: the family's channels-last form, or a permutation of lax's default.

LAX_LAYOUTS = {False: {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"),
                       3: ("NCDHW", "OIDHW", "NCDHW")},
               True: {1: ("NHC", "HIO", "NHC"), 2: ("HNWC", "HWOI", "CNHW"),
                      3: ("NDHWC", "DHWIO", "NDHWC")}}
# (label, lhs channels, rhs out-features, batch, kwargs for n axes)
LAX_VARIANTS = (
    ("SAME, stride 2", 2, 3, 2, lambda n: dict(window_strides=(2,) * n, padding="SAME")),
    ("SAME_LOWER, rhs dilation 2", 2, 2, 2, lambda n: dict(window_strides=(1,) * n,
                                                          padding="SAME_LOWER", rhs_dilation=(2,) * n)),
    ("negative padding", 3, 2, 2, lambda n: dict(window_strides=(1,) * n,
                                                 padding=per_axis(((1, -1), (0, 1), (-1, 0)), n))),
    ("lhs dilation 2 (transposed)", 2, 3, 2, lambda n: dict(
        window_strides=(1,) * n, padding=((2, 1),) * n, lhs_dilation=(2,) * n)),
    ("lhs dilation and stride", 2, 2, 2, lambda n: dict(
        window_strides=per_axis((2, 1, 2), n), padding=((1, 1),) * n, lhs_dilation=(2,) * n)),
    ("feature groups 2", 4, 2, 2, lambda n: dict(window_strides=(1,) * n, padding="VALID",
                                                 feature_group_count=2)),
    ("batch groups 2", 2, 4, 4, lambda n: dict(window_strides=(1,) * n, padding=((1, 0),) * n,
                                               batch_group_count=2)),
)


def _lax_case(variant, n, impl, channels_last, rng):
    label, c_in, c_out, batch, kwargs = variant
    kwargs = kwargs(n)
    dn = LAX_LAYOUTS[channels_last][n]
    groups = kwargs.get("feature_group_count", 1)
    family = {"N": batch, "C": c_in, "O": c_out, "I": c_in // groups}
    spatial = "HW"[:n] if n < 3 else "DHW"
    sizes, k_sizes = dict(zip(spatial, SIZES[n])), dict(zip(spatial, KERNELS[n]))
    lhs = rng.standard_normal(tuple(family.get(c, sizes.get(c)) for c in dn[0]))
    rhs = rng.standard_normal(tuple(family.get(c, k_sizes.get(c)) for c in dn[1]))
    return Case("lax.conv_general_dilated", "lax.conv_general_dilated", "lax_conv_general_dilated",
                f"{n}D {label}, {'/'.join(dn)} {impl}", (lhs, rhs),
                dict(kwargs, dimension_numbers=dn, impl=impl))


LAX_TRANSPOSE_VARIANTS = (
    ("SAME, stride 2", lambda n: dict(strides=(2,) * n, padding="SAME")),
    ("VALID, stride 2, transpose_kernel", lambda n: dict(strides=(2,) * n, padding="VALID",
                                                         transpose_kernel=True)),
    ("(lo, hi) pairs, rhs dilation 2", lambda n: dict(strides=per_axis((1, 2, 1), n),
                                                      padding=((1, 0),) * n, rhs_dilation=(2,) * n)),
)


def _lax_transpose_case(variant, n, impl, channels_last, rng):
    label, kwargs = variant
    dn = LAX_LAYOUTS[channels_last][n] if not channels_last else None   # None: lax's NHWC default
    kwargs = dict(kwargs(n), dimension_numbers=dn, impl=impl)
    # conv_transpose's kernel is the lhs-dilated conv's: (O, I, *K), or (*K, I, O) by default.
    shapes = geometry("conv", n, 2, dn is None, out_channels=3, sizes=TRANSPOSE_SIZES[n])
    lhs = rng.standard_normal(shapes.x_shape())
    rhs = rng.standard_normal(shapes.w_shape())
    if kwargs.get("transpose_kernel"):      # the forward conv's kernel: I and O exchanged
        rhs = np.swapaxes(rhs, -1, -2) if dn is None else np.swapaxes(rhs, 0, 1)
    return Case("lax.conv_transpose", "lax.conv_transpose", "lax_conv_transpose",
                f"{n}D {label}, {'default NHWC' if dn is None else '/'.join(dn)} {impl}",
                (lhs, rhs), kwargs)


# ----------------------------------------------------------------------------- pooling

MAX_POOL_VARIANTS = (
    ("window 2", lambda n: dict(window=2)),
    ("window 3, stride 2, padding 1", lambda n: dict(window=3, stride=2, padding=1)),
    ("window 2, stride 1, dilation 2", lambda n: dict(window=2, stride=1, dilation=2)),
    ("window 3, stride 2, ceil_mode", lambda n: dict(window=3, stride=2, ceil_mode=True)),
    ("per-axis window, stride, padding", lambda n: dict(
        window=per_axis((2, 3, 2), n), stride=per_axis((1, 2, 1), n),
        padding=per_axis((1, 1, 0), n))),
    ("window 3, stride 1, padding 1", lambda n: dict(window=3, stride=1, padding=1)),
)
AVG_POOL_VARIANTS = (
    ("window 2", lambda n: dict(window=2)),
    ("window 3, stride 2, padding 1", lambda n: dict(window=3, stride=2, padding=1)),
    ("window 3, stride 2, padding 1, count_include_pad=False", lambda n: dict(
        window=3, stride=2, padding=1, count_include_pad=False)),
    ("window 3, stride 2, ceil_mode", lambda n: dict(window=3, stride=2, ceil_mode=True)),
    ("per-axis window, ceil_mode, count_include_pad=False", lambda n: dict(
        window=per_axis((2, 3, 2), n), stride=per_axis((1, 2, 2), n),
        padding=per_axis((1, 1, 0), n), ceil_mode=True, count_include_pad=False)),
)


def _pool_geometry(op: str, n: int, channels_last: bool, kwargs: dict, sizes=None):
    """A pooling row's geometry: 3 channels, the window as the kernel."""
    fields = {k: kwargs[k] for k in ("stride", "padding", "dilation", "ceil_mode") if k in kwargs}
    window = kwargs.get("window", ())
    kernel = (window,) * n if isinstance(window, int) else window
    return geometry(op, n, 3, channels_last, out_channels=3, kernel=kernel,
                    sizes=SIZES[n] if sizes is None else sizes, **fields)


def _pool_case(op: str):
    def build(variant, n, impl, channels_last, rng):
        label, kwargs = variant
        # Continuous random data: no ties, so max pooling is differentiable at x.
        shapes = _pool_geometry(op, n, channels_last, kwargs(n))
        x = rng.standard_normal(shapes.x_shape())
        return Case(op, op, op, f"{n}D {label}, {layout_label(None, channels_last)}", (x,),
                    dict(kwargs(n), channels_last=channels_last), geometry=shapes)
    return build


GLOBAL_VARIANTS = (("mean over every spatial axis", lambda n: {}),)


# ----------------------------------------------------------------------------- group norm

GROUP_NORM_VARIANTS = (  # (label, groups) over 6 channels
    ("3 groups", 3),
    ("one group", 1),
    ("6 groups (instance norm)", 6),
)


def _group_norm_case(variant, n, impl, channels_last, rng):
    label, groups = variant
    # Mean 1, spread 2: the centring matters. x, scale and bias are all differentiated.
    shapes = geometry("group_norm", n, 6, channels_last, out_channels=6, groups=groups, kernel=())
    x = rng.standard_normal(shapes.x_shape()) * 2 + 1
    return Case("group_norm", "group_norm", "group_norm", f"{n}D {label}, {layout_label(None, channels_last)}",
                (x, groups, rng.standard_normal(6), rng.standard_normal(6)), dict(channels_last=channels_last),
                geometry=shapes)


OPS: dict[str, Callable[[np.random.Generator], list[Case]]] = {
    "conv": lambda rng: expand("conv", CONV_VARIANTS, rng, _conv_case("conv", name_by_n=True)),
    "conv_input_grad": lambda rng: expand("conv_input_grad", ZERO_PADDED, rng,
                                           _grad_case("conv_input_grad")),
    "conv_weight_grad": lambda rng: expand("conv_weight_grad", ZERO_PADDED, rng,
                                            _grad_case("conv_weight_grad")),
    "convolve": lambda rng: expand("convolve", CONV_VARIANTS[::2], rng, _conv_case("convolve")),
    "conv_transpose": lambda rng: expand("conv_transpose", TRANSPOSE_VARIANTS, rng, _transpose_case),
    "max_pool": lambda rng: expand("max_pool", MAX_POOL_VARIANTS, rng, _pool_case("max_pool")),
    "avg_pool": lambda rng: expand("avg_pool", AVG_POOL_VARIANTS, rng, _pool_case("avg_pool")),
    "global_avg_pool": lambda rng: both_layouts("global_avg_pool", GLOBAL_VARIANTS, rng,
                                                   _pool_case("global_avg_pool")),
    "group_norm": lambda rng: both_layouts("group_norm", GROUP_NORM_VARIANTS, rng, _group_norm_case),
    "lax.conv_general_dilated": lambda rng: expand("lax.conv_general_dilated", LAX_VARIANTS, rng,
                                                    _lax_case),
    "lax.conv_transpose": lambda rng: expand("lax.conv_transpose", LAX_TRANSPOSE_VARIANTS, rng,
                                              _lax_transpose_case),
}


# ----------------------------------------------------------------------------- sharded (begin)
# jaxcnn.sharded's ops on the global array, split along the first spatial axis over a mesh of
# 2 devices where the process has two or more (else 1: the exchange's ends only),
# against the unsharded op's reference: the rows check the halo exchange's hand-written VJP
# (and the local op's rules) against autodiff of plain lax on the whole array.

def _sharded_mesh() -> jax.sharding.Mesh:
    from jaxcnn._compat import make_mesh
    return make_mesh((2 if jax.device_count() >= 2 else 1,), ("shards",))


def sharded_conv(x, w, b=None, **kwargs):
    """``jaxcnn.sharded.conv`` on a global ``x`` split along its first spatial axis."""
    return _sharded.conv(x, w, b, mesh=_sharded_mesh(), axis_name="shards", **kwargs)


def sharded_max_pool(x, **kwargs):
    """``jaxcnn.sharded.max_pool`` on a global ``x`` split along its first spatial axis."""
    return _sharded.max_pool(x, mesh=_sharded_mesh(), axis_name="shards", **kwargs)


def sharded_avg_pool(x, **kwargs):
    """``jaxcnn.sharded.avg_pool`` on a global ``x`` split along its first spatial axis."""
    return _sharded.avg_pool(x, mesh=_sharded_mesh(), axis_name="shards", **kwargs)


# The split axis has 8 samples (4 per shard); its padding tiles the shards
# (e − s ≤ lo + hi ≤ e − 1, e the dilated kernel extent; kernel 3 on every axis).
SHARDED_SIZES = {1: (8,), 2: (8, 5), 3: (8, 4, 3)}
SHARDED_CONV_VARIANTS = (
    ("padding 1", 2, 3, True, lambda n: dict(padding=1)),
    ("SAME, stride 2, reflect", 2, 2, True, lambda n: dict(padding="SAME", stride=2,
                                                           padding_mode="reflect")),
    ("dilation 2, padding 2, circular", 2, 3, False, lambda n: dict(
        dilation=2, padding=2, padding_mode="circular")),
    ("CAUSAL, replicate, groups 2", 4, 2, True, lambda n: dict(padding="causal", groups=2,
                                                               padding_mode="replicate")),
    ("(lo, hi) pairs, stride 2, dilation 2", 2, 2, False, lambda n: dict(
        padding=per_axis(((2, 1), (1, 1), (0, 2)), n), stride=2, dilation=2)),
)
SHARDED_MAX_POOL_VARIANTS = (
    ("window 3, stride 1, padding 1", lambda n: dict(window=3, stride=1, padding=1)),
    ("window 3, stride 2, ceil_mode", lambda n: dict(window=3, stride=2, ceil_mode=True)),
)
SHARDED_AVG_POOL_VARIANTS = (
    ("window 2", lambda n: dict(window=2)),
    ("window 3, stride 1, padding 1, count_include_pad=False", lambda n: dict(
        window=3, stride=1, padding=1, count_include_pad=False)),
)


def _sharded_conv_case(variant, n, impl, channels_last, rng):
    label, c_in, c_out, bias, kwargs = variant
    shapes = geometry("conv", n, c_in, channels_last, out_channels=c_out, bias=bias,
                      sizes=SHARDED_SIZES[n], kernel=KERNELS[1] * n, impl=impl, **kwargs(n))
    kwargs = dict(kwargs(n), channels_last=channels_last, impl=impl)
    x = rng.standard_normal(shapes.x_shape())
    w = rng.standard_normal(shapes.w_shape())
    b = rng.standard_normal(c_out) if bias else None
    return Case("sharded.conv", "sharded.conv", "conv",
                f"{n}D {label}, {layout_label(impl, channels_last)}", (x, w, b), kwargs,
                geometry=shapes)


def _sharded_pool_case(op: str):
    def build(variant, n, impl, channels_last, rng):
        label, kwargs = variant
        shapes = _pool_geometry(op, n, channels_last, kwargs(n), sizes=SHARDED_SIZES[n])
        x = rng.standard_normal(shapes.x_shape())
        return Case(f"sharded.{op}", f"sharded.{op}", op,
                    f"{n}D {label}, {layout_label(None, channels_last)}", (x,),
                    dict(kwargs(n), channels_last=channels_last), geometry=shapes)
    return build


FUNCTIONS.update({"sharded.conv": sharded_conv, "sharded.max_pool": sharded_max_pool,
                  "sharded.avg_pool": sharded_avg_pool})
# Only on releases with the public jax.shard_map: on jax 0.4.30 (jax.experimental.shard_map)
# the matrix's float32 3D max-pool row (window 3, stride 2, ceil_mode) drove one process past
# 15 GB; tests/test_sharded.py covers the sharded ops there.
SHARDED_ROWS = hasattr(jax, "shard_map")
if SHARDED_ROWS:
    OPS.update({
        "sharded.conv": lambda rng: expand("sharded.conv", SHARDED_CONV_VARIANTS, rng,
                                            _sharded_conv_case),
        "sharded.max_pool": lambda rng: expand("sharded.max_pool", SHARDED_MAX_POOL_VARIANTS,
                                                rng, _sharded_pool_case("max_pool")),
        "sharded.avg_pool": lambda rng: expand("sharded.avg_pool", SHARDED_AVG_POOL_VARIANTS,
                                                rng, _sharded_pool_case("avg_pool")),
    })
REFERENCE_NAMES.update({"sharded.conv": "conv", "sharded.max_pool": "max_pool",
                        "sharded.avg_pool": "avg_pool"})
# ----------------------------------------------------------------------------- sharded (end)


def available_ops() -> list[str]:
    """The ops of ``OPS`` that exist both in ``FUNCTIONS`` and in ``jaxcnn.reference``."""
    return [op for op in OPS
            if op in FUNCTIONS and callable(getattr(reference, reference_name(op), None))]


def cases_for(op: str, seed: int) -> list[Case]:
    """``op``'s configurations, with data drawn from a generator seeded by (seed, op)."""
    return OPS[op](np.random.default_rng([seed, zlib.crc32(op.encode())]))


def select(ops: list[str], seed: int, quick: bool) -> list[Case]:
    """Every case of ``ops``, or with ``quick`` one drawn per op (seeded)."""
    rng = np.random.default_rng(seed)
    cases = []
    for op in ops:
        found = cases_for(op, seed)
        cases += [found[rng.integers(len(found))]] if quick else found
    return cases
