r"""The tap machinery of every sliding-window op: kernel offsets, the strided slice a tap reads,
the same slice placed back, padding of the spatial axes, and the tap loops.

A window op with stride ``s`` and dilation ``d`` (per spatial axis) reads, for tap ``k`` of
output ``i``, ``x_pad[i·s + k·d]``. So tap ``k`` reads one strided slice of ``x_pad``
(``window``), and a VJP sends a per-output value back along that tap by the adjoint of the
slice (``place``): ``lax.pad`` with ``k·d`` before, ``s − 1`` between samples (interior
padding) and the rest after. The conv lowering (``jaxcnn._conv``: the manual pieces, im2col,
fold depth) and pooling (``jaxcnn._pool``) all loop over ``offsets`` with these.

``crop`` is the adjoint of zero padding. ``axes`` names the spatial axes of the array, in the
order of the per-axis tuples.

The tap loops run the same sums in a ``lax.fori_loop`` over a traced tap index ``t``
(row-major order of the kernel, as ``offsets``; ``tap_offsets`` turns it into ``k_t``), so one
tap's slice is alive at a time: ``tap_reader`` reads tap ``k`` (with a stride, from the phases
of ``x_pad``: each axis viewed as ``(rows, s)``, so a tap is a dynamic slice of just the
samples it reads) and ``tap_sum_adjoint`` adds parts back the same way (the conv loops' input
gradient, max pooling's scatter). ``spec`` there is any spec with ``spatial_axes()``,
``stride`` and ``dilation`` (``ConvSpec``, ``PoolSpec``).
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp

from jaxcnn._shapes import Pads, Shape, tap_placement


def offsets(k_sizes: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Kernel (or window) offsets ``k`` in row-major order (PyTorch's scan order)."""
    return itertools.product(*(range(k) for k in k_sizes))


def window(offset: Sequence[int], out_sizes: Sequence[int], stride: Sequence[int],
           dilation: Sequence[int], axes: Sequence[int], ndim: int) -> tuple[slice, ...]:
    """The strided slice of ``x_pad`` that tap ``k`` reads: ``x_pad[k·d + i·s]``, i < out."""
    index = [slice(None)] * ndim
    for axis, k, o, s, d in zip(axes, offset, out_sizes, stride, dilation):
        index[axis] = slice(k * d, k * d + (o - 1) * s + 1, s if o > 1 else 1)
    return tuple(index)


def pad_axes(a: jax.Array, axes: Sequence[int], pads: Pads, value: float = 0,
             interior: Sequence[int] | None = None) -> jax.Array:
    """``a`` padded by ``(lo, hi)`` (negative: cropped) and ``interior`` on the spatial axes,
    with ``value``; the other axes untouched."""
    config = [(0, 0, 0)] * a.ndim
    for i, axis in enumerate(axes):
        config[axis] = (pads[i][0], pads[i][1], 0 if interior is None else interior[i])
    return jax.lax.pad(a, jnp.asarray(value, a.dtype), config)


def crop(a: jax.Array, axes: Sequence[int], pads: Pads) -> jax.Array:
    """The adjoint of zero padding by ``pads``: ``x_pad`` with its ``(lo, hi)`` cut off (a
    negative side, a crop of the padded conv, becomes zeros the conv never read)."""
    return pad_axes(a, axes, tuple((-lo, -hi) for lo, hi in pads))


def place(part: jax.Array, offset: Sequence[int], out_sizes: Sequence[int], stride: Sequence[int],
          dilation: Sequence[int], axes: Sequence[int], padded_sizes: Sequence[int]) -> jax.Array:
    """The adjoint of ``window``: ``part[i]`` put at ``x_pad[k·d + i·s]`` in an array of the
    padded sizes, zeros elsewhere (``k·d`` before, ``s − 1`` between samples, the rest after)."""
    pads = tap_placement(offset, out_sizes, stride, dilation, padded_sizes)
    return pad_axes(part, axes, pads, 0, [s - 1 for s in stride])


# ----------------------------------------------------------------------------- tap loops


def interleave_phases(phases: Sequence[jax.Array], stride: Sequence[int], axes: Sequence[int]) -> jax.Array:
    """The array whose phases these are: ``phases[r]`` (``r`` in the row-major order of
    ``offsets(stride)``) holds ``a[…, j·s + r, …]`` along each of ``axes`` (``J`` rows each), and
    the result ``a`` is ``J·s`` long there: ``(s_0, …, N, …, J_i, …) → (N, …, J_i, s_i, …) →
    (N, …, J_i·s_i, …)``. The adjoint of a strided op without its holes, written once per phase
    (pooling's spread, the native strided input gradient)."""
    shape, n = phases[0].shape, len(stride)
    stacked = jnp.stack(list(phases)).reshape(*stride, *shape)
    order = [ax for a in range(len(shape)) for ax in ((n + a, axes.index(a)) if a in axes else (n + a,))]
    sizes = [size * stride[axes.index(a)] if a in axes else size for a, size in enumerate(shape)]
    return stacked.transpose(order).reshape(sizes)


def tap_offsets(t: jax.Array, k_sizes: Shape) -> list[jax.Array]:
    """``k_t``: the per-axis offsets of flat tap index ``t`` in row-major order of ``K``."""
    index, rest = [], t
    for size in reversed(k_sizes):
        index.append(rest % size)
        rest = rest // size
    return index[::-1]


def slice_starts(a: jax.Array, axes: Shape, values: list) -> list:
    """``dynamic_slice`` start indices into ``a``: ``values`` on ``axes``, 0 elsewhere."""
    start = [jnp.zeros((), jnp.int32)] * a.ndim
    for axis, value in zip(axes, values):
        start[axis] = jnp.asarray(value, jnp.int32)
    return start


def _phases(shape: Shape, spec: Any, out: Shape) -> tuple[list, list, list]:
    """``(pads, phased shape, tap block sizes)``: each strided spatial axis of ``shape`` padded
    at the end to whole rows of ``s`` and split as ``(rows, s)``; a tap's block is ``(out, 1)``
    there. An axis of stride 1 stays whole (a size-1 phase axis got a layout of its own from
    XLA's CPU compiler: a 3 ms copy of the clips model's first activations per step)."""
    axes, pads, phased, sizes = spec.spatial_axes(), [], [], []
    for a, size in enumerate(shape):
        if a not in axes or spec.stride[axes.index(a)] == 1:
            whole = size if a not in axes else out[axes.index(a)]
            pads.append((0, 0, 0)), phased.append(size), sizes.append(whole)
            continue
        i = axes.index(a)
        s, rows = spec.stride[i], -(-size // spec.stride[i])
        pads.append((0, rows * s - size, 0)), phased.extend((rows, s)), sizes.extend((out[i], 1))
    return pads, phased, sizes


def _phase_start(k: list, spec: Any, ndim: int) -> list[jax.Array]:
    """Where tap ``k`` starts in the phases: ``(q, r)`` with ``k·d = q·s + r`` per strided spatial
    axis, ``k·d`` on an axis of stride 1."""
    axes, start = spec.spatial_axes(), []
    for a in range(ndim):
        if a in axes:
            i = axes.index(a)
            offset = jnp.asarray(k[i] * spec.dilation[i], jnp.int32)
            s = spec.stride[i]
            start.extend((offset // s, offset % s) if s > 1 else (offset,))
        else:
            start.append(jnp.zeros((), jnp.int32))
    return start


def tap_reader(x_pad: jax.Array, spec: Any, out: Shape, pad_value: float = 0) -> Callable[..., jax.Array]:
    """``(k, shift) ↦ x_pad[k·d + (i + shift)·s]`` for ``i < out`` with traced ``k`` (and a
    traced ``shift`` of whole output rows along the first spatial axis, 0 by default: where a
    chunk of the output starts). Stride 1: a dynamic slice. Strided: ``x_pad`` is viewed once
    as its phases, each axis ``(rows, s)`` (padded at the end to whole rows with
    ``pad_value``, never read), and tap ``k`` with ``k·d = q·s + r`` is rows
    ``q … q + out − 1`` of phase ``r``: a dynamic slice of just the samples the tap reads
    (slicing the dilated extent and striding after copied ``∏s`` times as much)."""
    axes = spec.spatial_axes()
    if all(s == 1 for s in spec.stride):
        sizes = [out[axes.index(a)] if a in axes else size for a, size in enumerate(x_pad.shape)]

        def read_whole(k, shift=0):
            offsets = [ki * d for ki, d in zip(k, spec.dilation)]
            offsets[0] = offsets[0] + shift                 # stride 1: a row is a sample
            return jax.lax.dynamic_slice(x_pad, slice_starts(x_pad, axes, offsets), sizes)
        return read_whole
    pads, phased, sizes = _phases(x_pad.shape, spec, out)
    x_phases = jax.lax.pad(x_pad, jnp.asarray(pad_value, x_pad.dtype), pads).reshape(phased)
    tap_shape = [out[axes.index(a)] if a in axes else size for a, size in enumerate(x_pad.shape)]

    def read(k, shift=0):
        start = _phase_start(k, spec, x_pad.ndim)
        start[axes[0]] = start[axes[0]] + shift   # the first spatial axis' rows sit at axes[0]
        return jax.lax.dynamic_slice(x_phases, start, sizes).reshape(tap_shape)
    return read


def tap_sum_adjoint(k_sizes: Shape, part: Callable[[jax.Array], jax.Array], padded_shape: Shape,
                    spec: Any, dtype: Any) -> jax.Array:
    """The adjoint of reading taps: ``x̄_pad[k_t·d + i·s] += part(t)[i]`` for every tap, in a
    loop over the phases of ``x̄_pad`` (``tap_reader``'s view), each tap a dynamic update of
    the ``out``-sized block it read: no holes written."""
    first = jax.eval_shape(part, 0)
    out = [first.shape[a] for a in spec.spatial_axes()]
    pads, phased, sizes = _phases(padded_shape, spec, out)

    def body(t, acc):
        start = _phase_start(tap_offsets(t, k_sizes), spec, len(padded_shape))
        block = part(t).astype(dtype).reshape(sizes)
        return jax.lax.dynamic_update_slice(acc, jax.lax.dynamic_slice(acc, start, sizes) + block, start)

    acc = jax.lax.fori_loop(0, math.prod(k_sizes), body, jnp.zeros(phased, dtype))
    whole = acc.reshape([size + hi for size, (_, hi, _) in zip(padded_shape, pads)])
    return whole[tuple(slice(0, size) for size in padded_shape)]
