"""Datasets and batching: MNIST-1D, Fashion-MNIST, moving-item clips for 3D CNNs.

Every array is channels-first, ``x: (N, C, *S)``, ``y: (N,)`` int32. Loaders return numpy
arrays on the host; ``batches`` slices them per step, and the augmentations are pure JAX
functions of ``(key, x)`` that can be jit-compiled (their size arguments are static).

This module is the public entry: MNIST-1D, batching and augmentation live here; the
``Dataset`` container and ``standardize`` in ``jaxcnn._dataset``, Fashion-MNIST (IDX files,
search, download) in ``jaxcnn._fashion``, the clips in ``jaxcnn._clips``, re-exported here.

Nothing here touches the network except ``download_fashion_mnist``.
"""
from __future__ import annotations

import functools
import importlib.metadata
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._args import _is_int, choice, int_tuple
from jaxcnn._clips import DIRECTIONS, Clips, load_fashion_clips, make_clips
from jaxcnn._dataset import Dataset, PathLike, _atomic_write, _int_arg, standardize
from jaxcnn._fashion import (DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_MD5,
                             FASHION_MNIST_URLS, download_fashion_mnist, find_fashion_mnist,
                             load_fashion_mnist, read_idx)

__all__ = [
    "Dataset", "Clips", "load_mnist1d", "read_idx", "load_fashion_mnist", "find_fashion_mnist",
    "download_fashion_mnist", "standardize", "make_clips", "load_fashion_clips",
    "epoch_permutation", "batches", "random_shift", "random_shift_1d", "random_crop",
    "random_flip", "FASHION_MNIST_CLASSES", "DIRECTIONS",
]


# ----------------------------------------------------------------------------- MNIST-1D

MNIST1D_SEED = 42  # mnist1d's get_dataset_args() default: the published MNIST-1D
_MNIST1D_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_mnist1d(seed: int | None = None, cache_dir: PathLike | None = None) -> Dataset:
    """MNIST-1D (Greydanus 2020; Greydanus & Kobak, ICML 2024), from ``mnist1d``'s generator.

    Default arguments of ``mnist1d.data.get_dataset_args``: 5000 examples, 80/20 split.
    ``mnist1d.get_dataset`` may download a pickle; this calls ``make_dataset`` instead, so it
    never touches the network, and it restores the global numpy/``random`` state that the
    generator reseeds.

    Args:
      seed: generator seed; ``None`` is mnist1d's default 42, the published dataset.
      cache_dir: optional directory for an ``.npz`` cache (written atomically).

    Returns:
      ``x_train: (4000, 1, 40)``, ``x_test: (1000, 1, 40)`` float32 (standardised by the
      generator to mean 0, std 1 over the whole set); ``y_*`` int32 in ``[0, 10)``.
    """
    seed = MNIST1D_SEED if seed is None else _int_arg(seed, "seed", 0)
    cache = None
    arrays = None
    if cache_dir is not None:
        version = importlib.metadata.version("mnist1d")
        cache = Path(cache_dir) / f"mnist1d-{version}-seed{seed}.npz"
        arrays = _read_npz(cache, _MNIST1D_KEYS)
    if arrays is None:
        arrays = _generate_mnist1d(seed)
        if cache is not None:
            _atomic_write(cache, lambda f: np.savez(f, **arrays))
    return Dataset(**arrays, num_classes=10, name="mnist1d")


def _generate_mnist1d(seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset  # lazy: pulls in scipy, matplotlib

    args = get_dataset_args()
    args.seed = seed
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {"x_train": raw["x"][:, None, :].astype(np.float32), "y_train": raw["y"].astype(np.int32),
            "x_test": raw["x_test"][:, None, :].astype(np.float32), "y_test": raw["y_test"].astype(np.int32)}


def _read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` (with a warning if the cache exists but is unreadable)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as stored:
            return {key: stored[key] for key in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"{path}: unreadable cache ({err}); regenerating it", stacklevel=3)
        return None


# ----------------------------------------------------------------------------- batching

def _as_key(key_or_seed: Any) -> jax.Array:
    if _is_int(key_or_seed):
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
    epoch = _int_arg(epoch, "epoch", 0)
    n = _int_arg(n, "n", 0)
    return np.asarray(jax.random.permutation(jax.random.fold_in(_as_key(key_or_seed), epoch), n))


def batches(key_or_seed: int | jax.Array, x: Any, y: Any, batch_size: int, *, epoch: int = 0,
            shuffle: bool = True, drop_last: bool = True) -> Iterator[tuple[Any, Any]]:
    """One epoch of ``(x[idx], y[idx])`` minibatches, ``x: (N, ...)``, ``y: (N, ...)``.

    With ``shuffle``, ``idx`` runs through ``epoch_permutation(key_or_seed, epoch, N)``; else
    in order. ``drop_last`` drops the final short batch, so every batch has ``batch_size``
    rows (one jit compilation). Arguments are checked here, before the first batch.
    """
    n = getattr(x, "shape", (None,))[0] if getattr(x, "ndim", 0) else None
    if n is None or getattr(y, "ndim", 0) == 0 or y.shape[0] != n:
        shapes = [getattr(a, "shape", type(a).__name__) for a in (x, y)]
        raise ValueError(f"x, y: expected arrays with the same leading size N; got shapes "
                         f"{shapes[0]} and {shapes[1]}")
    batch_size = _int_arg(batch_size, "batch_size", 1)
    if drop_last and batch_size > n:
        raise ValueError(f"batch_size: expected at most N = {n} with drop_last=True (else no "
                         f"batch at all); got {batch_size}")
    order = epoch_permutation(key_or_seed, epoch, n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return ((x[idx], y[idx]) for idx in (order[i:i + batch_size] for i in range(0, stop, batch_size)))


# ----------------------------------------------------------------------------- augmentation

def _check_batched(x: Any, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"{name}: expected (N, C, *S) with at least one spatial axis; got shape {x.shape}")
    return x


def _shift(x: jax.Array, shifts: jax.Array, circular: bool) -> jax.Array:
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
    return _shift(x, shifts, circular)


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
    if not _is_int(axis) or (axis if axis >= 0 else axis + x.ndim) not in spatial:
        raise ValueError(f"axis: expected a spatial axis of x with shape {x.shape}, in "
                         f"[2, {x.ndim}) or [{2 - x.ndim}, 0); got {axis!r}")
    if isinstance(p, (int, float)) and not 0 <= p <= 1:
        raise ValueError(f"p: expected a probability in [0, 1]; got {p}")
    flip = jax.random.bernoulli(key, p, (x.shape[0],)).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(flip, jnp.flip(x, int(axis) % x.ndim), x)
