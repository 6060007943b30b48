r"""The arithmetic of pooling, in plain ``jax.numpy``/``lax``: what ``jaxcnn.pool``'s primitives
lower to. The math, the derivative rules and the primitives are in ``jaxcnn.pool``.

One generic code path, as ``conv``'s ``impl="manual"``: a static loop over window offsets
``k`` (row-major over the n spatial axes) of strided slices of the padded input,
``x_pad[i·s + k·d]`` for every output position ``i`` (``s`` stride, ``d`` dilation), and in
the adjoints the same slices placed back with ``lax.pad`` (interior padding = the stride's
holes). Channels first (``(N, C, *S)``) or last (``(N, *S, C)``); 1, 2, 3 or more spatial axes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._shapes import PoolSpec, spatial_axes
from jaxcnn._taps import (crop, interleave_phases, offsets, pad_axes, place, tap_offsets, tap_reader,
                          tap_sum_adjoint, window)
from jaxcnn._compat import MAX_POOL_ARGMAX_LOOP

# ----------------------------------------------------------------------------- shape helpers


def with_spatial_sizes(shape: tuple[int, ...], spec: PoolSpec, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with its spatial sizes replaced by ``sizes``."""
    out = list(shape)
    for axis, size in zip(spec.spatial_axes(), sizes):
        out[axis] = size
    return tuple(out)


def _spatial_array(per_axis: list[np.ndarray], spec: PoolSpec, ndim: int) -> np.ndarray:
    """The outer product (``&`` for bools, ``*`` for counts) of one vector per spatial axis,
    shaped to broadcast against an activation of rank ``ndim`` in the spec's layout."""
    result = np.ones([1] * ndim, dtype=per_axis[0].dtype)
    for axis, values in zip(spec.spatial_axes(), per_axis):
        shape = [1] * ndim
        shape[axis] = values.size
        result = result * values.reshape(shape)
    return result


def _real_taps(spec: PoolSpec, offset: tuple[int, ...], ndim: int) -> np.ndarray | None:
    """Where tap ``k`` of output ``i`` reads a real sample, ``0 ≤ i·s + k·d − lo < L``, as a
    static bool mask; None if it always does."""
    masks = []
    for k, o, s, d, length, (lo, _) in zip(offset, spec.out_sizes(), spec.stride, spec.dilation,
                                          spec.in_sizes, spec.padding):
        position = np.arange(o) * s + k * d - lo
        masks.append((position >= 0) & (position < length))
    if all(m.all() for m in masks):
        return None
    return _spatial_array(masks, spec, ndim).astype(bool)


def avg_divisor(spec: PoolSpec, count_include_pad: bool, ndim: int) -> np.ndarray:
    """PyTorch's ``avg_pool`` divisor per output position (see the module docstring)."""
    counts = []
    for k, o, s, length, (p, _) in zip(spec.window, spec.out_sizes(), spec.stride,
                                      spec.in_sizes, spec.padding):
        start = np.arange(o) * s - p
        if count_include_pad:
            counts.append(np.minimum(start + k, length + p) - start)
        else:
            counts.append(np.minimum(start + k, length) - np.maximum(start, 0))
    return _spatial_array(counts, spec, ndim)


# ----------------------------------------------------------------------------- slices


def _pad(a: jax.Array, spec: PoolSpec, pads, value) -> jax.Array:
    return pad_axes(a, spec.spatial_axes(), pads, value)


def _window(spec: PoolSpec, offset, ndim: int) -> tuple[slice, ...]:
    """The strided slice of ``x_pad`` that tap ``k`` reads: ``x_pad[k·d + i·s]``, i < out."""
    return window(offset, spec.out_sizes(), spec.stride, spec.dilation, spec.spatial_axes(), ndim)


def _place(part: jax.Array, spec: PoolSpec, offset) -> jax.Array:
    """The adjoint of ``_window``: ``part[i]`` put at ``x_pad[k·d + i·s]``, zeros elsewhere
    (``k·d`` before, ``s − 1`` between samples, the rest of the padded size after)."""
    padded = [length + lo + hi for length, (lo, hi) in zip(spec.in_sizes, spec.padding)]
    return place(part, offset, spec.out_sizes(), spec.stride, spec.dilation, spec.spatial_axes(),
                 padded)


def _spread(g: jax.Array, spec: PoolSpec, select) -> jax.Array:
    """``dx = crop(Σ_k place_k(select(k, g)))``: every output's share sent back to the taps
    that read it, the padding cropped off. With a stride, by phases (see ``_spread_phases``)."""
    if any(s > 1 for s in spec.stride):
        return _spread_phases(g, spec, select)
    dx_pad = None
    for flat, offset in enumerate(offsets(spec.window)):
        part = _place(select(flat, g), spec, offset)
        dx_pad = part if dx_pad is None else dx_pad + part
    return crop(dx_pad, spec.spatial_axes(), spec.padding)


def _spread_phases(g: jax.Array, spec: PoolSpec, select) -> jax.Array:
    """``_spread`` without the stride's holes. Tap ``k`` sends ``part[i]`` to
    ``p = k·d + i·s``; with ``k·d = q·s + r`` (``0 ≤ r < s``) that is row ``q + i`` of phase
    ``r`` of ``x_pad`` (``x_pad[j·s + r]``), so each phase is a sum of parts shifted by ``q``
    (dense pads, no zeros between samples), and ``x_pad`` is the phases interleaved:
    ``(J, s) → J·s`` per axis. Every tap then writes ``|dy|`` elements, not ``∏s·|dy|``."""
    rows = [-(-(length + lo + hi) // s)
            for length, (lo, hi), s in zip(spec.in_sizes, spec.padding, spec.stride)]
    phases: dict[tuple[int, ...], jax.Array] = {}
    for flat, offset in enumerate(offsets(spec.window)):
        base = [k * d for k, d in zip(offset, spec.dilation)]
        residue = tuple(b % s for b, s in zip(base, spec.stride))
        pads = [(b // s, j - b // s - o)
                for b, s, j, o in zip(base, spec.stride, rows, spec.out_sizes())]
        part = _pad(select(flat, g), spec, pads, 0)
        phases[residue] = part + phases[residue] if residue in phases else part
    shape = with_spatial_sizes(g.shape, spec, tuple(rows))
    spatial = spec.spatial_axes()
    dx_pad = interleave_phases([phases.get(r, jnp.zeros(shape, g.dtype)) for r in offsets(spec.stride)],
                               spec.stride, spatial)
    index = [slice(None)] * g.ndim
    for axis, length, (lo, _) in zip(spatial, spec.in_sizes, spec.padding):
        index[axis] = slice(lo, lo + length)
    return dx_pad[tuple(index)]


# ----------------------------------------------------------------------------- max pooling


def max_pool_argmax(x: jax.Array, spec: PoolSpec) -> tuple[jax.Array, jax.Array]:
    """PyTorch's scan (``aten/src/ATen/native/cpu/MaxPoolKernel.cpp``): over the real taps in
    row-major order, the first one starts the running max, later ones replace it when
    ``value > max or isnan(value)``. Returns ``(max, flat offset of the argmax)``; a window of
    padding only gives ``(−∞, −1)`` (the front door refuses such windows)."""
    x_pad = _pad(x, spec, spec.padding, -jnp.inf)
    shape = with_spatial_sizes(x.shape, spec, spec.out_sizes())
    best = jnp.full(shape, -jnp.inf, x.dtype)
    argmax = jnp.full(shape, -1, jnp.int32)
    for flat, offset in enumerate(offsets(spec.window)):
        value = x_pad[_window(spec, offset, x.ndim)]
        take = (value > best) | jnp.isnan(value) | (argmax < 0)
        real = _real_taps(spec, offset, x.ndim)
        if real is not None:
            take = take & real
        best = jnp.where(take, value, best)
        argmax = jnp.where(take, flat, argmax)
    return best, argmax


def _real_taps_at(spec: PoolSpec, k: list, ndim: int) -> jax.Array:
    """``_real_taps`` for a traced tap offset ``k``: a bool mask over the output positions."""
    mask = jnp.ones([1] * ndim, bool)
    for axis, ki, o, s, d, length, (lo, _) in zip(spec.spatial_axes(), k, spec.out_sizes(), spec.stride,
                                                 spec.dilation, spec.in_sizes, spec.padding):
        position = jnp.arange(o) * s + ki * d - lo
        shape = [1] * ndim
        shape[axis] = o
        mask = mask & ((position >= 0) & (position < length)).reshape(shape)
    return mask


def max_pool_argmax_loop(x: jax.Array, spec: PoolSpec) -> jax.Array:
    """The argmax of ``max_pool_argmax`` (the same scan, the same rule), its taps in a
    ``lax.fori_loop``. A loop's result is a buffer XLA cannot fuse into its consumers: the
    unrolled scan, fused into the scatter of the VJP, was recomputed for every tap that reads
    it (9 × 9 compare-and-selects per output of a 3×3 window); read from memory it is 9."""
    x_pad = _pad(x, spec, spec.padding, -jnp.inf)
    shape = with_spatial_sizes(x.shape, spec, spec.out_sizes())
    read_tap = tap_reader(x_pad, spec, spec.out_sizes(), -jnp.inf)

    def body(t, carry):
        best, argmax = carry
        k = tap_offsets(t, spec.window)
        value = read_tap(k)
        take = ((value > best) | jnp.isnan(value) | (argmax < 0)) & _real_taps_at(spec, k, x.ndim)
        return jnp.where(take, value, best), jnp.where(take, t, argmax)

    init = (jnp.full(shape, -jnp.inf, x.dtype), jnp.full(shape, -1, jnp.int32))
    return jax.lax.fori_loop(0, int(np.prod(spec.window)), body, init)[1]


def max_pool_gather(v: jax.Array, argmax: jax.Array, spec: PoolSpec) -> jax.Array:
    """``y[i] = v_pad[i·s + a[i]·d]``: ``v`` read at each window's argmax. Linear in ``v``."""
    v_pad = _pad(v, spec, spec.padding, 0)
    picked = jnp.zeros(argmax.shape, v.dtype)
    for flat, offset in enumerate(offsets(spec.window)):
        picked = jnp.where(argmax == flat, v_pad[_window(spec, offset, v.ndim)], picked)
    return picked


def max_pool_scatter(dy: jax.Array, argmax: jax.Array, spec: PoolSpec) -> jax.Array:
    """``dx[j] = Σ_{i : i·s + a[i]·d = j + lo} dy[i]``: each output's value sent to its argmax,
    shaped as the pooled input. Linear in ``dy``: the adjoint of ``max_pool_gather``."""
    if windows_tile_input(spec):
        # Each sample lies in exactly one window: it gets its window's dy where the window's
        # argmax is its own offset in the tile; one select over the tiled input, no spreading.
        in_shape = with_spatial_sizes(dy.shape, spec, spec.in_sizes)
        axes = _offset_axes(spec)
        sizes = dict(zip(axes, _split_window(spec)))
        offset = np.arange(int(np.prod(spec.window)), dtype=np.int32).reshape(
            [sizes.get(a, 1) for a in range(len(_tiled_shape(in_shape, spec)))])
        picked = jnp.expand_dims(argmax, axes) == offset
        return jnp.where(picked, jnp.expand_dims(dy, axes), jnp.zeros((), dy.dtype)).reshape(in_shape)
    if MAX_POOL_ARGMAX_LOOP:
        return max_pool_scatter_loop(dy, argmax, spec)
    return _spread(dy, spec, lambda flat, g: jnp.where(argmax == flat, g, jnp.zeros((), g.dtype)))


def max_pool_scatter_loop(dy: jax.Array, argmax: jax.Array, spec: PoolSpec) -> jax.Array:
    """``max_pool_scatter`` as a loop over the taps: tap ``t`` adds ``dy`` where the argmax is
    ``t`` onto the block of ``x̄_pad`` it read (``jaxcnn._taps.tap_sum_adjoint``). The argmax is
    the loop's operand, read from memory (fused into an unrolled spread, XLA recomputed the
    window's scan for every tap: 3×3 s2 ``N…C`` fwd+bwd ~10 ms, PyTorch 3.5)."""
    padded = with_spatial_sizes(dy.shape, spec, tuple(
        length + lo + hi for length, (lo, hi) in zip(spec.in_sizes, spec.padding)))
    zero = jnp.zeros((), dy.dtype)
    dx_pad = tap_sum_adjoint(spec.window, lambda t: jnp.where(argmax == t, dy, zero), padded, spec, dy.dtype)
    return crop(dx_pad, spec.spatial_axes(), spec.padding)


# ----------------------------------------------------------------------------- avg pooling


def windows_tile_input(spec: PoolSpec) -> bool:
    """Whether the windows tile the input exactly: stride = window, no padding, no dilation,
    every size a multiple of the window (then ``c[i] = ∏K`` and no sample is left out)."""
    return (spec.stride == spec.window and all(p == (0, 0) for p in spec.padding)
            and all(d == 1 for d in spec.dilation)
            and all(length == o * k
                    for length, o, k in zip(spec.in_sizes, spec.out_sizes(), spec.window)))


def _split_window(spec: PoolSpec) -> tuple[int, ...]:
    """The window sizes ``K > 1``: the axes ``_tiled_shape`` splits (a window of 1 leaves its
    axis whole: a size-1 offset axis got a layout of its own from XLA's CPU compiler, and the
    clips model's first activations a 3 ms copy per step)."""
    return tuple(k for k in spec.window if k > 1)


def _tiled_shape(shape: tuple[int, ...], spec: PoolSpec) -> tuple[int, ...]:
    """``shape`` with each spatial size ``L`` whose window ``K`` > 1 split into ``(L / K, K)``:
    one axis per tile position and one per offset in the tile."""
    out = []
    for axis, size in enumerate(shape):
        k = spec.window[spec.spatial_axes().index(axis)] if axis in spec.spatial_axes() else 1
        out += [size // k, k] if k > 1 else [size]
    return tuple(out)


def _offset_axes(spec: PoolSpec) -> tuple[int, ...]:
    """The in-tile offset axes of ``_tiled_shape``, one per window size ``K > 1``."""
    axes: list[int] = []
    for axis, k in zip(spec.spatial_axes(), spec.window):
        if k > 1:   # earlier splits shifted this axis right by one each
            axes.append(axis + len(axes) + 1)
    return tuple(axes)


def window_average(x: jax.Array, spec: PoolSpec, count_include_pad: bool) -> jax.Array:
    """``y[i] = (Σ_k x_pad[i·s + k]) / c[i]`` with PyTorch's divisor ``c``: the taps' strided
    slices added in row-major tap order, which XLA's CPU compiler fuses into one loop. Where the
    windows tile the input a mean over the in-tile axes of a reshape is the same sum, but XLA
    sends that reduction to its library, 7× slower (the clips model's input, 0.78 vs 0.11 ms)."""
    x_pad = _pad(x, spec, spec.padding, 0)
    total = None
    for offset in offsets(spec.window):
        part = x_pad[_window(spec, offset, x.ndim)]
        total = part if total is None else total + part
    return total / jnp.asarray(avg_divisor(spec, count_include_pad, x.ndim), x.dtype)


def avg_pool_transpose(dy: jax.Array, spec: PoolSpec, count_include_pad: bool) -> jax.Array:
    """``dx[j] = Σ_{i, k : i·s + k = j + lo} dy[i] / c[i]``, shaped as the pooled input: the
    adjoint of ``window_average``."""
    if windows_tile_input(spec):
        # every sample of a tile gets dy / ∏K: a broadcast over the tile axes
        g = jnp.expand_dims(dy / jnp.asarray(np.prod(spec.window), dy.dtype), _offset_axes(spec))
        in_shape = with_spatial_sizes(dy.shape, spec, spec.in_sizes)
        return jnp.broadcast_to(g, _tiled_shape(in_shape, spec)).reshape(in_shape)
    g = dy / jnp.asarray(avg_divisor(spec, count_include_pad, dy.ndim), dy.dtype)
    return _spread(g, spec, lambda flat, share: share)


# ----------------------------------------------------------------------------- global avg


def global_mean(x: jax.Array, channels_last: bool) -> jax.Array:
    """``y[n, c] = Σ_j x[n, c, j] / |S|``."""
    return jnp.mean(x, axis=spatial_axes(x.ndim - 2, channels_last))


def global_avg_pool_transpose(dy: jax.Array, in_sizes: tuple[int, ...],
                              channels_last: bool) -> jax.Array:
    """``dx[n, c, j] = dy[n, c] / |S|`` broadcast over ``in_sizes``: the adjoint of the mean."""
    shape = global_input_shape(dy.shape, in_sizes, channels_last)
    axes = spatial_axes(len(shape) - 2, channels_last)
    g = jnp.expand_dims(dy / jnp.asarray(np.prod(in_sizes), dy.dtype), axes)
    return jnp.broadcast_to(g, shape)


def global_input_shape(pooled: tuple[int, ...], in_sizes: tuple[int, ...],
                       channels_last: bool) -> tuple[int, ...]:
    """The input shape of a global pooling whose output is ``pooled = (N, C)``."""
    n, c = pooled
    return (n, *in_sizes, c) if channels_last else (n, c, *in_sizes)
