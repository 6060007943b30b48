"""Argument normalisation and validation: every bad-input message of jaxcnn lives here.

Each public op calls one ``normalize_*`` function at its front door. It turns user arguments
(ints or tuples, padding strings, case-insensitive modes) into a frozen, hashable spec in
canonical form, and raises ``ValueError``/``TypeError`` naming the argument, what was expected
and what came, before tracing reaches XLA.

The shape arithmetic (``conv_output_size``, ``resolve_padding``, ...) lives in
``jaxcnn._shapes``, shape-only and tested without arrays.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._compat import is_lax_precision

from jaxcnn._shapes import (PADDING_STRINGS, Pads, conv_transpose_output_size, dilated_size,
                            is_int, kernel_sizes, output_sizes, pool_output_size,
                            pool_padding, resolve_padding, spatial_axes, spatial_sizes)

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
IMPLS = ("lax", "manual")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A convolution's static configuration, canonical and hashable.

    ``padding`` holds explicit ``(lo, hi)`` zero padding per spatial axis. Internally (in the
    VJPs) entries may be negative, which crops; users can never ask for that.
    """

    stride: tuple[int, ...]
    padding: Pads
    dilation: tuple[int, ...]
    groups: int
    channels_last: bool
    precision: Any = None
    preferred_element_type: Any = None

    @property
    def n(self) -> int:
        return len(self.stride)

    def spatial_axes(self) -> tuple[int, ...]:
        """Positions of the spatial axes in x / y: ``(N, C, *S)`` or ``(N, *S, C)``."""
        return spatial_axes(self.n, self.channels_last)

    def channel_axis(self) -> int:
        return self.n + 1 if self.channels_last else 1

    def kernel_spatial_axes(self) -> tuple[int, ...]:
        """Positions of the kernel axes in w: ``(O, I, *K)`` or ``(*K, I, O)``."""
        return tuple(range(self.n)) if self.channels_last else tuple(range(2, 2 + self.n))

    def kernel_io_axes(self) -> tuple[int, int]:
        """Positions of (out-channel, in-channel) in w."""
        return (self.n + 1, self.n) if self.channels_last else (0, 1)

    def dimension_numbers(self) -> jax.lax.ConvDimensionNumbers:
        """``lax`` dimension numbers for this layout, for any number of spatial axes."""
        spatial = self.spatial_axes()
        lhs = (0, self.channel_axis()) + spatial
        o_ax, i_ax = self.kernel_io_axes()
        rhs = (o_ax, i_ax) + self.kernel_spatial_axes()
        return jax.lax.ConvDimensionNumbers(lhs, rhs, lhs)

    def replace(self, **changes: Any) -> "ConvSpec":
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- small checks

def int_tuple(value: Any, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints, each ``>= minimum``, as a tuple of ``n`` ints."""
    if is_int(value):
        values = (int(value),) * n
    elif isinstance(value, Sequence) and not isinstance(value, str) and all(is_int(v) for v in value):
        values = tuple(int(v) for v in value)
        if len(values) != n:
            raise ValueError(f"{name}: expected an int or {n} ints (one per spatial axis); "
                             f"got {len(values)} values {value!r}")
    else:
        raise TypeError(f"{name}: expected an int or a tuple of {n} ints; got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{name}: expected every value >= {minimum}; got {value!r}")
    return values


def as_float_array(value: Any, name: str) -> jax.Array:
    """``value`` as a JAX array of a floating dtype, else ``TypeError`` naming ``name``."""
    if value is None:
        raise TypeError(f"{name}: expected a floating-point array; got None")
    if isinstance(value, jax.ShapeDtypeStruct):  # shape-only stand-in (the *_grad functions)
        array = value
    else:
        try:
            array = jnp.asarray(value) if not isinstance(value, jax.Array) else value
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: expected a floating-point array; got {type(value).__name__}") from err
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point dtype (float16, bfloat16, float32, "
                        f"float64); got {array.dtype}")
    return array


def choice(value: Any, options: Sequence[str], name: str, *, lower: bool = True) -> str:
    """A case-insensitive choice among ``options``."""
    if not isinstance(value, str) or (value.lower() if lower else value) not in options:
        raise ValueError(f"{name}: expected one of {tuple(options)}; got {value!r}")
    return value.lower() if lower else value


def check_rank(array: jax.Array, ndim: int, name: str, layout: str) -> None:
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {layout}; got shape {tuple(array.shape)}")


def _hashable_precision(precision: Any) -> Any:
    if isinstance(precision, list):
        precision = tuple(precision)
    try:
        hash(precision)
    except TypeError as err:
        raise TypeError(f"precision: expected None, a jax.lax.Precision, a string or a pair of "
                        f"them; got {precision!r}") from err
    if not is_lax_precision(precision):  # refused here, not at the lowering in lax's words
        raise ValueError(f"precision: expected None, a jax.lax.Precision, one of its names "
                         f"('highest', ...) or a pair of them; got {precision!r}")
    return precision


def _element_type(preferred_element_type: Any) -> Any:
    if preferred_element_type is None:
        return None
    try:
        dtype = jnp.dtype(preferred_element_type)
    except TypeError as err:
        raise TypeError(f"preferred_element_type: expected None or a floating dtype; "
                        f"got {preferred_element_type!r}") from err
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"preferred_element_type: expected a floating dtype; got {dtype}")
    return dtype


def layout_text(n: int, channels_last: bool, kernel: bool = False) -> str:
    spatial = ", ".join(f"S{i}" for i in range(n)) if not kernel else ", ".join(f"K{i}" for i in range(n))
    if kernel:
        return f"(*K=({spatial}), C_in // groups, C_out)" if channels_last else f"(C_out, C_in // groups, {spatial})"
    return f"(N, {spatial}, C)" if channels_last else f"(N, C, {spatial})"


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
                    channels_last, _hashable_precision(precision), _element_type(preferred_element_type))
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


# ----------------------------------------------------------------------------- pooling

@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """A pooling's static configuration, canonical and hashable.

    ``padding`` holds ``(lo, hi)`` per spatial axis: the user's symmetric padding, ``hi``
    grown by ceil_mode's overhang so that every window fits the padded input. ``in_sizes``
    are the input's spatial sizes (the VJPs rebuild the input shape from them).
    """

    window: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Pads
    in_sizes: tuple[int, ...]
    channels_last: bool

    @property
    def n(self) -> int:
        return len(self.window)

    def spatial_axes(self) -> tuple[int, ...]:
        return spatial_axes(self.n, self.channels_last)

    def out_sizes(self) -> tuple[int, ...]:
        """``floor((L + lo + hi − dilation·(K − 1) − 1) / stride) + 1`` per axis."""
        return output_sizes(self.in_sizes, self.window, self.stride, self.dilation, self.padding)


def check_window_holds_input(length: int, window: int, stride: int, dilation: int, pad: int,
                             out: int, axis: int) -> None:
    """Every max-pooling window must read at least one input sample: output ``i`` reads
    ``i·s − p + j·d`` for ``j < K``. With dilation, taps can step over a short input and land
    in the padding on both sides; such a window's maximum is −∞ and its gradient has nowhere
    to go (PyTorch returns −∞ there and its backward writes outside the input's memory)."""
    if dilation == 1:
        return      # p ≤ half the window and ceil_mode's rule keep a sample in every window
    for i in range(out):
        taps = [i * stride - pad + j * dilation for j in range(window)]
        if not any(0 <= t < length for t in taps):
            raise ValueError(
                f"dilation: the window of output {i} on spatial axis {axis} reads positions {taps}, "
                f"all in the padding of an input of size {length} (window {window}, dilation "
                f"{dilation}, padding {pad}); expected every window to hold an input sample")


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool; got {value!r}")
    return bool(value)


def check_pool_input(x: Any, channels_last: Any, op: str) -> tuple[jax.Array, bool]:
    """``x`` a float array ``(N, C, *S)`` / ``(N, *S, C)`` with at least one spatial axis."""
    x = as_float_array(x, "x")
    channels_last = check_bool(channels_last, "channels_last")
    if x.ndim < 3:
        raise ValueError(f"x: {op} expects at least 3 dimensions {layout_text(1, channels_last)} "
                         f"(a batch axis, a channel axis, one or more spatial axes); "
                         f"got shape {tuple(x.shape)}")
    return x, channels_last


def normalize_global_pool(x: Any, channels_last: Any) -> tuple[jax.Array, bool]:
    """``global_avg_pool``'s arguments: a float ``x`` with every spatial size ≥ 1."""
    x, channels_last = check_pool_input(x, channels_last, "global_avg_pool")
    spatial = x.shape[1:-1] if channels_last else x.shape[2:]
    if 0 in spatial:
        raise ValueError(f"x: global_avg_pool expects every spatial size >= 1 (the mean of "
                         f"nothing is undefined); got shape {tuple(x.shape)}")
    return x, channels_last


def normalize_pool(x: Any, window: Any, stride: Any, padding: Any, *, dilation: Any = 1,
                   ceil_mode: Any = False, channels_last: Any = False,
                   op: str = "max_pool") -> tuple[jax.Array, PoolSpec]:
    """Validate ``max_pool`` / ``avg_pool`` arguments (PyTorch's rules); see ``jaxcnn.pool``."""
    x, channels_last = check_pool_input(x, channels_last, op)
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    n = x.ndim - 2
    window = int_tuple(window, n, "window")
    stride = window if stride is None else int_tuple(stride, n, "stride")
    dilation = int_tuple(dilation, n, "dilation")
    if isinstance(padding, str):
        raise TypeError(f"padding: {op} takes integer padding only (an int or {n} ints); "
                        f"got {padding!r}")
    pads = int_tuple(padding, n, "padding", minimum=0)
    in_sizes = tuple(int(x.shape[a]) for a in spatial_axes(n, channels_last))
    pairs = []
    for axis, (length, k, s, d, p) in enumerate(zip(in_sizes, window, stride, dilation, pads)):
        extent = dilated_size(k, d)
        if p > extent // 2:
            raise ValueError(f"padding: expected at most half the dilated window ({extent} // 2 = "
                             f"{extent // 2}: window {k}, dilation {d}) on spatial axis {axis}; "
                             f"got {p}")
        out = pool_output_size(length, k, s, d, p, ceil_mode)
        if out < 1:
            raise ValueError(f"window: output size {out} on spatial axis {axis} is too small: window "
                             f"extent {extent} (size {k}, dilation {d}) does not fit the input size "
                             f"{length} + padding {p} + {p}; expected an output size >= 1")
        if op == "max_pool":
            check_window_holds_input(length, k, s, d, p, out, axis)
        pairs.append(pool_padding(length, k, s, d, p, out))
    return x, PoolSpec(window, stride, dilation, tuple(pairs), in_sizes, channels_last)


# ----------------------------------------------------------------------------- layers (jaxcnn.nn)

def positive_int(value: Any, name: str) -> int:
    """One int ``>= 1`` (bools refused)."""
    if not is_int(value):
        raise TypeError(f"{name}: expected a positive int; got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name}: expected a positive int; got {value!r}")
    return int(value)


def kernel_tuple(value: Any, name: str = "kernel") -> tuple[int, ...]:
    """A kernel size as a tuple of positive ints; its length is the number of spatial axes."""
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0
            or not all(is_int(v) for v in value)):
        raise TypeError(f"{name}: expected a non-empty tuple of ints, one per spatial axis (use "
                        f"Conv1d/Conv2d/Conv3d to pass an int); got {value!r}")
    if any(int(v) < 1 for v in value):
        raise ValueError(f"{name}: expected every kernel size >= 1; got {value!r}")
    return tuple(int(v) for v in value)


def layer_input_shape(shape: Any, n: int | None, layer: str, channels_last: bool) -> tuple[int, ...]:
    """A layer's ``input_shape``: ints, with ``n`` spatial axes (``None``: any number)."""
    if (not isinstance(shape, Sequence) or isinstance(shape, str)
            or not all(is_int(v) and int(v) >= 0 for v in shape)):
        raise TypeError(f"input_shape: {layer} expects a tuple of non-negative ints; got {shape!r}")
    shape = tuple(int(v) for v in shape)
    if (n is None and len(shape) < 2) or (n is not None and len(shape) != n + 2):
        rank = "at least 2" if n is None else str(n + 2)
        layout = "(N, F)" if n == 0 else layout_text(n or 1, channels_last)
        raise ValueError(f"input_shape: {layer} expects {rank} dimensions {layout}; got {shape}")
    return shape


def check_groups(groups: int, channels: int, out_channels: int | None) -> None:
    """``groups`` must divide the input channels (and the output channels, if any)."""
    if channels % groups:
        raise ValueError(f"groups: expected a divisor of the {channels} input channels; got {groups}")
    if out_channels is not None and out_channels % groups:
        raise ValueError(f"groups: expected a divisor of out_channels={out_channels}; got {groups}")


def drop_rate(value: Any, name: str = "rate") -> float:
    """A drop probability in ``[0, 1)``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name}: expected a float drop probability in [0, 1); got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}: expected a drop probability in [0, 1); got {value!r}")
    return float(value)


def axis_index(axis: Any, ndim: int, name: str = "axis") -> int:
    """``axis`` of an ``ndim``-d shape, negatives counted from the end, not the batch axis 0."""
    if not is_int(axis) or not (-ndim <= int(axis) < ndim) or int(axis) % ndim == 0:
        raise ValueError(f"{name}: expected a non-batch axis in [1, {ndim}) or [{-ndim + 1}, 0) "
                         f"of a {ndim}-d shape; got {axis!r}")
    return int(axis) % ndim
