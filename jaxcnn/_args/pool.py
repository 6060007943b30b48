"""Pooling: window, stride, padding and ceil_mode, by PyTorch's rules."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxcnn._shapes import PoolSpec, dilated_size, pool_output_size, pool_padding, spatial_axes
from jaxcnn._args.common import as_float_array, int_tuple, layout_text

# ----------------------------------------------------------------------------- pooling

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
