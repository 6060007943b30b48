r"""The manual pieces with their sum over kernel offsets run as a loop: one tap at a time.

``pieces``' manual pieces write the tap sum out (``∏K`` slices and products in the
program); XLA's CPU compiler then computes every tap's slice and product before it sums them,
so the compiled program holds ``∏K`` activation-sized intermediates at once (6–18× the
temporary memory of ``jax.grad`` of lax on the bench's 3×3 and 3×3×3 rows). These forms run
the same sum in a ``lax.fori_loop`` over the tap index ``t`` (row-major order of the kernel,
as ``jaxcnn._taps.offsets``), so one tap's slice and product are alive at a time and the sum
is accumulated in place:

- ``conv``:        ``y  += contract(x_pad[k_t·d + i·s], w[k_t])``
- ``input_grad``:  ``dx_pad[k_t·d + i·s] += contract(dy[i], w[k_t])`` (a dynamic update of the
  strided window: the part interior-padded by ``s − 1``, then added where it lands)
- ``weight_grad``: ``dw[t] = contract(x_pad[k_t·d + i·s], dy[i])`` written into a ``(T, …)``
  buffer

The offsets are traced (``k_t`` from ``t`` by ``divmod``), the slice sizes static. Same maps,
same summation order as the unrolled pieces; no convolution primitive. ``rules.choose``
picks these when the unrolled taps would not fit the memory budget (``budget``). Taps are read
and added back with the generic tap loops of ``jaxcnn._taps`` (``tap_reader``,
``tap_sum_adjoint``: with a stride, from the phases of ``x_pad``).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from jaxcnn._conv.budget import activation_sizes, chunks
from jaxcnn._conv.pieces import (channel_axes, contract, conv_operands, einsum_subscripts,
                                 merge_channels, output_dtype, split_channels, sum_dtype, zero_pad)
from jaxcnn._shapes import ConvSpec, Shape, kernel_sizes, spatial_sizes
from jaxcnn._taps import crop, slice_starts, tap_offsets, tap_reader, tap_sum_adjoint


def kernel_tap(w: jax.Array, spec: ConvSpec, k: list) -> jax.Array:
    """``w[k]`` with traced ``k``, channels split as ``pieces``' manual taps."""
    axes = spec.kernel_spatial_axes()
    sizes = [1 if axis in axes else size for axis, size in enumerate(w.shape)]
    tap = jax.lax.dynamic_slice(w, slice_starts(w, axes, k), sizes)
    tap = tap.reshape([size for axis, size in enumerate(w.shape) if axis not in axes])
    return split_channels(tap, channel_axes(spec)[1], spec.groups)


def loop_conv(x: jax.Array, w: jax.Array, spec: ConvSpec, batch_chunks: int = 1,
              row_chunks: int = 1) -> jax.Array:
    """``y += contract(x_pad[k_t·d + i·s], w[k_t])`` one tap at a time; with ``batch_chunks``
    (a divisor of ``N``) an outer loop over that many slices of the batch, each padded, summed
    and written into ``y`` on its own: ``x_pad``, the accumulator and the tap's product then
    exist for one slice at a time. With ``row_chunks`` (a divisor of the first spatial axis'
    output size) the outer loop runs over slices of the output's rows instead, every tap read
    from the one ``x_pad`` at the slice's rows (a single sample's volume)."""
    if batch_chunks > 1:
        return _batch_chunked(x, batch_chunks, lambda part: loop_conv(part, w, spec))
    x_pad, k_sizes, out, act_axis = conv_operands(x, w, spec)
    rows = out[0] // row_chunks
    read_tap = tap_reader(x_pad, spec, (rows, *out[1:]))

    def chunk(shift):
        def body(t, y):
            k = tap_offsets(t, k_sizes)
            xs = split_channels(read_tap(k, shift), act_axis, spec.groups)
            return y + contract(einsum_subscripts(spec, 0), xs, kernel_tap(w, spec, k), spec)
        first = jax.eval_shape(lambda: body(0, 0.0))
        y = jax.lax.fori_loop(0, math.prod(k_sizes), body, jnp.zeros(first.shape, first.dtype))
        return merge_channels(y, act_axis - spec.channels_last, spec.groups)

    if row_chunks == 1:
        y = chunk(0)
    else:
        first = jax.eval_shape(chunk, 0)
        row_axis = spec.spatial_axes()[0]
        shape = list(first.shape)
        shape[row_axis] = out[0]
        y = jax.lax.fori_loop(0, row_chunks, lambda j, y: jax.lax.dynamic_update_slice_in_dim(
            y, chunk(j * rows), j * rows, row_axis), jnp.zeros(shape, first.dtype))
    return y.astype(output_dtype(spec, x.dtype))


def _batch_chunked(x: jax.Array, chunks: int, f: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``f`` over ``chunks`` equal slices of ``x``'s batch, in a loop, the results stacked back."""
    parts = x.reshape(chunks, x.shape[0] // chunks, *x.shape[1:])
    first = jax.eval_shape(f, parts[0])
    y = jax.lax.fori_loop(0, chunks, lambda b, y: jax.lax.dynamic_update_index_in_dim(
        y, f(jax.lax.dynamic_index_in_dim(parts, b, 0, keepdims=False)), b, 0),
        jnp.zeros((chunks, *first.shape), first.dtype))
    return y.reshape(chunks * first.shape[0], *first.shape[1:])


def loop_input_grad(dy: jax.Array, w: jax.Array, spec: ConvSpec, in_shape: Shape) -> jax.Array:
    """``dx_pad[k_t·d + i·s] += contract(dy[i], w[k_t])`` one tap at a time, each tap's part
    added onto the phases of ``dx_pad`` it read (``tap_sum_adjoint``: no stride holes written),
    the padding cropped off after."""
    axes, k_sizes = spec.spatial_axes(), kernel_sizes(w.shape, spec)
    act_axis = channel_axes(spec)[0]
    dy_g = split_channels(dy.astype(w.dtype), act_axis, spec.groups)
    padded = list(in_shape)
    for axis, (lo, hi) in zip(axes, spec.padding):
        padded[axis] += lo + hi

    def part(t):
        tap = contract(einsum_subscripts(spec, 1), dy_g, kernel_tap(w, spec, tap_offsets(t, k_sizes)), spec)
        return merge_channels(tap, act_axis - spec.channels_last, spec.groups)

    dx_pad = tap_sum_adjoint(k_sizes, part, tuple(padded), spec, sum_dtype(spec, w.dtype))
    return crop(dx_pad, axes, spec.padding).astype(output_dtype(spec, w.dtype))


def loop_stack(count: int, tap: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``stack([tap(t) for t < count])`` as a loop writing each tap into a ``(count, …)`` buffer."""
    first = jax.eval_shape(tap, 0)
    return jax.lax.fori_loop(
        0, count, lambda t, out: jax.lax.dynamic_update_index_in_dim(out, tap(t), t, 0),
        jnp.zeros((count, *first.shape), first.dtype))


def loop_weight_grad(x: jax.Array, dy: jax.Array, spec: ConvSpec, w_shape: Shape,
                     batched: bool = False) -> jax.Array:
    """``dw[k_t]`` one tap at a time; ``batched``: each tap's contraction one matmul per sample,
    summed after (``forms.sample_batched_weight_grad``'s order, one group only)."""
    x_pad = zero_pad(x, spec, spec.padding)
    k_sizes = kernel_sizes(w_shape, spec)
    out = spatial_sizes(dy.shape, spec)
    act_axis, tap_axis = channel_axes(spec)
    dy_g = split_channels(dy.astype(x.dtype), act_axis, spec.groups)
    read_tap = tap_reader(x_pad, spec, out)

    def tap(t):
        xs = split_channels(read_tap(tap_offsets(t, k_sizes)), act_axis, spec.groups)
        if batched:
            per_sample = "n...c,n...o->nco" if spec.channels_last else "nc...,no...->noc"
            return contract(per_sample, xs, dy_g, spec).sum(0)
        return merge_channels(contract(einsum_subscripts(spec, 2), xs, dy_g, spec), tap_axis, spec.groups)

    taps = loop_stack(math.prod(k_sizes), tap)
    # (T, O, C/g) → (O, C/g, *K) channels first; (T, C/g, O) → (*K, C/g, O) channels last.
    return (taps if spec.channels_last else jnp.moveaxis(taps, 0, -1)).reshape(w_shape)


def loop_sample_batched_weight_grad(x: jax.Array, dy: jax.Array, spec: ConvSpec, w_shape: Shape) -> jax.Array:
    """``loop_weight_grad`` batched over the samples: for many samples and a small ``C × O``
    tap (XLA's CPU matmul cannot split a long contraction of a small output)."""
    return loop_weight_grad(x, dy, spec, w_shape, batched=True)


def chunked_loop_conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``loop_conv`` over slices of the batch or of the output's rows, as few as fit the memory
    budget (``budget.chunks``): the manual forward's last resort where the whole tap loop does
    not fit."""
    batch, rows = chunks(activation_sizes(spec, x.shape, w.shape))
    return loop_conv(x, w, spec, batch_chunks=batch, row_chunks=rows)
