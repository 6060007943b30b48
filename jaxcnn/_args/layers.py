"""Layer arguments (``jaxcnn.nn``): sizes, rates, axes."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxcnn._shapes import is_int
from jaxcnn._args.common import layout_text

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
