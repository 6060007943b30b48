r"""The manual pieces with their sum over kernel offsets run as a loop: one tap at a time.

``jaxcnn.conv_impls``' manual pieces write the tap sum out (``∏K`` slices and products in the
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
same summation order as the unrolled pieces; no convolution primitive. ``conv_forms.choose``
picks these when the unrolled taps would not fit the memory budget. With a stride, a tap is
read from the phases of ``x_pad`` (``tap_reader``: each axis viewed as ``(rows, s)``, so a tap
is a dynamic slice of just the samples it reads), and ``tap_sum_adjoint`` adds parts back the
same way (max pooling's scatter).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxcnn._args import ConvSpec
from jaxcnn._shapes import dilated_size, kernel_sizes, spatial_sizes
from jaxcnn._taps import crop, pad_axes
from jaxcnn._conv.pieces import (Shape, _merge_channels, _split_axes, _split_channels, _subscripts,
                               contract, conv_operands, output_dtype, sum_dtype, zero_pad)


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


def kernel_tap(w: jax.Array, spec: ConvSpec, k: list) -> jax.Array:
    """``w[k]`` with traced ``k``, channels split as ``conv_impls._tap``."""
    axes = spec.kernel_spatial_axes()
    sizes = [1 if axis in axes else size for axis, size in enumerate(w.shape)]
    tap = jax.lax.dynamic_slice(w, slice_starts(w, axes, k), sizes)
    tap = tap.reshape([size for axis, size in enumerate(w.shape) if axis not in axes])
    return _split_channels(tap, _split_axes(spec)[1], spec.groups)


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
            xs = _split_channels(read_tap(k, shift), act_axis, spec.groups)
            return y + contract(_subscripts(spec, 0), xs, kernel_tap(w, spec, k), spec)
        first = jax.eval_shape(lambda: body(0, 0.0))
        y = jax.lax.fori_loop(0, math.prod(k_sizes), body, jnp.zeros(first.shape, first.dtype))
        return _merge_channels(y, act_axis - spec.channels_last, spec.groups)

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
    act_axis = _split_axes(spec)[0]
    dy_g = _split_channels(dy.astype(w.dtype), act_axis, spec.groups)
    padded = list(in_shape)
    for axis, (lo, hi) in zip(axes, spec.padding):
        padded[axis] += lo + hi

    def part(t):
        tap = contract(_subscripts(spec, 1), dy_g, kernel_tap(w, spec, tap_offsets(t, k_sizes)), spec)
        return _merge_channels(tap, act_axis - spec.channels_last, spec.groups)

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
    summed after (``conv_forms.sample_batched_weight_grad``'s order, one group only)."""
    x_pad = zero_pad(x, spec, spec.padding)
    k_sizes = kernel_sizes(w_shape, spec)
    out = spatial_sizes(dy.shape, spec)
    act_axis, tap_axis = _split_axes(spec)
    dy_g = _split_channels(dy.astype(x.dtype), act_axis, spec.groups)
    read_tap = tap_reader(x_pad, spec, out)

    def tap(t):
        xs = _split_channels(read_tap(tap_offsets(t, k_sizes)), act_axis, spec.groups)
        if batched:
            per_sample = "n...c,n...o->nco" if spec.channels_last else "nc...,no...->noc"
            return contract(per_sample, xs, dy_g, spec).sum(0)
        return _merge_channels(contract(_subscripts(spec, 2), xs, dy_g, spec), tap_axis, spec.groups)

    taps = loop_stack(math.prod(k_sizes), tap)
    # (T, O, C/g) → (O, C/g, *K) channels first; (T, C/g, O) → (*K, C/g, O) channels last.
    return (taps if spec.channels_last else jnp.moveaxis(taps, 0, -1)).reshape(w_shape)


def loop_sample_batched_weight_grad(x: jax.Array, dy: jax.Array, spec: ConvSpec, w_shape: Shape) -> jax.Array:
    """``loop_weight_grad`` batched over the samples: for many samples and a small ``C × O``
    tap (XLA's CPU matmul cannot split a long contraction of a small output)."""
    return loop_weight_grad(x, dy, spec, w_shape, batched=True)
