"""Shared pieces: the small checks every front door uses (the specs are ``jaxcnn._shapes``')."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxcnn._compat import is_lax_precision
from jaxcnn._shapes import is_int


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
IMPLS = ("lax", "manual")


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


def hashable_precision(precision: Any) -> Any:
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


def parse_element_type(preferred_element_type: Any, expected: str) -> Any:
    """``preferred_element_type`` (not None) as a dtype, or TypeError naming it."""
    try:
        return jnp.dtype(preferred_element_type)
    except TypeError as err:
        raise TypeError(f"preferred_element_type: expected None or {expected}; "
                        f"got {preferred_element_type!r}") from err


def element_type(preferred_element_type: Any) -> Any:
    if preferred_element_type is None:
        return None
    dtype = parse_element_type(preferred_element_type, "a floating dtype")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"preferred_element_type: expected a floating dtype; got {dtype}")
    return dtype


def layout_text(n: int, channels_last: bool, kernel: bool = False) -> str:
    spatial = ", ".join(f"S{i}" for i in range(n)) if not kernel else ", ".join(f"K{i}" for i in range(n))
    if kernel:
        return f"(*K=({spatial}), C_in // groups, C_out)" if channels_last else f"(C_out, C_in // groups, {spatial})"
    return f"(N, {spatial}, C)" if channels_last else f"(N, C, {spatial})"
