"""``conv`` and ``conv_transpose``: their arguments, validated and made canonical."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._shapes import (ConvSpec, Pads, conv_transpose_output_size, dilated_size, is_int,
                            kernel_sizes, resolve_padding, spatial_sizes)
from jaxcnn._args.common import (IMPLS, PADDING_MODES, element_type, hashable_precision,
                                 as_float_array, check_rank, choice, int_tuple, layout_text)

# ----------------------------------------------------------------------------- conv

@dataclasses.dataclass(frozen=True)
class ConvArgs:
    """Validated conv arguments: arrays, the spec of the zero-padded core conv, and the
    non-zero padding mode (with its pads) to apply before it, if any."""

    x: jax.Array
    w: jax.Array
    b: jax.Array | None
    spec: ConvSpec
    padding_mode: str
    mode_pads: Pads
    impl: str


def _kernel_layout(n: int, channels_last: bool) -> str:
    return layout_text(n, channels_last, True)


def _common_conv_args(x: jax.Array, w: jax.Array, *, channels_last: Any, impl: Any,
                      padding_mode: Any, groups: Any, stride: Any, dilation: Any,
                      ndim: int | None = None, op: str = "conv", kernel_layout=_kernel_layout):
    """The checks ``conv`` and ``conv_transpose`` share: layout flag, ranks, dtypes, impl,
    padding mode, groups, stride and dilation. ``kernel_layout(n, channels_last)`` describes
    the op's weight in messages."""
    if not isinstance(channels_last, (bool, np.bool_)):
        raise TypeError(f"channels_last: expected a bool; got {channels_last!r}")
    channels_last = bool(channels_last)
    if w.ndim < 3:
        raise ValueError(f"w: expected at least 3 dimensions {kernel_layout(1, channels_last)}; "
                         f"got shape {tuple(w.shape)}")
    n = w.ndim - 2
    if ndim is not None and n != ndim:
        raise ValueError(f"w: {op} expects {ndim} spatial axes, a {ndim + 2}-d kernel "
                         f"{kernel_layout(ndim, channels_last)}; got shape {tuple(w.shape)}")
    check_rank(x, n + 2, "x", f"{layout_text(n, channels_last)} for a kernel of shape {tuple(w.shape)}")
    if x.dtype != w.dtype:
        raise TypeError(f"w: expected the dtype of x ({x.dtype}); got {w.dtype}")
    impl = choice(impl, IMPLS, "impl")
    padding_mode = choice(padding_mode, PADDING_MODES, "padding_mode")
    if not is_int(groups):
        raise TypeError(f"groups: expected a positive int; got {groups!r}")
    groups = int(groups)
    if groups < 1:
        raise ValueError(f"groups: expected a positive int; got {groups}")
    stride = int_tuple(stride, n, "stride")
    dilation = int_tuple(dilation, n, "dilation")
    return x, w, channels_last, n, impl, padding_mode, groups, stride, dilation


def normalize_conv(x: Any, w: Any, b: Any, *, stride: Any, padding: Any, dilation: Any,
                   groups: Any, padding_mode: Any, channels_last: Any, impl: Any,
                   precision: Any = None, preferred_element_type: Any = None,
                   ndim: int | None = None, op: str = "conv") -> ConvArgs:
    """Validate everything ``conv`` accepts; see ``jaxcnn.conv`` for the semantics."""
    x = as_float_array(x, "x")
    w = as_float_array(w, "w")
    x, w, channels_last, n, impl, padding_mode, groups, stride, dilation = _common_conv_args(
        x, w, channels_last=channels_last, impl=impl, padding_mode=padding_mode, groups=groups,
        stride=stride, dilation=dilation, ndim=ndim, op=op)

    layout = ConvSpec(stride, ((0, 0),) * n, dilation, groups, channels_last)
    in_sizes = spatial_sizes(x.shape, layout)
    k_sizes = kernel_sizes(w.shape, layout)
    channels = x.shape[layout.channel_axis()]
    o_ax, i_ax = layout.kernel_io_axes()
    out_channels, in_per_group = w.shape[o_ax], w.shape[i_ax]
    if any(k < 1 for k in k_sizes):
        raise ValueError(f"w: expected every kernel size >= 1; got kernel sizes {k_sizes}")
    if channels % groups:
        raise ValueError(f"groups: expected a divisor of the {channels} input channels of x; got {groups}")
    if out_channels % groups:
        raise ValueError(f"groups: expected a divisor of the {out_channels} output channels of w; "
                         f"got {groups}")
    if in_per_group * groups != channels:
        raise ValueError(f"w: expected {channels // groups} input channels per group (x has {channels} "
                         f"channels, groups={groups}); got {in_per_group} in shape {tuple(w.shape)}")
    pads = resolve_padding(padding, in_sizes, k_sizes, stride, dilation)
    check_padding_mode(padding_mode, pads, in_sizes)
    for axis, (length, k, d, (lo, hi)) in enumerate(zip(in_sizes, k_sizes, dilation, pads)):
        if length + lo + hi < dilated_size(k, d):
            raise ValueError(
                f"w: kernel extent {dilated_size(k, d)} (size {k}, dilation {d}) on spatial axis "
                f"{axis} is larger than the padded input {length + lo + hi} (size {length} + "
                f"padding {lo} + {hi}); expected a kernel that fits")
    b = normalize_bias(b, out_channels, x.dtype, preferred_element_type)
    spec = ConvSpec(stride, pads if padding_mode == "zeros" else ((0, 0),) * n, dilation, groups,
                    channels_last, hashable_precision(precision), element_type(preferred_element_type))
    mode_pads = pads if padding_mode != "zeros" else ((0, 0),) * n
    return ConvArgs(x, w, b, spec, padding_mode, mode_pads, impl)


def check_padding_mode(padding_mode: str, pads: Pads, in_sizes: Sequence[int]) -> None:
    """PyTorch's limits: reflect needs pad < L, circular pad <= L, replicate L >= 1."""
    if padding_mode == "zeros":
        return
    for axis, (length, (lo, hi)) in enumerate(zip(in_sizes, pads)):
        widest = max(lo, hi)
        if widest == 0:
            continue
        if padding_mode == "reflect" and widest >= length:
            raise ValueError(f"padding: reflect padding must be smaller than the input size; got "
                             f"padding ({lo}, {hi}) for size {length} on spatial axis {axis}")
        if padding_mode == "circular" and widest > length:
            raise ValueError(f"padding: circular padding must not exceed the input size; got "
                             f"padding ({lo}, {hi}) for size {length} on spatial axis {axis}")
        if padding_mode == "replicate" and length < 1:
            raise ValueError(f"padding: replicate padding needs a non-empty input; got size "
                             f"{length} on spatial axis {axis}")


def normalize_bias(b: Any, out_channels: int, dtype: Any, preferred_element_type: Any = None) -> jax.Array | None:
    """``b`` of shape ``(out_channels,)`` and the dtype of x (or of the accumulation)."""
    if b is None:
        return None
    b = as_float_array(b, "b")
    if b.shape != (out_channels,):
        raise ValueError(f"b: expected shape ({out_channels},) (one bias per output channel); "
                         f"got {tuple(b.shape)}")
    allowed = {jnp.dtype(dtype)}
    if preferred_element_type is not None:
        allowed.add(jnp.dtype(preferred_element_type))
    if b.dtype not in allowed:
        raise TypeError(f"b: expected dtype {' or '.join(sorted(map(str, allowed)))}; got {b.dtype}")
    return b


def shape_tuple(value: Any, ndim: int, name: str) -> tuple[int, ...]:
    """A shape of ``ndim`` non-negative ints."""
    if (not isinstance(value, Sequence) or isinstance(value, str)
            or not all(is_int(v) for v in value)):
        raise TypeError(f"{name}: expected a tuple of {ndim} ints; got {value!r}")
    shape = tuple(int(v) for v in value)
    if len(shape) != ndim or any(v < 0 for v in shape):
        raise ValueError(f"{name}: expected {ndim} non-negative ints; got {value!r}")
    return shape


def check_cotangent(dy: Any, expected_shape: tuple[int, ...], dtype: Any, name: str = "dy") -> jax.Array:
    """An upstream gradient of exactly the conv's output shape and the operands' dtype."""
    dy = as_float_array(dy, name)
    if tuple(dy.shape) != tuple(expected_shape):
        raise ValueError(f"{name}: expected the conv's output shape {tuple(expected_shape)}; "
                         f"got {tuple(dy.shape)}")
    if dy.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}; got {dy.dtype}")
    return dy


def check_positive_size(name: str, sizes: Sequence[int], what: str) -> None:
    if any(s <= 0 for s in sizes):
        raise ValueError(f"{name}: {what} gives a non-positive output size {tuple(sizes)}")


def prod(values: Sequence[int]) -> int:
    return math.prod(values)


# ----------------------------------------------------------------------------- conv_transpose

@dataclasses.dataclass(frozen=True)
class ConvTransposeArgs:
    """Validated conv_transpose arguments.

    ``spec`` is the zero-padded core conv this op is the input-adjoint of: padding ``(lo, hi −
    c)`` in zeros mode, ``(0, −c)`` otherwise (the border ``pads`` are then folded separately),
    with ``c = stride·⌊output_padding / stride⌋``. Lowering the high side by ``c`` (a crop when
    negative; ``c > 0`` only where ``output_padding ≥ stride``, allowed when dilation > stride)
    makes that conv map ``core_shape`` back to exactly ``x``'s shape, so the family's VJP
    shapes agree; the transpose's values do not change, since only ``lo`` decides where the
    taps land.
    """

    x: jax.Array
    w: jax.Array
    b: jax.Array | None
    spec: ConvSpec
    padding_mode: str
    pads: Pads
    output_padding: tuple[int, ...]
    out_shape: tuple[int, ...]
    core_shape: tuple[int, ...]
    impl: str


def transpose_layout_text(n: int, channels_last: bool) -> str:
    k = ", ".join(f"K{i}" for i in range(n))
    return f"(*K=({k}), C_out // groups, C_in)" if channels_last else f"(C_in, C_out // groups, {k})"


def normalize_conv_transpose(x: Any, w: Any, b: Any, *, stride: Any, padding: Any,
                             output_padding: Any, dilation: Any, groups: Any, padding_mode: Any,
                             channels_last: Any, impl: Any) -> ConvTransposeArgs:
    """Validate everything ``conv_transpose`` accepts; see ``jaxcnn.conv_transpose``.

    A padding string means the padding the adjoint conv would use on the transpose's output:
    ``"SAME"`` resolves on an output of ``L·stride`` (TensorFlow's ``conv2d_transpose``), the
    others do not depend on sizes.
    """
    x = as_float_array(x, "x")
    w = as_float_array(w, "w")
    x, w, channels_last, n, impl, padding_mode, groups, stride, dilation = _common_conv_args(
        x, w, channels_last=channels_last, impl=impl, padding_mode=padding_mode, groups=groups,
        stride=stride, dilation=dilation, kernel_layout=transpose_layout_text)
    output_padding = int_tuple(output_padding, n, "output_padding", minimum=0)
    for axis, (p, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if p >= max(s, d):
            raise ValueError(f"output_padding: expected a value < max(stride, dilation) = {max(s, d)} "
                             f"on spatial axis {axis}; got {p}")

    layout = ConvSpec(stride, ((0, 0),) * n, dilation, groups, channels_last)
    in_sizes = spatial_sizes(x.shape, layout)
    k_sizes = kernel_sizes(w.shape, layout)
    channels = x.shape[layout.channel_axis()]
    in_ax, out_ax = layout.kernel_io_axes()  # conv's (O, C/g) are the transpose's (C_in, C_out/g)
    if any(k < 1 for k in k_sizes):
        raise ValueError(f"w: expected every kernel size >= 1; got kernel sizes {k_sizes}")
    if any(length < 1 for length in in_sizes):
        raise ValueError(f"x: expected every spatial size >= 1; got spatial sizes {in_sizes}")
    if w.shape[in_ax] != channels:
        raise ValueError(f"w: expected {channels} input channels (those of x) on axis {in_ax} of "
                         f"{transpose_layout_text(n, channels_last)}; got shape {tuple(w.shape)}")
    if channels % groups:
        raise ValueError(f"groups: expected a divisor of the {channels} input channels of x; got {groups}")
    out_channels = w.shape[out_ax] * groups

    pads = resolve_padding(padding, tuple(length * s for length, s in zip(in_sizes, stride)),
                           k_sizes, stride, dilation)
    if isinstance(padding, str) and padding.upper() == "SAME":
        if any(output_padding):
            raise ValueError(f"output_padding: padding='SAME' fixes the output at input × stride; "
                             f"expected 0; got {output_padding}")
        output_padding = tuple(length * s - conv_transpose_output_size(length, k, s, d, lo, hi, 0)
                               for length, k, s, d, (lo, hi)
                               in zip(in_sizes, k_sizes, stride, dilation, pads))
    out_sizes = tuple(conv_transpose_output_size(length, k, s, d, lo, hi, p)
                      for length, k, s, d, (lo, hi), p
                      in zip(in_sizes, k_sizes, stride, dilation, pads, output_padding))
    check_positive_size("padding", out_sizes,
                        f"padding {pads} with input sizes {in_sizes}, kernel sizes {k_sizes}, "
                        f"stride {stride}, dilation {dilation} and output_padding {output_padding}")
    check_padding_mode(padding_mode, pads, out_sizes)
    b = normalize_bias(b, out_channels, x.dtype)

    crop = tuple(s * (p // s) for s, p in zip(stride, output_padding))
    if padding_mode == "zeros":
        core_pads = tuple((lo, hi - c) for (lo, hi), c in zip(pads, crop))
        core_sizes = out_sizes
    else:
        core_pads = tuple((0, -c) for c in crop)
        core_sizes = tuple(m + lo + hi for m, (lo, hi) in zip(out_sizes, pads))
    spec = ConvSpec(stride, core_pads, dilation, groups, channels_last)

    def shaped(sizes: tuple[int, ...]) -> tuple[int, ...]:
        return (x.shape[0], *sizes, out_channels) if channels_last else (x.shape[0], out_channels, *sizes)

    return ConvTransposeArgs(x, w, b, spec, padding_mode, pads, output_padding,
                             shaped(out_sizes), shaped(core_sizes), impl)
