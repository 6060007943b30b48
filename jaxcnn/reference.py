"""The oracle: jaxcnn's ops from plain ``jax.lax`` / ``jax.numpy``, differentiated by JAX
autodiff. No ``custom_vjp`` anywhere in this module: the hand-written VJPs are checked
against ``jax.grad`` of these functions.

Arguments are validated by the same front door as the real ops, so both accept and reject the
same inputs; the arithmetic here shares nothing else with them.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._args import as_float_array, check_cotangent, normalize_conv, shape_tuple
from jaxcnn._args import normalize_conv_transpose
from jaxcnn._args import check_bool, normalize_global_pool, normalize_pool
from jaxcnn._args import normalize_group_norm

__all__ = ["conv", "conv_input_grad", "conv_weight_grad", "convolve", "conv_transpose", "max_pool",
           "avg_pool", "global_avg_pool", "group_norm", "lax_conv_general_dilated",
           "lax_conv_transpose"]

_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
         padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
         channels_last: bool = False, impl: str = "lax", precision: Any = None,
         preferred_element_type: Any = None) -> jax.Array:
    """``jaxcnn.conv`` as ``jnp.pad`` + ``lax.conv_general_dilated`` + broadcast bias.
    ``impl`` is accepted (and validated) for signature parity and ignored."""
    a = normalize_conv(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                       padding_mode=padding_mode, channels_last=channels_last, impl=impl,
                       precision=precision, preferred_element_type=preferred_element_type)
    spec, x = a.spec, a.x
    if a.padding_mode != "zeros":
        widths = [(0, 0)] * x.ndim
        for axis, pads in zip(spec.spatial_axes(), a.mode_pads):
            widths[axis] = pads
        x = jnp.pad(x, widths, mode=_NUMPY_PAD_MODE[a.padding_mode])
    y = jax.lax.conv_general_dilated(
        x, a.w, spec.stride, spec.padding, rhs_dilation=spec.dilation,
        dimension_numbers=spec.dimension_numbers(), feature_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=spec.preferred_element_type)
    if a.b is not None:
        shape = [1] * y.ndim
        shape[spec.channel_axis()] = -1
        y = y + a.b.astype(y.dtype).reshape(shape)
    return y


def conv_input_grad(dy: jax.Array, w: jax.Array, input_shape: Any, *, stride: Any = 1,
                    padding: Any = 0, dilation: Any = 1, groups: int = 1,
                    channels_last: bool = False, impl: str = "lax") -> jax.Array:
    """``jaxcnn.conv_input_grad`` as ``jax.vjp`` of ``conv`` with respect to ``x``. ``conv`` is
    linear in ``x``, so its VJP taken at ``x = 0`` is the VJP everywhere."""
    w = as_float_array(w, "w")
    x = jnp.zeros(shape_tuple(input_shape, w.ndim, "input_shape"), w.dtype)
    y, pull = jax.vjp(lambda x: conv(x, w, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, channels_last=channels_last, impl=impl), x)
    return pull(check_cotangent(dy, y.shape, w.dtype))[0]


def conv_weight_grad(x: jax.Array, dy: jax.Array, weight_shape: Any, *, stride: Any = 1,
                     padding: Any = 0, dilation: Any = 1, groups: int = 1,
                     channels_last: bool = False, impl: str = "lax") -> jax.Array:
    """``jaxcnn.conv_weight_grad`` as ``jax.vjp`` of ``conv`` with respect to ``w`` (at
    ``w = 0``: ``conv`` is linear in ``w``)."""
    x = as_float_array(x, "x")
    w = jnp.zeros(shape_tuple(weight_shape, x.ndim, "weight_shape"), x.dtype)
    y, pull = jax.vjp(lambda w: conv(x, w, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, channels_last=channels_last, impl=impl), w)
    return pull(check_cotangent(dy, y.shape, x.dtype))[0]


def convolve(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
             padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
             channels_last: bool = False, impl: str = "lax", precision: Any = None,
             preferred_element_type: Any = None) -> jax.Array:
    """``jaxcnn.convolve``: ``jnp.flip`` of the kernel's spatial axes, then ``conv``."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode, channels_last=channels_last, impl=impl,
                  precision=precision, preferred_element_type=preferred_element_type)
    a = normalize_conv(x, w, b, **kwargs)
    return conv(a.x, jnp.flip(a.w, axis=a.spec.kernel_spatial_axes()), a.b, **kwargs)


def conv_transpose(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
                   padding: Any = 0, output_padding: Any = 0, dilation: Any = 1, groups: int = 1,
                   padding_mode: str = "zeros", channels_last: bool = False,
                   impl: str = "lax") -> jax.Array:
    """``jaxcnn.conv_transpose``. Zeros mode: one ``lax.conv_general_dilated`` with
    ``lhs_dilation = stride`` (holes between input samples), padding ``d·(K − 1) − lo`` before
    and ``d·(K − 1) − hi + output_padding`` after, and the kernel flipped with its channel
    roles swapped per group. Other modes: ``jax.vjp`` of ``conv`` (with that border) on the
    output's shape, applied to ``x`` extended by zeros to that conv's output size."""
    a = normalize_conv_transpose(x, w, b, stride=stride, padding=padding,
                                 output_padding=output_padding, dilation=dilation, groups=groups,
                                 padding_mode=padding_mode, channels_last=channels_last, impl=impl)
    if a.padding_mode == "zeros":
        y = _transpose_by_lhs_dilation(a)
    else:
        y = _transpose_by_autodiff(a)
    if a.b is not None:
        shape = [1] * y.ndim
        shape[a.spec.channel_axis()] = -1
        y = y + a.b.reshape(shape)
    return y


def _transpose_by_lhs_dilation(a: Any) -> jax.Array:
    spec, n, g = a.spec, a.spec.n, a.spec.groups
    w = a.w if not spec.channels_last else jnp.moveaxis(a.w, (n + 1, n), (0, 1))  # (C_in, C_out/g, *K)
    c_in, out_per_group, *k = w.shape
    w = w.reshape(g, c_in // g, out_per_group, *k).swapaxes(1, 2).reshape(g * out_per_group, c_in // g, *k)
    w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
    lhs = (0, spec.channel_axis()) + spec.spatial_axes()
    dn = jax.lax.ConvDimensionNumbers(lhs, tuple(range(n + 2)), lhs)
    pads = [(d * (kk - 1) - lo, d * (kk - 1) - hi + p)
            for kk, d, (lo, hi), p in zip(k, spec.dilation, a.pads, a.output_padding)]
    return jax.lax.conv_general_dilated(a.x, w, (1,) * n, pads, lhs_dilation=spec.stride,
                                        rhs_dilation=spec.dilation, dimension_numbers=dn,
                                        feature_group_count=g)


def _transpose_by_autodiff(a: Any) -> jax.Array:
    spec = a.spec

    def forward(z):
        return conv(z, a.w, stride=spec.stride, padding=a.pads, dilation=spec.dilation,
                    groups=spec.groups, padding_mode=a.padding_mode,
                    channels_last=spec.channels_last)

    y, pullback = jax.vjp(forward, jnp.zeros(a.out_shape, a.x.dtype))
    widths = [(0, 0)] * y.ndim
    for axis in spec.spatial_axes():
        widths[axis] = (0, y.shape[axis] - a.x.shape[axis])
    return pullback(jnp.pad(a.x, widths))[0]


# ----------------------------------------------------------------------------- pooling


def _pool_window(spec: Any, ndim: int, per_axis: tuple[int, ...], fill: int) -> tuple[int, ...]:
    """A per-dimension ``reduce_window`` argument: ``per_axis`` on the spatial axes, else ``fill``."""
    full = [fill] * ndim
    for axis, value in zip(spec.spatial_axes(), per_axis):
        full[axis] = value
    return tuple(full)


def max_pool(x: jax.Array, window: Any, stride: Any = None, padding: Any = 0, *, dilation: Any = 1,
             ceil_mode: bool = False, channels_last: bool = False) -> jax.Array:
    """``jaxcnn.max_pool`` as one ``lax.reduce_window(max)`` over −∞ padding. Its autodiff may
    break ties (and NaNs) differently from PyTorch's first-maximum rule: compare on tie-free data.
    (Init values are numpy scalars: a jnp constant is traced under ``jit`` and JAX then fails
    to differentiate the ``reduce_window`` twice.)"""
    x, spec = normalize_pool(x, window, stride, padding, dilation=dilation, ceil_mode=ceil_mode,
                             channels_last=channels_last, op="max_pool")
    if any(d != 1 for d in spec.dilation):
        return _max_over_gathered_taps(x, spec)
    return jax.lax.reduce_window(
        x, np.asarray(-np.inf, x.dtype), jax.lax.max, _pool_window(spec, x.ndim, spec.window, 1),
        _pool_window(spec, x.ndim, spec.stride, 1), _pool_window(spec, x.ndim, spec.padding, (0, 0)))


def _max_over_gathered_taps(x: jax.Array, spec: Any) -> jax.Array:
    """Max pooling with dilation, which JAX cannot differentiate as a ``reduce_window``: pad
    with −∞, gather the taps ``x_pad[i·s + k·d]`` along each spatial axis with static indices
    (axis → ``(out, window)``), take ``jnp.max`` over the window axes."""
    x_pad = jnp.pad(x, _pool_window(spec, x.ndim, spec.padding, (0, 0)), constant_values=-jnp.inf)
    shape, window_axes = list(x.shape), []
    for i, (axis, k, o, s, d) in enumerate(zip(spec.spatial_axes(), spec.window, spec.out_sizes(),
                                               spec.stride, spec.dilation)):
        taps = (np.arange(o)[:, None] * s + np.arange(k)[None, :] * d).ravel()
        x_pad = jnp.take(x_pad, jnp.asarray(taps), axis=axis)
        shape[axis] = (o, k)
        window_axes.append(axis + i + 1)
    flat_shape = [size for entry in shape for size in (entry if isinstance(entry, tuple) else (entry,))]
    return jnp.max(x_pad.reshape(flat_shape), axis=tuple(window_axes))


def avg_pool(x: jax.Array, window: Any, stride: Any = None, padding: Any = 0, *,
             ceil_mode: bool = False, count_include_pad: bool = True,
             channels_last: bool = False) -> jax.Array:
    """``jaxcnn.avg_pool`` as ``reduce_window(add)`` of ``x`` over zero padding, divided by the
    same window sum over a ones array: padded with ones on the symmetric padding (when it
    counts) and zeros on ceil_mode's overhang, which never counts (PyTorch)."""
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    x, spec = normalize_pool(x, window, stride, padding, ceil_mode=ceil_mode,
                             channels_last=channels_last, op="avg_pool")
    dims = _pool_window(spec, x.ndim, spec.window, 1)
    strides = _pool_window(spec, x.ndim, spec.stride, 1)
    total = jax.lax.reduce_window(x, np.asarray(0, x.dtype), jax.lax.add, dims, strides,
                                  _pool_window(spec, x.ndim, spec.padding, (0, 0)))
    ones = jnp.ones(x.shape, x.dtype)
    if count_include_pad:
        ones = jnp.pad(ones, _pool_window(spec, x.ndim, tuple((lo, lo) for lo, _ in spec.padding),
                                          (0, 0)), constant_values=1)
        pads = tuple((0, hi - lo) for lo, hi in spec.padding)
    else:
        pads = spec.padding
    count = jax.lax.reduce_window(ones, np.asarray(0, x.dtype), jax.lax.add, dims, strides,
                                  _pool_window(spec, x.ndim, pads, (0, 0)))
    return total / count


def global_avg_pool(x: jax.Array, *, channels_last: bool = False) -> jax.Array:
    """``jaxcnn.global_avg_pool`` as ``jnp.mean`` over the spatial axes."""
    x, channels_last = normalize_global_pool(x, channels_last)
    axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
    return jnp.mean(x, axis=axes)


def group_norm(x: jax.Array, groups: int, scale: jax.Array | None = None,
               bias: jax.Array | None = None, *, eps: float = 1e-5,
               channels_last: bool = False) -> jax.Array:
    """``jaxcnn.group_norm`` as PyTorch writes it: channels moved first, each example's
    groups as rows, ``(x − mean) / sqrt(var + eps)``, then the per-channel affine map."""
    a = normalize_group_norm(x, scale, bias, groups, eps, channels_last)
    x = jnp.moveaxis(a.x, -1, 1) if a.channels_last else a.x
    acc = np.promote_types(x.dtype, jnp.float32)
    rows = x.astype(acc).reshape(x.shape[0], a.groups, math.prod(x.shape[1:]) // a.groups)
    mean = jnp.mean(rows, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(rows - mean), axis=-1, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = ((rows - mean) / jnp.sqrt(var + a.eps)).reshape(x.shape)
    y = (y * a.scale.astype(acc).reshape(shape) + a.bias.astype(acc).reshape(shape)).astype(x.dtype)
    return jnp.moveaxis(y, 1, -1) if a.channels_last else y


# ----------------------------------------------------------------------------- jaxcnn.lax
# The drop-ins' references are jax.lax's own functions, differentiated by JAX's autodiff;
# ``impl`` is jaxcnn's (lax has one implementation) and is dropped.

def lax_conv_general_dilated(lhs: jax.Array, rhs: jax.Array, *args: Any, impl: str = "lax",
                             **kwargs: Any) -> jax.Array:
    """``jax.lax.conv_general_dilated`` itself."""
    return jax.lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


def lax_conv_transpose(lhs: jax.Array, rhs: jax.Array, *args: Any, impl: str = "lax",
                       **kwargs: Any) -> jax.Array:
    """``jax.lax.conv_transpose`` itself."""
    return jax.lax.conv_transpose(lhs, rhs, *args, **kwargs)
