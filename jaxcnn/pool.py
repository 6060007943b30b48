r"""N-D max, average and global average pooling as JAX primitives with hand-written derivative
rules (PyTorch's semantics), the arithmetic in ``jaxcnn._pool``.

Max pooling (``torch.nn.functional.max_pool{1,2,3}d``), ``s`` stride, ``d`` dilation::

    y[i] = max_k x_pad[i·s + k·d]            (padding never wins: it is −∞, and skipped)
    a[i] = PyTorch's argmax: scan the real taps in row-major order, keep the tap whose value
           is > the running max or is NaN (so ties go to the FIRST maximum, and a NaN is the
           maximum and propagates; among several NaNs PyTorch's scan keeps the LAST one)

``y`` is ``x`` read at the argmax, ``y = gather(x, a)``, linear in ``x`` for a fixed ``a`` (the
argmax is piecewise constant in ``x``: it has no derivative). So the tangent map is the same
gather, and the VJP its adjoint, the scatter::

    ẏ[i] = ẋ_pad[i·s + a[i]·d]                    (gather: each window's tangent at its argmax)
    dx[j] = Σ_{i : i·s + a[i]·d = j + lo} dy[i]    (scatter: each output's gradient to its argmax)

Average pooling (``torch.nn.functional.avg_pool{1,2,3}d``)::

    y[i] = (Σ_k x_pad[i·s + k]) / c[i]      c[i] = Π_axes count_axis(i)
    dx[j] = Σ_{i, k : i·s + k = j + lo} dy[i] / c[i]

PyTorch's divisor, per axis, with ``start = i·s − p``: ``min(start + K, L + p) − start`` when
``count_include_pad`` (the symmetric padding counts, ceil_mode's overhang does not), else the
number of real samples ``min(start + K, L) − max(start, 0)``. The op is linear: its tangent map
is itself, its VJP (``avg_pool_transpose``) its adjoint.

Global average pooling (``adaptive_avg_pool{1,2,3}d`` to size 1): ``y[n, c] = mean_S x``,
linear, adjoint ``dx[n, c, j] = dy[n, c] / |S|``.

Every map above is a primitive (``jaxcnn_max_pool``, ``jaxcnn_max_pool_argmax``,
``jaxcnn_max_pool_gather``, ``jaxcnn_max_pool_scatter``, ``jaxcnn_avg_pool``, ...), and the
linear ones come in adjoint pairs, each the other's transpose: gather/scatter,
avg_pool/avg_pool_transpose, global_avg_pool/its transpose. So ``jax.jvp``, ``jax.linearize``
and ``jax.jacfwd`` run the hand-written tangent maps, ``jax.grad`` their transposes, and every
higher order (grad-of-grad, ``jax.hessian``) differentiates or transposes those again, never
leaving these rules. ``vmap`` folds a mapped axis into the batch axis. On the CPU (float32,
channels last, at least 8 channels) every max and average pooling map lowers to a native
kernel that computes the same arithmetic (``jaxcnn._conv.native.pooling``); elsewhere to the
XLA forms of ``jaxcnn._pool``.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from jaxcnn._args import check_bool, normalize_global_pool, normalize_pool
from jaxcnn._compat import MAX_POOL_ARGMAX_LOOP
from jaxcnn._conv.native import pooling
from jaxcnn._primitives import (ShapedArray, fold_mapped, make_primitive, mapped_axis_first,
                                unfold_mapped)
from jaxcnn._shapes import spatial_axes
from jaxcnn._sharding import sharded_call
from jaxcnn._pool import (avg_pool_transpose, global_avg_pool_transpose, global_input_shape,
                          global_mean, max_pool_argmax, max_pool_argmax_loop, max_pool_gather,
                          max_pool_scatter, window_average, windows_tile_input, with_spatial_sizes)

__all__ = ["max_pool", "avg_pool", "global_avg_pool"]


def _pooled(a, *, spec, **_) -> ShapedArray:
    """The output's aval: ``a``'s shape with the pooled spatial sizes."""
    return ShapedArray(with_spatial_sizes(a.shape, spec, spec.out_sizes()), a.dtype)


def _unpooled(a, *, spec, **_) -> ShapedArray:
    """An adjoint's aval: ``a``'s shape with the input's spatial sizes."""
    return ShapedArray(with_spatial_sizes(a.shape, spec, spec.in_sizes), a.dtype)


# ----------------------------------------------------------------------------- max pooling
# Forward: the max; its JVP needs the argmax (int32, no derivative) and the gather.


# On the CPU, float32 and channels last, each map runs a native kernel (``jaxcnn._conv.native
# .pooling``), split per batch shard where XLA's partitioner splits the op; elsewhere the XLA form.
NATIVE = dict(platforms=("cpu",), splits_custom_calls=lambda a, *_, spec, **__: pooling.may_use(spec, a.dtype))


def _native(spec, platform, *arrays) -> bool:
    """Whether this lowering of a map on ``arrays`` runs its native kernel."""
    return pooling.uses_kernels(spec, arrays[0].dtype, platform, tuple(a.shape for a in arrays))


def _max_pool_compute(x, *, spec, platform=None):
    if _native(spec, platform, x):
        return pooling.native_max_pool(x, spec)
    return max_pool_argmax(x, spec)[0]


max_pool_p = make_primitive("max_pool", _max_pool_compute, _pooled, **NATIVE)


def _argmax_compute(x, *, spec, platform=None):
    """Each window's argmax, the same scan either way: unrolled (one fused pass) where its
    consumer, the scatter, is a loop that reads it from memory; as a loop itself where the
    windows tile the input (the scatter is then one select, into which XLA fused the unrolled
    scan, and the GroupNorm and ReLU before it, once per sample of each window: clips-cnn3d
    13 of a 50 ms step). Loops only where XLA compiles them sanely
    (``jaxcnn._compat.MAX_POOL_ARGMAX_LOOP``)."""
    if _native(spec, platform, x):
        return pooling.native_argmax(x, spec)
    if MAX_POOL_ARGMAX_LOOP and windows_tile_input(spec):
        return max_pool_argmax_loop(x, spec)
    return max_pool_argmax(x, spec)[1]


def _argmax_abstract_eval(x, *, spec):
    return ShapedArray(_pooled(x, spec=spec).shape, jnp.int32)


argmax_p = make_primitive("max_pool_argmax", _argmax_compute, _argmax_abstract_eval, **NATIVE)


def _gather_compute(v, argmax, *, spec, platform=None):
    if _native(spec, platform, v, argmax):
        return pooling.native_max_pool_gather(v, argmax, spec)
    return max_pool_gather(v, argmax, spec)


def _gather_abstract_eval(v, argmax, *, spec):
    return ShapedArray(argmax.shape, v.dtype)


gather_p = make_primitive("max_pool_gather", _gather_compute, _gather_abstract_eval, **NATIVE)


def _scatter_compute(dy, argmax, *, spec, platform=None):
    if _native(spec, platform, dy, argmax):
        return pooling.native_max_pool_scatter(dy, argmax, spec)
    return max_pool_scatter(dy, argmax, spec)


def _scatter_abstract_eval(dy, argmax, *, spec):
    return _unpooled(dy, spec=spec)


scatter_p = make_primitive("max_pool_scatter", _scatter_compute, _scatter_abstract_eval, **NATIVE)


def _max_pool_jvp(primals, tangents, *, spec):
    # ẏ = gather(ẋ, a): the tangent read at each window's (first) maximum. The max is the
    # unrolled scan (one fused pass); the argmax is its own primitive (``_argmax_compute`` says
    # how it is computed so that the scatter reads it from memory).
    (x,), (x_dot,) = primals, tangents
    argmax = argmax_p.bind(x, spec=spec)
    return max_pool_p.bind(x, spec=spec), gather_p.bind(x_dot, argmax, spec=spec)


# gather and scatter are linear in their first operand (the argmax is data): JVP = the op on the
# tangent; transposes, from ⟨gather(v, a), c⟩ = ⟨v, scatter(c, a)⟩, each the other.

def _gather_jvp(v_dot, v, argmax, *, spec):
    return gather_p.bind(v_dot, argmax, spec=spec)


def _scatter_jvp(g_dot, g, argmax, *, spec):
    return scatter_p.bind(g_dot, argmax, spec=spec)


def _gather_transpose(ct, v, argmax, *, spec):
    return [scatter_p.bind(ad.instantiate_zeros(ct), argmax, spec=spec), None]


def _scatter_transpose(ct, g, argmax, *, spec):
    return [gather_p.bind(ad.instantiate_zeros(ct), argmax, spec=spec), None]


ad.primitive_jvps[max_pool_p] = _max_pool_jvp
ad.defjvp(argmax_p, None)  # piecewise constant: a zero tangent
ad.defjvp(gather_p, _gather_jvp, None)
ad.defjvp(scatter_p, _scatter_jvp, None)
ad.primitive_transposes[gather_p] = _gather_transpose
ad.primitive_transposes[scatter_p] = _scatter_transpose


# ----------------------------------------------------------------------------- avg pooling
# Linear: JVP = the op on the tangent; ⟨avg_pool(x), dy⟩ = ⟨x, avg_pool_transpose(dy)⟩, dy / c
# spread over each window, and the transpose's transpose is avg_pool again.


def _avg_pool_compute(x, *, spec, count_include_pad, platform=None):
    if _native(spec, platform, x):
        return pooling.native_avg_pool(x, spec, count_include_pad)
    return window_average(x, spec, count_include_pad)


def _avg_pool_transpose_compute(dy, *, spec, count_include_pad, platform=None):
    if _native(spec, platform, dy):
        return pooling.native_avg_pool_transpose(dy, spec, count_include_pad)
    return avg_pool_transpose(dy, spec, count_include_pad)


avg_pool_p = make_primitive("avg_pool", _avg_pool_compute, _pooled, **NATIVE)
avg_pool_transpose_p = make_primitive("avg_pool_transpose", _avg_pool_transpose_compute, _unpooled, **NATIVE)


def _avg_pool_transpose_rule(ct, x, **params):
    return [avg_pool_transpose_p.bind(ct, **params)]


def _avg_pool_transpose_transpose_rule(ct, dy, **params):
    return [avg_pool_p.bind(ct, **params)]


ad.deflinear2(avg_pool_p, _avg_pool_transpose_rule)
ad.deflinear2(avg_pool_transpose_p, _avg_pool_transpose_transpose_rule)


# ----------------------------------------------------------------------------- global avg
# Linear: y[n, c] = mean_S x[n, c]; its transpose dx[n, c, j] = dy[n, c] / |S|, and back.


def _global_avg_pool_compute(x, *, in_sizes, channels_last):
    return global_mean(x, channels_last)


def _global_avg_pool_abstract_eval(x, *, in_sizes, channels_last):
    return ShapedArray((x.shape[0], x.shape[-1] if channels_last else x.shape[1]), x.dtype)


def _global_avg_pool_transpose_compute(dy, *, in_sizes, channels_last):
    return global_avg_pool_transpose(dy, in_sizes, channels_last)


def _global_avg_pool_transpose_abstract_eval(dy, *, in_sizes, channels_last):
    return ShapedArray(global_input_shape(dy.shape, in_sizes, channels_last), dy.dtype)


global_avg_pool_p = make_primitive("global_avg_pool", _global_avg_pool_compute,
                                   _global_avg_pool_abstract_eval)
global_avg_pool_transpose_p = make_primitive(
    "global_avg_pool_transpose", _global_avg_pool_transpose_compute,
    _global_avg_pool_transpose_abstract_eval)


def _global_avg_pool_transpose_rule(ct, x, **params):
    return [global_avg_pool_transpose_p.bind(ct, **params)]


def _global_avg_pool_transpose_transpose_rule(ct, dy, **params):
    return [global_avg_pool_p.bind(ct, **params)]


ad.deflinear2(global_avg_pool_p, _global_avg_pool_transpose_rule)
ad.deflinear2(global_avg_pool_transpose_p, _global_avg_pool_transpose_transpose_rule)


# ----------------------------------------------------------------------------- vmap
# Every pooling map acts on each example of the batch axis (axis 0, in either layout) alone, so
# a mapped axis B folds into it: (B, N, ...) → (B·N, ...), one call, and the result unfolds.
# An unmapped operand (the argmax beside a mapped tangent, say) is broadcast to B copies first.


def _pool_batch_rule(prim, args, dims, **params):
    """The vmap rule of every pooling primitive ``prim`` (registered with ``partial``)."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    folded = [fold_mapped(mapped_axis_first(a, d, size), 0) for a, d in zip(args, dims)]
    return unfold_mapped(prim.bind(*folded, **params), 0, size), 0


for _prim in (max_pool_p, argmax_p, gather_p, scatter_p, avg_pool_p, avg_pool_transpose_p,
              global_avg_pool_p, global_avg_pool_transpose_p):
    batching.primitive_batchers[_prim] = partial(_pool_batch_rule, _prim)


# ----------------------------------------------------------------------------- public


def max_pool(x: jax.Array, window: Any, stride: Any = None, padding: Any = 0, *,
             dilation: Any = 1, ceil_mode: bool = False, channels_last: bool = False,
             out_sharding: Any = None) -> jax.Array:
    """N-D max pooling, as ``torch.nn.functional.max_pool{1,2,3}d``.

    ``y[n, c, i] = max_k x[n, c, i·stride + k·dilation − padding]`` over the window offsets
    ``k`` whose sample is inside ``x`` (padding is −∞). Output size per axis:
    ``⌊(L + 2·padding − dilation·(window − 1) − 1 [+ stride − 1 with ceil_mode]) / stride⌋ + 1``,
    less one if ceil_mode's last window would start in the right padding (PyTorch).
    The gradient goes to the first maximal element of each window in row-major order; a NaN
    is the maximum (it propagates) and takes the gradient (the last NaN, as PyTorch's scan).

    Args:
      x: ``(N, C, *S)``, or ``(N, *S, C)`` with ``channels_last``; spatial axes ``x.ndim − 2``.
      window: an int or one int per spatial axis, each ≥ 1.
      stride: as window; None means ``stride = window``.
      padding: an int or one int per axis, at most half the dilated window
        ``(dilation·(window − 1) + 1) // 2`` (PyTorch further asks ``padding ≤ window // 2``).
      dilation: spacing of the window's taps, ≥ 1. Every window must hold an input sample
        (a dilated window can step over a short input into the padding on both sides: an
        error here; PyTorch returns −∞ and its backward writes outside the input).
      ceil_mode: round the output size up instead of down.
      channels_last: TensorFlow/Flax layout instead of PyTorch's.
      out_sharding: as ``jaxcnn.conv``; by default the result keeps ``x``'s sharding.

    Returns:
      ``(N, C, *S_out)`` or ``(N, *S_out, C)``; differentiable to any order, in both modes.
    """
    x, spec = normalize_pool(x, window, stride, padding, dilation=dilation, ceil_mode=ceil_mode,
                             channels_last=channels_last, op="max_pool")
    return _pool_sharded(lambda x: max_pool_p.bind(x, spec=spec), x, spec, out_sharding)


def _pool_sharded(run, x: jax.Array, spec, out_sharding: Any) -> jax.Array:
    """``run(x)``, a pooling of ``x``, sharded as ``out_sharding`` or as ``x`` (every axis of
    the result comes from the same axis of ``x``)."""
    out_shape = with_spatial_sizes(x.shape, spec, spec.out_sizes())
    return sharded_call(run, (x,), ("x",), out_shape=out_shape,
                        inherit=[[(0, axis)] for axis in range(x.ndim)], out_sharding=out_sharding)


def avg_pool(x: jax.Array, window: Any, stride: Any = None, padding: Any = 0, *,
             ceil_mode: bool = False, count_include_pad: bool = True,
             channels_last: bool = False, out_sharding: Any = None) -> jax.Array:
    """N-D average pooling, as ``torch.nn.functional.avg_pool{1,2,3}d``.

    ``y[n, c, i] = Σ_k x_pad[n, c, i·stride + k] / c[i]`` (zero padding). The divisor ``c[i]``
    is the window's size clipped to the padded input ``[−p, L + p)`` (``count_include_pad``,
    ceil_mode's overhang never counts) or the number of real samples in it. Output size as
    ``max_pool`` without dilation.

    Args:
      x: ``(N, C, *S)``, or ``(N, *S, C)`` with ``channels_last``.
      window, stride, padding, ceil_mode, channels_last: as ``max_pool`` (padding ≤ window // 2).
      count_include_pad: whether the zero padding counts in the divisor.
      out_sharding: as ``max_pool``.

    Returns:
      ``(N, C, *S_out)`` or ``(N, *S_out, C)``; differentiable to any order, in both modes.
    """
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    x, spec = normalize_pool(x, window, stride, padding, ceil_mode=ceil_mode,
                             channels_last=channels_last, op="avg_pool")
    return _pool_sharded(lambda x: avg_pool_p.bind(x, spec=spec, count_include_pad=count_include_pad),
                         x, spec, out_sharding)


def global_avg_pool(x: jax.Array, *, channels_last: bool = False,
                    out_sharding: Any = None) -> jax.Array:
    """Mean over every spatial axis, ``(N, C, *S) → (N, C)``, as PyTorch's
    ``adaptive_avg_pool{1,2,3}d(x, 1)`` flattened: ``y[n, c] = Σ_j x[n, c, j] / |S|``.

    Args:
      x: ``(N, C, *S)``, or ``(N, *S, C)`` with ``channels_last``; every spatial size ≥ 1.
      out_sharding: as ``max_pool``; by default ``x``'s batch and channel sharding.
    """
    x, channels_last = normalize_global_pool(x, channels_last)
    in_sizes = tuple(x.shape[a] for a in spatial_axes(x.ndim - 2, channels_last))
    channel_axis = x.ndim - 1 if channels_last else 1
    return sharded_call(
        lambda x: global_avg_pool_p.bind(x, in_sizes=in_sizes, channels_last=channels_last),
        (x,), ("x",), out_shape=(x.shape[0], x.shape[channel_axis]),
        inherit=[[(0, 0)], [(0, channel_axis)]], out_sharding=out_sharding)
