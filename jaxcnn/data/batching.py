"""Minibatches of one epoch, in an order that is a pure function of ``(key, epoch)``.

The public names are re-exported by ``jaxcnn.data``.
"""
from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.dataset import int_arg, is_int


def _as_key(key_or_seed: Any) -> jax.Array:
    if is_int(key_or_seed):
        return jax.random.key(int(key_or_seed))
    if isinstance(key_or_seed, (jax.Array, np.ndarray)):
        if jax.dtypes.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key) and key_or_seed.shape == ():
            return key_or_seed
        if key_or_seed.dtype == np.uint32 and key_or_seed.shape == (2,):
            return jax.random.wrap_key_data(jnp.asarray(key_or_seed))
    raise TypeError(f"key_or_seed: expected an int seed or a single JAX PRNG key; got "
                    f"{type(key_or_seed).__name__} {getattr(key_or_seed, 'shape', '')}")


def epoch_permutation(key_or_seed: int | jax.Array, epoch: int, n: int) -> np.ndarray:
    """The example order of ``epoch``: ``permutation(fold_in(key, epoch), n)``, ``(n,)`` int.

    A pure function of ``(key_or_seed, epoch, n)``, so a resumed run replays the same order.
    An int seed means ``jax.random.key(seed)``.
    """
    epoch = int_arg(epoch, "epoch", 0)
    n = int_arg(n, "n", 0)
    return np.asarray(jax.random.permutation(jax.random.fold_in(_as_key(key_or_seed), epoch), n))


def batches(key_or_seed: int | jax.Array, x: Any, y: Any, batch_size: int, *, epoch: int = 0,
            shuffle: bool = True, drop_last: bool = True,
            rows: slice | None = None) -> Iterator[tuple[Any, Any]]:
    """One epoch of ``(x[idx], y[idx])`` minibatches, ``x: (N, ...)``, ``y: (N, ...)``.

    With ``shuffle``, ``idx`` runs through ``epoch_permutation(key_or_seed, epoch, N)``; else
    in order. ``drop_last`` drops the final short batch, so every batch has ``batch_size``
    rows (one jit compilation). ``rows`` keeps only those rows of every batch (``idx[rows]``):
    one process's part of a global batch in a multi-process run, which reads only its rows.
    Arguments are checked here, before the first batch.
    """
    n = getattr(x, "shape", (None,))[0] if getattr(x, "ndim", 0) else None
    if n is None or getattr(y, "ndim", 0) == 0 or y.shape[0] != n:
        shapes = [getattr(a, "shape", type(a).__name__) for a in (x, y)]
        raise ValueError(f"x, y: expected arrays with the same leading size N; got shapes "
                         f"{shapes[0]} and {shapes[1]}")
    batch_size = int_arg(batch_size, "batch_size", 1)
    if drop_last and batch_size > n:
        raise ValueError(f"batch_size: expected at most N = {n} with drop_last=True (else no "
                         f"batch at all); got {batch_size}")
    order = epoch_permutation(key_or_seed, epoch, n) if shuffle else np.arange(n)
    if rows is not None and not isinstance(rows, slice):
        raise TypeError(f"rows: expected a slice of each batch's rows or None; got {rows!r}")
    stop = n - n % batch_size if drop_last else n
    rows = slice(None) if rows is None else rows
    return ((x[idx], y[idx]) for idx in (order[i:i + batch_size][rows] for i in range(0, stop, batch_size)))
