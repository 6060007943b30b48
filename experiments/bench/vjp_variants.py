r"""Prototype formulations of conv's forward and VJP pieces, outside jaxcnn/conv.py.

Each function takes the same canonical ``ConvSpec`` as jaxcnn's impls (zero padding as
``(lo, hi)`` pairs, either layout, groups) and must give the numbers of
``jaxcnn.conv_input_grad`` / ``conv_weight_grad`` / ``conv``: ``check()`` verifies that in
float64 over strides, dilations, groups, layouts and 1D–3D. ``investigate.py`` times them.

- ``forward_im2col``: stack the ∏K strided slices ``x_pad[i·s + k·d]`` along a tap axis, then
  one contraction over (tap, channel): the manual forward as ONE matmul of depth ``∏K·C``
  instead of ∏K matmuls of depth ``C`` (which starve the BLAS kernel when ``C`` is 1 or 3).
- ``input_grad_im2col``: ``dx`` is the stride-1 correlation of the stride-dilated, padded ``dy``
  with the flipped, channel-swapped kernel: ``forward_im2col`` of that.
- ``input_grad_phases``: for stride ``s > 1`` (dilation 1) the dilated ``dy`` is mostly zeros.
  Split ``dx_pad`` by residue ``r = p mod s``: ``dx_pad[s·j + r] = Σ_m w[r + s·m]ᵀ · dy[j − m]``,
  a stride-1 full correlation with the sub-kernel ``w[r::s]`` flipped; ``s^n`` small convs with
  no zeros, interleaved.
- ``weight_grad_im2col``: ``dw[k] = Σ_{n,i} dy[n, i] ⊗ x_pad[n, i·s + k·d]``: the stacked slices
  contracted with ``dy`` over (batch, positions): one matmul of shape ``(∏K·C) × (N·∏S_out) ×
  O`` instead of a convolution whose "kernel" is the whole of ``dy``.
- ``*_channels_last``: run jaxcnn's lax piece in channels-last layout, transposing at the
  edges: does XLA's CPU convolution prefer NHWC?
"""
from __future__ import annotations

import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn._args import ConvSpec, normalize_conv
from jaxcnn.conv import conv_core, input_grad_core, weight_grad_core
from jaxcnn._shapes import input_grad_padding, kernel_sizes, spatial_sizes
from jaxcnn._taps import offsets, pad_axes
from jaxcnn._conv.rules import patches
from jaxcnn._conv.pieces import flip_swap_io, tap_window, zero_pad


def conv_spec(x_shape, w_shape, dtype=jnp.float32, **kwargs: Any) -> ConvSpec:
    """The canonical spec jaxcnn.conv builds for these shapes and arguments."""
    kwargs = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "channels_last": False, **kwargs}
    return normalize_conv(jax.ShapeDtypeStruct(x_shape, dtype), jax.ShapeDtypeStruct(w_shape, dtype),
                          None, padding_mode="zeros", impl="lax", **kwargs).spec


def _contract(subscripts, a, b, spec):
    return jnp.einsum(subscripts, a, b, precision=spec.precision,
                      preferred_element_type=spec.preferred_element_type)


def forward_im2col(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``y[i] = Σ_{k,c} w[k, c] · x_pad[i·s + k·d, c]`` as one contraction over (tap, channel)."""
    x_pad = zero_pad(x, spec, spec.padding)
    k_sizes = kernel_sizes(w.shape, spec)
    out = tuple((size + lo + hi - d * (k - 1) - 1) // s + 1 for size, k, s, d, (lo, hi)
                in zip(spatial_sizes(x.shape, spec), k_sizes, spec.stride, spec.dilation, spec.padding))
    p = patches(x_pad, spec, k_sizes, out)
    g, t = spec.groups, int(np.prod(k_sizes))
    if spec.channels_last:                      # w (*K, C/g, O) → (T, C/g, G, O/g)
        wt = w.reshape(t, w.shape[-2], g, w.shape[-1] // g)
        y = _contract("n...tgc,tcgo->n...go", p, wt, spec)
        return y.reshape(*y.shape[:-2], -1)
    wt = w.reshape(g, w.shape[0] // g, w.shape[1], t)       # w (O, C/g, *K) → (G, O/g, C/g, T)
    y = _contract("ngct...,goct->ngo...", p, wt, spec)
    return y.reshape(y.shape[0], -1, *y.shape[3:])


def _dilated_dy(dy, w, spec: ConvSpec, in_shape):
    """``dy`` with ``s − 1`` zeros between samples and padded (or cropped) for the full
    correlation that gives ``dx``; and the stride-1, unpadded spec of that correlation."""
    pads = input_grad_padding(spatial_sizes(in_shape, spec), kernel_sizes(w.shape, spec),
                              spatial_sizes(dy.shape, spec), spec.stride, spec.dilation,
                              spec.padding)
    dy_d = pad_axes(dy.astype(w.dtype), spec.spatial_axes(), pads, 0, [s - 1 for s in spec.stride])
    return dy_d, spec.replace(stride=(1,) * spec.n, padding=((0, 0),) * spec.n)


def input_grad_im2col(dy, w, spec: ConvSpec, in_shape) -> jax.Array:
    dy_d, spec1 = _dilated_dy(dy, w, spec, in_shape)
    return forward_im2col(dy_d, flip_swap_io(w, spec), spec1).astype(w.dtype)


def input_grad_phases(dy, w, spec: ConvSpec, in_shape) -> jax.Array:
    """Sub-pixel ``dx`` for dilation 1: one stride-1 conv per stride phase, interleaved."""
    if any(d != 1 for d in spec.dilation):
        raise ValueError(f"spec: input_grad_phases expects dilation 1; got {spec.dilation}")
    n, cl = spec.n, spec.channels_last
    in_sizes, k_sizes = spatial_sizes(in_shape, spec), kernel_sizes(w.shape, spec)
    out = spatial_sizes(dy.shape, spec)
    padded = [size + lo + hi for size, (lo, hi) in zip(in_sizes, spec.padding)]
    rows = [-(-p // s) for p, s in zip(padded, spec.stride)]      # J = ceil(Lp / s) per phase
    spec1 = spec.replace(stride=(1,) * n)
    phases = []
    for residue in itertools.product(*(range(s) for s in spec.stride)):
        taps = [len(range(r, k, s)) for r, k, s in zip(residue, k_sizes, spec.stride)]
        shape = list(in_shape)
        for axis, j in zip(spec.spatial_axes(), rows):
            shape[axis] = j
        if 0 in taps:
            phases.append(jnp.zeros(shape, w.dtype))
            continue
        index = [slice(None)] * w.ndim
        for axis, r, s in zip(spec.kernel_spatial_axes(), residue, spec.stride):
            index[axis] = slice(r, None, s)
        w_sub = flip_swap_io(w[tuple(index)], spec)
        # out_r[j] = Σ_m w[r + s·m]ᵀ dy[j − m]: pad dy by M − 1 below, up to J rows above.
        pads = [(m - 1, j - o) for m, j, o in zip(taps, rows, out)]
        phases.append(jax.lax.conv_general_dilated(
            dy.astype(w.dtype), w_sub, (1,) * n, pads, dimension_numbers=spec1.dimension_numbers(),
            feature_group_count=spec.groups, precision=spec.precision,
            preferred_element_type=spec.preferred_element_type).astype(w.dtype))
    stacked = jnp.stack(phases).reshape(*spec.stride, *phases[0].shape)   # (*s, N, ...)
    # Interleave: spatial axis a of a phase and its residue axis become (J_a, s_a) → J_a·s_a.
    spatial = [n + a for a in spec.spatial_axes()]
    other = [n + a for a in range(len(in_shape)) if n + a not in spatial]
    pairs = [ax for a, sp in enumerate(spatial) for ax in (sp, a)]
    order = [other[0]] + ([] if cl else [other[1]]) + pairs + ([other[1]] if cl else [])
    dx_pad = stacked.transpose(order)
    merged = list(in_shape)
    for axis, j, s in zip(spec.spatial_axes(), rows, spec.stride):
        merged[axis] = j * s
    dx_pad = dx_pad.reshape(merged)
    index = [slice(None)] * dx_pad.ndim
    for axis, size, (lo, _) in zip(spec.spatial_axes(), in_sizes, spec.padding):
        index[axis] = slice(lo, lo + size)
    return dx_pad[tuple(index)]


def weight_grad_im2col(x, dy, spec: ConvSpec, w_shape) -> jax.Array:
    x_pad = zero_pad(x, spec, spec.padding)
    k_sizes = kernel_sizes(w_shape, spec)
    out = spatial_sizes(dy.shape, spec)
    p = patches(x_pad, spec, k_sizes, out)
    g = spec.groups
    dy = dy.astype(x.dtype)
    if spec.channels_last:                      # → (T, C/g, G, O/g) → (*K, C/g, O)
        dyg = dy.reshape(*dy.shape[:-1], g, dy.shape[-1] // g)
        return _contract("n...tgc,n...go->tcgo", p, dyg, spec).reshape(w_shape).astype(x.dtype)
    dyg = dy.reshape(dy.shape[0], g, dy.shape[1] // g, *dy.shape[2:])
    return _contract("ngct...,ngo...->goct", p, dyg, spec).reshape(w_shape).astype(x.dtype)


def weight_grad_depthwise(x, dy, spec: ConvSpec, w_shape) -> jax.Array:
    """One input channel per group (depthwise, any multiplier ``M = O/g``): each tap is
    ``dw[g·M + m, 0, k] = Σ_{n,i} x_pad[n, g, i·s + k·d] · dy[n, g·M + m, i]``, an elementwise
    product summed (a fused reduction) instead of a batched matmul of 1×1 blocks."""
    x_pad = zero_pad(x, spec, spec.padding)
    out = spatial_sizes(dy.shape, spec)
    g, cl = spec.groups, spec.channels_last
    acc = spec.preferred_element_type or x.dtype
    if cl:    # (N, *O, G) × (N, *O, G, M), summed over N and *O
        dyg = dy.reshape(*dy.shape[:-1], g, -1).astype(acc)
        axes = tuple(range(dy.ndim - 1))
        taps = [jnp.sum(x_pad[tap_window(spec, k, out, x.ndim)][..., None].astype(acc) * dyg, axis=axes)
                for k in offsets(kernel_sizes(w_shape, spec))]
        return jnp.stack(taps).reshape(w_shape).astype(x.dtype)     # (T, G, M) → (*K, 1, O)
    dyg = dy.reshape(dy.shape[0], g, -1, *dy.shape[2:]).astype(acc)
    axes = (0, *range(3, dyg.ndim))
    taps = [jnp.sum(x_pad[tap_window(spec, k, out, x.ndim)][:, :, None].astype(acc) * dyg, axis=axes)
            for k in offsets(kernel_sizes(w_shape, spec))]
    return jnp.stack(taps, axis=-1).reshape(w_shape).astype(x.dtype)  # (G, M, T) → (O, 1, *K)


def _fold_depth(x_last: jax.Array, spec: ConvSpec, k_depth: int, out_depth: int) -> jax.Array:
    """``(N, D, *S, C)`` → ``(N·D_out, *S, K_d·C)``: the depth taps ``x_pad[i·s + k·d]`` of
    the first spatial axis stacked into the channels (tap-major)."""
    lo, hi = spec.padding[0]
    x_pad = jax.lax.pad(x_last, jnp.zeros((), x_last.dtype),
                        [(0, 0, 0), (lo, hi, 0)] + [(0, 0, 0)] * (x_last.ndim - 2))
    s, d = spec.stride[0], spec.dilation[0]
    taps = jnp.stack([x_pad[:, k * d: k * d + (out_depth - 1) * s + 1: s] for k in range(k_depth)], axis=-2)
    return taps.reshape(taps.shape[0] * taps.shape[1], *taps.shape[2:-2], -1)


def _spec_without_depth(spec: ConvSpec) -> ConvSpec:
    return spec.replace(stride=spec.stride[1:], padding=spec.padding[1:], dilation=spec.dilation[1:],
                        channels_last=True)


def _last(a: jax.Array, spec: ConvSpec, kernel: bool = False) -> jax.Array:
    """An activation (or kernel) in channels-last layout."""
    if spec.channels_last:
        return a
    return jnp.moveaxis(a, (0, 1), (-1, -2)) if kernel else jnp.moveaxis(a, 1, -1)


def _depth_out(size: int, k: int, spec: ConvSpec) -> int:
    lo, hi = spec.padding[0]
    return (size + lo + hi - spec.dilation[0] * (k - 1) - 1) // spec.stride[0] + 1


def forward_fold_depth(x, w, spec: ConvSpec) -> jax.Array:
    """An n-D conv (n ≥ 2, one group) as an (n−1)-D conv over batch ``N·D_out`` with the depth
    taps folded into the channels: ``y[n, t] = Σ_k conv_{n−1}(x_pad[n, t·s + k·d], w[k])``."""
    if spec.groups != 1 or spec.n < 2:
        raise ValueError(f"spec: forward_fold_depth expects groups=1 and n >= 2; got {spec}")
    x_last, w_last = _last(x, spec), _last(w, spec, kernel=True)          # w (Kd, *K', C, O)
    k_depth = w_last.shape[0]
    out_depth = _depth_out(x_last.shape[1], k_depth, spec)
    folded = _fold_depth(x_last, spec, k_depth, out_depth)
    w_fold = jnp.moveaxis(w_last, 0, -3)                                   # (*K', Kd, C, O)
    w_fold = w_fold.reshape(*w_fold.shape[:-3], -1, w_fold.shape[-1])
    y = conv_core(folded, w_fold, _spec_without_depth(spec), "lax")
    y = y.reshape(x_last.shape[0], out_depth, *y.shape[1:])
    return y if spec.channels_last else jnp.moveaxis(y, -1, 1)


def input_grad_fold_depth(dy, w, spec: ConvSpec, in_shape) -> jax.Array:
    dy_d, spec1 = _dilated_dy(dy, w, spec, in_shape)
    return forward_fold_depth(dy_d, flip_swap_io(w, spec), spec1).astype(w.dtype)


def input_grad_fold_depth_out(dy, w, spec: ConvSpec, in_shape) -> jax.Array:
    """The transpose of ``forward_fold_depth``: one (n−1)-D input gradient with the depth taps
    as extra output channels, ``G[t, k_d] = input_grad(dy[t], w[k_d])``, then the depth taps
    added back where they were read: ``dx_pad[t·s + k_d·d] += G[t, k_d]`` (col2im on depth)."""
    if spec.groups != 1 or spec.n < 2:
        raise ValueError(f"spec: input_grad_fold_depth_out expects groups=1 and n >= 2; got {spec}")
    dy_last, w_last = _last(dy.astype(w.dtype), spec), _last(w, spec, kernel=True)
    k_depth, c, o = w_last.shape[0], w_last.shape[-2], w_last.shape[-1]
    n, out_depth = dy_last.shape[0], dy_last.shape[1]
    w_fold = jnp.moveaxis(w_last, 0, -3).reshape(*w_last.shape[1:-2], k_depth * c, o)
    in_last = (in_shape[0], *in_shape[2:], in_shape[1]) if not spec.channels_last else tuple(in_shape)
    inner = (n * out_depth, *in_last[2:-1], k_depth * c)
    g = input_grad_core(dy_last.reshape(-1, *dy_last.shape[2:]), w_fold, _spec_without_depth(spec), "lax", inner)
    g = g.reshape(n, out_depth, *in_last[2:-1], k_depth, c)
    (lo, hi), s, d = spec.padding[0], spec.stride[0], spec.dilation[0]
    padded = in_last[1] + lo + hi
    dx_pad = None
    for k in range(k_depth):   # tap k of output t lands on t·s + k·d: pad k·d below, s − 1 between
        part = jax.lax.pad(g[..., k, :], jnp.zeros((), g.dtype),
                           [(0, 0, 0), (k * d, padded - k * d - (out_depth - 1) * s - 1, s - 1)]
                           + [(0, 0, 0)] * (g.ndim - 3))
        dx_pad = part if dx_pad is None else dx_pad + part
    dx = dx_pad[:, lo: lo + in_last[1]]
    return dx if spec.channels_last else jnp.moveaxis(dx, -1, 1)


def weight_grad_fold_depth(x, dy, spec: ConvSpec, w_shape) -> jax.Array:
    """``dw[k_d] = Σ dy ⊗ x_pad[t·s + k_d·d]``: the (n−1)-D weight gradient of the folded input."""
    if spec.groups != 1 or spec.n < 2:
        raise ValueError(f"spec: weight_grad_fold_depth expects groups=1 and n >= 2; got {spec}")
    x_last, dy_last = _last(x, spec), _last(dy.astype(x.dtype), spec)
    k_sizes = kernel_sizes(w_shape, spec)
    folded = _fold_depth(x_last, spec, k_sizes[0], dy_last.shape[1])
    dy_fold = dy_last.reshape(-1, *dy_last.shape[2:])
    c, o = x_last.shape[-1], dy_last.shape[-1]
    dw = weight_grad_core(folded, dy_fold, _spec_without_depth(spec), "lax", (*k_sizes[1:], k_sizes[0] * c, o))
    dw = jnp.moveaxis(dw.reshape(*k_sizes[1:], k_sizes[0], c, o), -3, 0)  # (*K, C, O)
    return dw if spec.channels_last else jnp.moveaxis(dw, (-1, -2), (0, 1))


def _lift(spec: ConvSpec) -> ConvSpec:
    """A 1D spec as 2D with a leading unit spatial axis (size 1, kernel 1, stride 1, no pad)."""
    return spec.replace(stride=(1, *spec.stride), padding=((0, 0), *spec.padding),
                        dilation=(1, *spec.dilation))


def _unit_axis(a: jax.Array, spec: ConvSpec, kernel: bool = False) -> jax.Array:
    """Insert the unit spatial axis before the first spatial (or kernel) axis."""
    axis = (spec.kernel_spatial_axes() if kernel else spec.spatial_axes())[0]
    return jnp.expand_dims(a, axis)


def _drop_unit(a: jax.Array, spec: ConvSpec, kernel: bool = False) -> jax.Array:
    axis = (spec.kernel_spatial_axes() if kernel else spec.spatial_axes())[0]
    return jnp.squeeze(a, axis)


def forward_as_2d(x, w, spec: ConvSpec) -> jax.Array:
    """A 1D conv as a 2D one over a unit axis: XLA's CPU backend sends 2D convs to YNNPACK and
    1D ones to a generic path."""
    return _drop_unit(conv_core(_unit_axis(x, spec), _unit_axis(w, spec, True), _lift(spec), "lax"), spec)


def input_grad_as_2d(dy, w, spec: ConvSpec, in_shape) -> jax.Array:
    shape = list(in_shape)
    shape.insert(spec.spatial_axes()[0], 1)
    return _drop_unit(input_grad_core(_unit_axis(dy, spec), _unit_axis(w, spec, True), _lift(spec),
                                      "lax", tuple(shape)), spec)


def weight_grad_as_2d(x, dy, spec: ConvSpec, w_shape) -> jax.Array:
    shape = list(w_shape)
    shape.insert(spec.kernel_spatial_axes()[0], 1)
    return _drop_unit(weight_grad_core(_unit_axis(x, spec), _unit_axis(dy, spec), _lift(spec), "lax",
                                       tuple(shape)), spec, True)


def _to_last(a, spec):
    return jnp.moveaxis(a, 1, -1)


def input_grad_channels_last(dy, w, spec: ConvSpec, in_shape) -> jax.Array:
    """jaxcnn's lax ``dx`` run in NHWC/HWIO for channels-first operands."""
    if spec.channels_last:
        return input_grad_core(dy, w, spec, "lax", in_shape)
    last = spec.replace(channels_last=True)
    w_last = jnp.moveaxis(w, (0, 1), (-1, -2))
    shape_last = (in_shape[0], *in_shape[2:], in_shape[1])
    return jnp.moveaxis(input_grad_core(_to_last(dy, spec), w_last, last, "lax", shape_last), -1, 1)


def weight_grad_channels_last(x, dy, spec: ConvSpec, w_shape, impl: str = "lax") -> jax.Array:
    """jaxcnn's ``impl`` ``dw`` run on channels-last copies of ``x`` and ``dy`` (two transposes)."""
    if spec.channels_last:
        return weight_grad_core(x, dy, spec, impl, w_shape)
    last = spec.replace(channels_last=True)
    shape_last = (*w_shape[2:], w_shape[1], w_shape[0])
    dw = weight_grad_core(_to_last(x, spec), _to_last(dy, spec), last, impl, shape_last)
    return jnp.moveaxis(dw, (-1, -2), (0, 1))


INPUT_GRADS: dict[str, Callable] = {
    "lax": lambda dy, w, spec, shape: input_grad_core(dy, w, spec, "lax", shape),
    "manual": lambda dy, w, spec, shape: input_grad_core(dy, w, spec, "manual", shape),
    "im2col": input_grad_im2col,
    "phases": input_grad_phases,
    "lax_nhwc": input_grad_channels_last,
    "fold_depth": input_grad_fold_depth,
    "fold_depth_out": input_grad_fold_depth_out,
    "as_2d": input_grad_as_2d,
}
WEIGHT_GRADS: dict[str, Callable] = {
    "lax": lambda x, dy, spec, shape: weight_grad_core(x, dy, spec, "lax", shape),
    "manual": lambda x, dy, spec, shape: weight_grad_core(x, dy, spec, "manual", shape),
    "im2col": weight_grad_im2col,
    "lax_nhwc": weight_grad_channels_last,
    "manual_nhwc": lambda x, dy, spec, shape: weight_grad_channels_last(x, dy, spec, shape, "manual"),
    "fold_depth": weight_grad_fold_depth,
    "depthwise": weight_grad_depthwise,
    "as_2d": weight_grad_as_2d,
}


def applicable(name: str, spec: ConvSpec, x_shape) -> bool:
    """Whether the variant ``name`` handles ``spec`` on input ``x_shape`` (others: every spec)."""
    if name == "phases":
        return all(d == 1 for d in spec.dilation)
    if name.startswith("fold_depth"):
        return spec.groups == 1 and spec.n >= 2
    if name == "as_2d":
        return spec.n == 1
    if name == "depthwise":
        return spec.groups > 1 and spec.groups == x_shape[-1 if spec.channels_last else 1]
    return True


# ----------------------------------------------------------------------------- float64 check

CHECK_CONFIGS = [  # (x spatial, kernel, stride, padding, dilation, groups, C, O)
    ((9,), (3,), 1, 1, 1, 1, 3, 4),
    ((11,), (4,), 2, 1, 1, 1, 2, 3),
    ((10,), (3,), 3, ((2, 0),), 2, 2, 4, 6),
    ((8, 7), (3, 3), 1, 1, 1, 1, 3, 5),
    ((9, 8), (7, 5), 2, 3, 1, 1, 3, 4),
    ((8, 9), (3, 2), (2, 3), ((1, 2), (0, 1)), 1, 2, 4, 4),
    ((7, 8), (3, 3), 1, 2, (2, 1), 4, 4, 8),
    ((5, 6, 6), (3, 3, 3), 1, 1, 1, 1, 2, 3),
    ((5, 6, 7), (2, 3, 3), (1, 2, 2), 1, 1, 1, 2, 2),
]


def check(seed: int = 0) -> list[dict[str, Any]]:
    """Max relative error of every variant against jaxcnn (float64), per config and layout."""
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(seed)
    results = []
    for (spatial, kernel, stride, padding, dilation, groups, c, o), cl in itertools.product(
            CHECK_CONFIGS, (False, True)):
        x_shape = (2, *spatial, c) if cl else (2, c, *spatial)
        w_shape = (*kernel, c // groups, o) if cl else (o, c // groups, *kernel)
        x = jnp.asarray(rng.standard_normal(x_shape))
        w = jnp.asarray(rng.standard_normal(w_shape))
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, channels_last=cl)
        y = jaxcnn.conv(x, w, **kw)
        dy = jnp.asarray(rng.standard_normal(y.shape))
        spec = conv_spec(x_shape, w_shape, jnp.float64, **kw)
        dx_ref = jaxcnn.conv_input_grad(dy, w, x_shape, **kw)
        dw_ref = jaxcnn.conv_weight_grad(x, dy, w_shape, **kw)
        errs = {"forward/im2col": _rel(forward_im2col(x, w, spec), y)}
        if applicable("fold_depth", spec, x_shape):
            errs["forward/fold_depth"] = _rel(forward_fold_depth(x, w, spec), y)
        if applicable("as_2d", spec, x_shape):
            errs["forward/as_2d"] = _rel(forward_as_2d(x, w, spec), y)
        for name, f in INPUT_GRADS.items():
            if not applicable(name, spec, x_shape):
                continue
            errs[f"dx/{name}"] = _rel(f(dy, w, spec, x_shape), dx_ref)
        for name, f in WEIGHT_GRADS.items():
            if applicable(name, spec, x_shape):
                errs[f"dw/{name}"] = _rel(f(x, dy, spec, w_shape), dw_ref)
        results.append({"x_shape": x_shape, "w_shape": w_shape, **{k: repr(v) for k, v in kw.items()},
                        "max_rel_err": errs})
    return results


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"variant: expected shape {b.shape}; got {a.shape}")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


if __name__ == "__main__":
    worst = 0.0
    for result in check():
        worst = max(worst, *result["max_rel_err"].values())
        print(result["x_shape"], result["w_shape"], {k: f"{v:.1e}" for k, v in result["max_rel_err"].items()})
    print(f"worst relative error (float64): {worst:.2e}")
    raise SystemExit(0 if worst < 1e-12 else 1)
