r"""The three pieces of the conv family, computed two ways: ``impl="lax"`` and ``impl="manual"``.

Each piece is a function of its two operands, the canonical ``ConvSpec`` and the shape it
rebuilds (``jaxcnn.conv`` holds the math and the primitives whose lowerings call these):

- ``conv(x, w)``:         ``y[i]  = Σ_k w[k] · x_pad[i·s + k·d]``
- ``input_grad(dy, w)``:  ``dx[j] = Σ_{i,k : i·s + k·d = j} w[k]ᵀ · dy[i]``
- ``weight_grad(x, dy)``: ``dw[k] = Σ_n Σ_i dy[n, i] ⊗ x_pad[n, i·s + k·d]``

``impl="lax"``: one ``lax.conv_general_dilated`` call per piece, the roles swapped and the
kernel flipped as the padding helpers of ``jaxcnn._shapes`` derive. ``impl="manual"``: no
convolution primitive: a static sum over kernel offsets ``k`` of strided slices
``x_pad[k·d + i·s]``, each contracted over channels with ``einsum``; in ``input_grad`` the same
slices placed back with ``lax.pad`` (interior padding = the stride's holes; ``jaxcnn._taps``).
Faster forms of the same maps are in ``forms``, ``loops``, ``depth`` and ``native``; ``rules``
picks one per shape. The channel helpers (``split_channels``, ``einsum_subscripts``, ...) are
shared with the tap loops of ``loops``.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn._conv.xla_guard import low_crops, operand_swap_aborts
from jaxcnn._shapes import (ConvSpec, Pads, Shape, input_grad_padding, kernel_sizes, output_sizes,
                            spatial_sizes, weight_grad_padding)
from jaxcnn._taps import crop, offsets, pad_axes, place, window

# ----------------------------------------------------------------------------- shared pieces


def input_grad_aborts_xla(in_sizes: Shape, k_sizes: Shape, out_sizes: Shape, spec: ConvSpec,
                          dtype: Any) -> bool:
    """Whether the input gradient as one lhs-dilated convolution (below, and what ``jax.grad``
    of ``lax`` emits) is a convolution XLA's operand swap aborts on (``xla_guard``)."""
    pads = input_grad_padding(in_sizes, k_sizes, out_sizes, spec.stride, spec.dilation, spec.padding)
    return operand_swap_aborts(out_sizes, k_sizes, (1,) * spec.n, pads, spec.stride,
                               spec.dilation, spec.groups, dtype=dtype)


def flip_swap_io(w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``w (O, C/g, *K)`` → ``(C, O/g, *K)`` flipped along ``K`` (either layout): the kernel
    of the input-gradient correlation, channel roles swapped within each group."""
    o_ax, i_ax = spec.kernel_io_axes()
    wc = jnp.moveaxis(w, (o_ax, i_ax), (0, 1))          # (O, Cg, *K) in both layouts
    out_ch, in_per_group, *k = wc.shape
    g = spec.groups
    wc = wc.reshape(g, out_ch // g, in_per_group, *k).swapaxes(1, 2)
    wc = wc.reshape(g * in_per_group, out_ch // g, *k)
    wc = jnp.flip(wc, axis=tuple(range(2, wc.ndim)))
    return jnp.moveaxis(wc, (0, 1), (o_ax, i_ax))


# The accumulation rule, decided here for every form: a piece returns ``output_dtype`` (what
# lax.conv_general_dilated returns) and sums its taps in ``sum_dtype``.

def _half(dtype: Any) -> bool:
    return jnp.finfo(dtype).bits < 32


def output_dtype(spec: ConvSpec, dtype: Any) -> Any:
    """The dtype a piece returns for operands of ``dtype``: ``preferred_element_type`` if set."""
    return spec.preferred_element_type if spec.preferred_element_type is not None else dtype


def sum_dtype(spec: ConvSpec, dtype: Any) -> Any:
    """The dtype taps are summed in: ``preferred_element_type`` if set, float32 for half
    precision (rounded once by the caller, as lax.conv_general_dilated accumulates; summing in
    bfloat16 lost ~1e-2 over 25 taps), else the operands' own."""
    if spec.preferred_element_type is None and _half(dtype):
        return jnp.float32
    return output_dtype(spec, dtype)


def contract(subscripts: str, a: jax.Array, b: jax.Array, spec: ConvSpec) -> jax.Array:
    """``einsum`` of two operands, summed in ``sum_dtype``, at the spec's precision."""
    total = sum_dtype(spec, a.dtype)
    if _half(a.dtype):
        # A product of two bfloat16 (or float16) values is exact in float32: the same sum,
        # and XLA's CPU dot has no bf16 × bf16 → f32.
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return _dot(subscripts, a, b, precision=spec.precision, preferred_element_type=total)


def _dot(subscripts: str, a: jax.Array, b: jax.Array, **kwargs: Any) -> jax.Array:
    """``einsum(subscripts, a, b)`` as one ``dot_general`` whose summed and batch axes are listed
    in its first operand's axis order, the operands taken in the order whose result is already
    in the output's order where one is. (``jnp.einsum`` lists the summed axes as its path search
    leaves them: ``"n...c,n...o->co"`` summed ``(w, n)``, and XLA's CPU compiler then copied both
    operands transposed, an activation-sized copy each, where ``(n, w)`` contracts them as they
    lie; a result transposed after the dot made XLA's CPU compiler emit a slow dot: the
    channels-first sample-batched weight gradient of fashion_conv2 ran 40 instead of 9 ms.)
    Every letter of an operand is in the other operand or in the output."""
    inputs, out = subscripts.split("->")
    raw = inputs.split(",")
    count = next((op.ndim - len(t.replace("...", "")) for t, op in zip(raw, (a, b)) if "..." in t), 0)
    ta, tb = (t.replace("...", "ABCDEFGH"[:count]) for t in raw)
    out = out.replace("...", "ABCDEFGH"[:count])   # the subscripts here are lower case
    batch = [letter for letter in out if letter in ta and letter in tb]
    if batch + [l for l in tb if l not in ta] + [l for l in ta if l not in tb] == list(out):
        (ta, a), (tb, b) = (tb, b), (ta, a)
    summed = [letter for letter in ta if letter in tb and letter not in out]
    batch = [letter for letter in ta if letter in batch]
    dims = (([ta.index(l) for l in summed], [tb.index(l) for l in summed]),
            ([ta.index(l) for l in batch], [tb.index(l) for l in batch]))
    result = jax.lax.dot_general(a, b, dims, **kwargs)
    order = batch + [l for l in ta if l not in tb] + [l for l in tb if l not in ta]
    return result if order == list(out) else jnp.transpose(result, [order.index(l) for l in out])


def stack_taps(taps: list[jax.Array], spec: ConvSpec, w_shape: Shape) -> jax.Array:
    """Per-tap ``(O, C/g)`` or ``(C/g, O)`` blocks in row-major order of K, stacked where K
    sits in ``w``: ``(O, C/g, *K)`` or ``(*K, C/g, O)``."""
    return jnp.stack(taps, axis=0 if spec.channels_last else 2).reshape(w_shape)


def conv_output_sizes(x_shape: Shape, k_sizes: Shape, spec: ConvSpec) -> Shape:
    """The spatial sizes of the correlation of ``x_shape`` with a kernel of ``k_sizes``."""
    return output_sizes(spatial_sizes(x_shape, spec), k_sizes, spec.stride, spec.dilation, spec.padding)


def tap_window(spec: ConvSpec, offset: Shape, out_sizes: Shape, ndim: int) -> tuple[slice, ...]:
    """The strided slice of ``x_pad`` that tap ``k`` reads: ``x_pad[k·d + i·s]``, i < out."""
    return window(offset, out_sizes, spec.stride, spec.dilation, spec.spatial_axes(), ndim)


def zero_pad(a: jax.Array, spec: ConvSpec, pads: Pads) -> jax.Array:
    """``a`` zero-padded (negative: cropped) on the spec's spatial axes."""
    return pad_axes(a, spec.spatial_axes(), pads)


# ----------------------------------------------------------------------------- impl="lax"


def conv_general(lhs: jax.Array, rhs: jax.Array, strides, padding, *, dimension_numbers,
                 lhs_dilation=None, **kwargs: Any) -> jax.Array:
    """``lax.conv_general_dilated``, a negative low pad on an undilated axis taken as a slice of
    ``lhs`` first (the same map; XLA's CPU float32 convolution returns garbage for some: see
    ``xla_guard``)."""
    spatial = dimension_numbers.lhs_spec[2:]
    base = lhs_dilation or (1,) * len(spatial)
    crops, padding = low_crops([lhs.shape[a] for a in spatial], padding, base)
    if any(crops):
        lhs = pad_axes(lhs, spatial, [(-cut, 0) for cut in crops])
    return jax.lax.conv_general_dilated(lhs, rhs, strides, padding, lhs_dilation=lhs_dilation,
                                        dimension_numbers=dimension_numbers, **kwargs)


def lax_conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    return conv_general(
        x, w, spec.stride, spec.padding, rhs_dilation=spec.dilation,
        dimension_numbers=spec.dimension_numbers(), feature_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=spec.preferred_element_type)


def lax_input_grad(dy: jax.Array, w: jax.Array, spec: ConvSpec, in_shape: Shape) -> jax.Array:
    in_sizes, k_sizes = spatial_sizes(in_shape, spec), kernel_sizes(w.shape, spec)
    out_sizes = spatial_sizes(dy.shape, spec)
    pads = input_grad_padding(in_sizes, k_sizes, out_sizes, spec.stride, spec.dilation, spec.padding)
    if input_grad_aborts_xla(in_sizes, k_sizes, out_sizes, spec, w.dtype):
        # XLA would rewrite this lhs-dilated convolution into an invalid one and abort the
        # process (xla_guard); the manual form is the same map with no convolution.
        return manual_input_grad(dy, w, spec, in_shape)
    return conv_general(
        dy.astype(w.dtype), flip_swap_io(w, spec), (1,) * spec.n, pads,
        lhs_dilation=spec.stride, rhs_dilation=spec.dilation,
        dimension_numbers=spec.dimension_numbers(), feature_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=spec.preferred_element_type)


def lax_weight_grad(x: jax.Array, dy: jax.Array, spec: ConvSpec, w_shape: Shape) -> jax.Array:
    k_sizes = kernel_sizes(w_shape, spec)
    pads = weight_grad_padding(spatial_sizes(x.shape, spec), k_sizes, spatial_sizes(dy.shape, spec),
                               spec.stride, spec.dilation, spec.padding)
    # Roles swapped: x's channels are the batch, its batch the features; dy is the kernel
    # (out-features = its channels, in-features = its batch); the result's "batch" is w's
    # in-channel axis and its features w's out-channel axis.
    c_ax, spatial = spec.channel_axis(), spec.spatial_axes()
    o_ax, i_ax = spec.kernel_io_axes()
    dn = jax.lax.ConvDimensionNumbers((c_ax, 0) + spatial, (c_ax, 0) + spatial,
                                      (i_ax, o_ax) + spec.kernel_spatial_axes())
    return conv_general(
        x, dy.astype(x.dtype), spec.dilation, pads, rhs_dilation=spec.stride,
        dimension_numbers=dn, batch_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=spec.preferred_element_type)


# ----------------------------------------------------------------------------- impl="manual"
# Channel contractions of one kernel tap, per layout: x slice (N, C, *O) or (N, *O, C) with
# C split into (groups, C/g); the tap w[k] is (O, C/g) or (C/g, O) with O split likewise.
# With one group there is no group axis: a batch axis of size 1 in the middle of an operand
# makes XLA transpose both operands of every tap (1.5-2x slower on CPU).
_EINSUM = {  # (forward, input_grad, weight_grad)
    False: ("ngc...,goc->ngo...", "ngo...,goc->ngc...", "ngc...,ngo...->goc"),
    True: ("n...gc,cgo->n...go", "n...go,cgo->n...gc", "n...gc,n...go->cgo"),
}


def einsum_subscripts(spec: ConvSpec, piece: int) -> str:
    subscripts = _EINSUM[spec.channels_last][piece]
    return subscripts if spec.groups > 1 else subscripts.replace("g", "")


def split_channels(a: jax.Array, axis: int, groups: int) -> jax.Array:
    if groups == 1:
        return a
    axis = axis % a.ndim
    return a.reshape(a.shape[:axis] + (groups, a.shape[axis] // groups) + a.shape[axis + 1:])


def merge_channels(a: jax.Array, axis: int, groups: int) -> jax.Array:
    if groups == 1:
        return a
    axis = axis % a.ndim
    return a.reshape(a.shape[:axis] + (a.shape[axis] * a.shape[axis + 1],) + a.shape[axis + 2:])


def channel_axes(spec: ConvSpec) -> tuple[int, int]:
    """Channel axis of an activation and of a tap ``w[k]`` (``(O, C/g)`` or ``(C/g, O)``)."""
    return (-1, 1) if spec.channels_last else (1, 0)


def _tap(w: jax.Array, spec: ConvSpec, offset) -> jax.Array:
    """``w[k]`` as ``(G, O/g, C/g)`` (channels first) or ``(C/g, G, O/g)`` (channels last)."""
    index = [slice(None)] * w.ndim
    for axis, k in zip(spec.kernel_spatial_axes(), offset):
        index[axis] = k
    tap = w[tuple(index)]
    return split_channels(tap, channel_axes(spec)[1], spec.groups)


def conv_operands(x: jax.Array, w: jax.Array, spec: ConvSpec) -> tuple[jax.Array, Shape, Shape, int]:
    """What a manual forward's tap sum reads: ``x_pad``, ``K``, the output sizes and the
    activation's channel axis."""
    k_sizes = kernel_sizes(w.shape, spec)
    return (zero_pad(x, spec, spec.padding), k_sizes, conv_output_sizes(x.shape, k_sizes, spec),
            channel_axes(spec)[0])


def manual_conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    x_pad, k_sizes, out, act_axis = conv_operands(x, w, spec)
    y = None
    for offset in offsets(k_sizes):
        xs = split_channels(x_pad[tap_window(spec, offset, out, x.ndim)], act_axis, spec.groups)
        term = contract(einsum_subscripts(spec, 0), xs, _tap(w, spec, offset), spec)
        y = term if y is None else y + term
    y = merge_channels(y, act_axis - spec.channels_last, spec.groups)
    return y.astype(output_dtype(spec, x.dtype))


def manual_input_grad(dy: jax.Array, w: jax.Array, spec: ConvSpec, in_shape: Shape) -> jax.Array:
    in_sizes = spatial_sizes(in_shape, spec)
    out = spatial_sizes(dy.shape, spec)
    padded = [length + lo + hi for length, (lo, hi) in zip(in_sizes, spec.padding)]
    act_axis = channel_axes(spec)[0]
    dy_g = split_channels(dy.astype(w.dtype), act_axis, spec.groups)
    dx_pad = None
    for offset in offsets(kernel_sizes(w.shape, spec)):
        part = contract(einsum_subscripts(spec, 1), dy_g, _tap(w, spec, offset), spec)
        part = merge_channels(part, act_axis - spec.channels_last, spec.groups)
        # Tap k's contribution lands on x_pad[k·d + i·s]: pad k·d before, s − 1 between.
        part = place(part, offset, out, spec.stride, spec.dilation, spec.spatial_axes(), padded)
        dx_pad = part if dx_pad is None else dx_pad + part
    return crop(dx_pad, spec.spatial_axes(), spec.padding)


def manual_weight_grad(x: jax.Array, dy: jax.Array, spec: ConvSpec, w_shape: Shape) -> jax.Array:
    x_pad = zero_pad(x, spec, spec.padding)
    out = spatial_sizes(dy.shape, spec)
    act_axis, tap_axis = channel_axes(spec)
    dy_g = split_channels(dy.astype(x.dtype), act_axis, spec.groups)
    taps = []
    for offset in offsets(kernel_sizes(w_shape, spec)):
        xs = split_channels(x_pad[tap_window(spec, offset, out, x.ndim)], act_axis, spec.groups)
        tap = contract(einsum_subscripts(spec, 2), xs, dy_g, spec)
        taps.append(merge_channels(tap, tap_axis, spec.groups))
    return stack_taps(taps, spec, w_shape)


IMPLS = {  # (conv, input_grad, weight_grad) per impl
    "lax": (lax_conv, lax_input_grad, lax_weight_grad),
    "manual": (manual_conv, manual_input_grad, manual_weight_grad),
}
