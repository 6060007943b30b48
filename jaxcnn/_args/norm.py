"""``group_norm``'s arguments (``jaxcnn.norm``)."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._args.common import as_float_array
from jaxcnn._args.layers import check_groups, positive_int
from jaxcnn._args.pool import check_bool


class GroupNormArgs(NamedTuple):
    x: jax.Array
    scale: jax.Array
    bias: jax.Array
    groups: int
    eps: float
    channels_last: bool


def normalize_group_norm(x: Any, scale: Any, bias: Any, groups: Any, eps: Any,
                         channels_last: Any) -> GroupNormArgs:
    """``x: (N, C, *S)`` or ``(N, *S, C)`` (any number of spatial axes, none included, each of
    size ≥ 1), ``scale`` and ``bias`` ``(C,)`` (``None``: ones and zeros in float32 or x's wider
    dtype), ``groups`` a divisor of ``C``, ``eps > 0``."""
    x = as_float_array(x, "x")
    channels_last = check_bool(channels_last, "channels_last")
    if x.ndim < 2:
        raise ValueError(f"x: group_norm expects at least 2 dimensions (N, C, *S) or (N, *S, C); "
                         f"got shape {tuple(x.shape)}")
    channels = x.shape[-1 if channels_last else 1]
    spatial = x.shape[1:-1] if channels_last else x.shape[2:]
    if 0 in spatial or channels == 0:
        raise ValueError(f"x: group_norm expects channels and every spatial size >= 1 (the mean of "
                         f"nothing is undefined); got shape {tuple(x.shape)}")
    groups = positive_int(groups, "groups")
    check_groups(groups, channels, None)
    arrays = []
    default = np.promote_types(x.dtype, jnp.float32)
    for name, value, fill in (("scale", scale, jnp.ones), ("bias", bias, jnp.zeros)):
        value = fill(channels, default) if value is None else as_float_array(value, name)
        if value.shape != (channels,):
            raise ValueError(f"{name}: expected shape ({channels},), one per channel of x; "
                             f"got {tuple(value.shape)}")
        arrays.append(value)
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.floating)) or not eps > 0:
        raise ValueError(f"eps: expected a positive float; got {eps!r}")
    return GroupNormArgs(x, arrays[0], arrays[1], groups, float(eps), channels_last)
