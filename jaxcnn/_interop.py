r"""What ``jaxcnn.flax`` and ``jaxcnn.equinox`` share: the missing-extra error, and pooling with
``(lo, hi)`` padding pairs computed by ``jaxcnn.max_pool`` / ``jaxcnn.avg_pool``.

Flax and Equinox pool with ``lax.reduce_window`` (``init`` −∞ for the maximum, 0 for the sum)
over padding pairs that may be asymmetric or wider than half the window; jaxcnn's pooling takes
PyTorch's symmetric padding of at most half the window. ``pool_pairs`` uses jaxcnn's padding
where the pairs fit it and otherwise pads explicitly with the reduction's identity (data movement,
which JAX transposes to a slice) and pools the padded input with no padding, so the value is::

    max:  y[i] = max_k x_pad[i·s + k]                       (x_pad: −∞ outside x)
    avg:  y[i] = Σ_k x_pad[i·s + k] / c[i]                  (x_pad: 0 outside x)

with ``c[i] = Π window`` (Flax's ``count_include_pad=True``, Equinox's ``AvgPool*``) or the
number of real samples in the window, ``Π_axes (min(i·s − lo + K, L) − max(i·s − lo, 0))``
(Flax's ``count_include_pad=False``, which divides by ``reduce_window`` of ones). Where jaxcnn
cannot count that divisor itself (asymmetric pairs), the window mean is rescaled by the constant
``Π window / c[i]``.
"""
from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._shapes import spatial_axes
from jaxcnn.pool import avg_pool, max_pool

EXTRA = "pip install 'jaxcnn[interop]'"


def require(name: str, user: str) -> ModuleType:
    """``import name``, or an ImportError that says which extra brings it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"{user} needs {name}, which is not installed: {EXTRA}") from error


def check_pairs(padding: Any, n: int, name: str = "padding") -> tuple[tuple[int, int], ...]:
    """``n`` ``(lo, hi)`` pairs of ints ≥ 0."""
    try:
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        pairs = None
    if pairs is None or len(pairs) != n:
        raise ValueError(f"{name}: expected {n} (lo, hi) pairs of ints; got {padding!r}")
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"{name}: jaxcnn's pooling takes no negative padding; got {pairs}")
    return pairs


def real_counts(in_sizes: Sequence[int], window: Sequence[int], stride: Sequence[int],
                pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """``c[i]``, the number of input samples in each window of the padded input, ``(*S_out)``
    (the module docstring's product of per-axis counts)."""
    counts = np.ones((), np.int64)
    for length, k, s, (lo, hi) in zip(in_sizes, window, stride, pairs):
        start = np.arange((length + lo + hi - k) // s + 1) * s - lo
        per_axis = np.minimum(start + k, length) - np.maximum(start, 0)
        counts = np.multiply.outer(counts, np.maximum(per_axis, 0))
    return counts


def pool_pairs(kind: str, x: jax.Array, window: tuple[int, ...], stride: tuple[int, ...],
               pairs: tuple[tuple[int, int], ...], *, channels_last: bool,
               count_include_pad: bool = True) -> jax.Array:
    """``kind`` (``"max"`` or ``"avg"``) pooling of ``x`` (``(N, C, *S)`` or ``(N, *S, C)``)
    over the padding ``pairs``, the module docstring's ``y``."""
    axes = spatial_axes(len(window), channels_last)
    options = {} if kind == "max" else {"count_include_pad": count_include_pad}
    op = max_pool if kind == "max" else avg_pool
    if all(lo == hi and 2 * lo <= k for (lo, hi), k in zip(pairs, window)):
        return op(x, window, stride, tuple(lo for lo, _ in pairs), channels_last=channels_last,
                  **options)
    widths = [(0, 0)] * x.ndim
    for axis, pair in zip(axes, pairs):
        widths[axis] = pair
    in_sizes = tuple(x.shape[a] for a in axes)
    x = jnp.pad(x, widths, constant_values=-jnp.inf if kind == "max" else 0)
    y = op(x, window, stride, 0, channels_last=channels_last, **options)
    if kind == "max" or count_include_pad:
        return y
    with np.errstate(divide="ignore"):      # a window of padding only: 0 · ∞ = NaN, as 0 / 0
        rescale = math.prod(window) / real_counts(in_sizes, window, stride, pairs)
    shape = [1] * y.ndim
    for axis in axes:
        shape[axis] = y.shape[axis]
    return y * jnp.asarray(rescale.reshape(shape), y.dtype)
