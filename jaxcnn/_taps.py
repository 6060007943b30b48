r"""The tap machinery of every sliding-window op: kernel offsets, the strided slice a tap reads,
the same slice placed back, and padding of the spatial axes.

A window op with stride ``s`` and dilation ``d`` (per spatial axis) reads, for tap ``k`` of
output ``i``, ``x_pad[i·s + k·d]``. So tap ``k`` reads one strided slice of ``x_pad``
(``window``), and a VJP sends a per-output value back along that tap by the adjoint of the
slice (``place``): ``lax.pad`` with ``k·d`` before, ``s − 1`` between samples (interior
padding) and the rest after. ``jaxcnn.conv_impls`` (manual convolution), ``jaxcnn.conv_forms``
(im2col, fold depth) and ``jaxcnn.pool`` all loop over ``offsets`` with these.

``crop`` is the adjoint of zero padding. ``axes`` names the spatial axes of the array, in the
order of the per-axis tuples.
"""
from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp

from jaxcnn._shapes import Pads, tap_placement


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
