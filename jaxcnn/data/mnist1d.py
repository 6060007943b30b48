"""MNIST-1D (Greydanus 2020; Greydanus & Kobak, ICML 2024), from ``mnist1d``'s generator.

The public names are re-exported by ``jaxcnn.data``. Nothing here touches the network.
"""
from __future__ import annotations

import importlib.metadata
import random
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxcnn._files import PathLike, atomic_write
from jaxcnn.data.dataset import Dataset, int_arg

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
    seed = MNIST1D_SEED if seed is None else int_arg(seed, "seed", 0)
    cache = None
    arrays = None
    if cache_dir is not None:
        version = importlib.metadata.version("mnist1d")
        cache = Path(cache_dir) / f"mnist1d-{version}-seed{seed}.npz"
        arrays = _read_npz(cache, _MNIST1D_KEYS)
    if arrays is None:
        arrays = _generate_mnist1d(seed)
        if cache is not None:
            atomic_write(cache, lambda f: np.savez(f, **arrays))
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
