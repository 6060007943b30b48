"""Augmentations: pure JAX functions of ``(key, x)``, ``x: (N, C, *S)``, that can be
jit-compiled (their size arguments are static).

The public names are re-exported by ``jaxcnn.data``.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxcnn._args import choice, int_tuple
from jaxcnn.data.dataset import is_int


def _check_batched(x: Any, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"{name}: expected (N, C, *S) with at least one spatial axis; got shape {x.shape}")
    return x


def shift(x: jax.Array, shifts: jax.Array, circular: bool) -> jax.Array:
    """``out[n, c, i] = x[n, c, i - shifts[n]]`` on every spatial axis; outside is 0 unless circular."""
    for k in range(shifts.shape[1]):
        axis, length = 2 + k, x.shape[2 + k]
        source = jnp.arange(length, dtype=jnp.int32)[None, :] - shifts[:, k:k + 1]  # (N, L)
        shape = [x.shape[0]] + [1] * (x.ndim - 1)
        shape[axis] = length
        index = source % length if circular else jnp.clip(source, 0, length - 1)
        x = jnp.take_along_axis(x, index.reshape(shape), axis=axis)
        if not circular:
            inside = ((source >= 0) & (source < length)).reshape(shape)
            x = jnp.where(inside, x, jnp.zeros((), x.dtype))
    return x


def random_shift(key: jax.Array, x: Any, max_shift: int | Sequence[int], *,
                 mode: str = "circular") -> jax.Array:
    """Shift each example by its own uniform ``s ∈ [-max_shift, max_shift]`` per spatial axis.

    ``out[n, c, i] = x[n, c, i - s_n]`` (``jnp.roll``'s sign: positive moves content to higher
    indices); ``mode="circular"`` wraps around, ``"zeros"`` fills with zeros. All channels of
    an example move together. ``x: (N, C, *S)`` → same shape and dtype. Jit with
    ``static_argnames=("max_shift", "mode")``.
    """
    x = _check_batched(x)
    max_shift = int_tuple(max_shift, x.ndim - 2, "max_shift", minimum=0)
    return _random_shift(key, x, max_shift, choice(mode, ("circular", "zeros"), "mode") == "circular")


@functools.partial(jax.jit, static_argnames=("max_shift", "circular"))
def _random_shift(key: jax.Array, x: jax.Array, max_shift: tuple[int, ...], circular: bool) -> jax.Array:
    # One compiled program, so eager calls do not compile op by op.
    keys = jax.random.split(key, len(max_shift))
    shifts = jnp.stack([jax.random.randint(k, (x.shape[0],), -m, m + 1, dtype=jnp.int32)
                        for k, m in zip(keys, max_shift)], axis=1)
    return shift(x, shifts, circular)


def random_shift_1d(key: jax.Array, x: Any, max_shift: int, *, mode: str = "circular") -> jax.Array:
    """``random_shift`` for time series ``x: (N, C, L)``; circular by default, as MNIST-1D's
    own translation augmentation."""
    if jnp.ndim(x) != 3:
        raise ValueError(f"x: expected (N, C, L), 3 dims; got shape {jnp.shape(x)}")
    return random_shift(key, x, max_shift, mode=mode)


def random_crop(key: jax.Array, x: Any, padding: int | Sequence[int]) -> jax.Array:
    """Zero-pad every spatial axis by ``padding`` on both sides, then crop back to ``S`` at a
    per-example uniform offset ``o ∈ [0, 2·padding]`` (torchvision ``RandomCrop(size,
    padding)``, fill 0). ``out[i] = padded[i + o] = x[i - (padding - o)]``: a zero-filled shift
    by ``padding - o ∈ [-padding, padding]``, so this is ``random_shift(mode="zeros")``.
    ``x: (N, C, *S)`` → same shape. Jit with ``static_argnames=("padding",)``.
    """
    return random_shift(key, x, padding, mode="zeros")


def random_flip(key: jax.Array, x: Any, axis: int = -1, *, p: float = 0.5) -> jax.Array:
    """Reverse spatial ``axis`` of each example independently with probability ``p``.

    ``x: (N, C, *S)``; ``axis`` indexes ``x`` and must be spatial (``-1``: width, the
    horizontal flip). Jit with ``static_argnames=("axis",)``.
    """
    x = _check_batched(x)
    spatial = range(2, x.ndim)
    if not is_int(axis) or (axis if axis >= 0 else axis + x.ndim) not in spatial:
        raise ValueError(f"axis: expected a spatial axis of x with shape {x.shape}, in "
                         f"[2, {x.ndim}) or [{2 - x.ndim}, 0); got {axis!r}")
    if isinstance(p, (int, float)) and not 0 <= p <= 1:
        raise ValueError(f"p: expected a probability in [0, 1]; got {p}")
    flip = jax.random.bernoulli(key, p, (x.shape[0],)).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(flip, jnp.flip(x, int(axis) % x.ndim), x)
