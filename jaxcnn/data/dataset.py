"""The ``Dataset`` container and what every loader shares: int arguments, per-channel
standardisation. (Files are written by ``jaxcnn._files.atomic_write``.)

The public names are re-exported by ``jaxcnn.data``.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping, Sequence

import numpy as np

from jaxcnn._shapes import is_int


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split: ``x_*: (N, C, *S)``, ``y_*: (N,)`` int32 in ``[0, num_classes)``.

    ``extras`` holds per-dataset side information (e.g. ``item_train`` and
    ``direction_train`` of the clips, or the ``mean``/``std`` that ``standardize`` used).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim < 3:
                raise ValueError(f"x_{split}: expected (N, C, *S), at least 3 dims; got shape {x.shape}")
            if y.shape != x.shape[:1]:
                raise ValueError(f"y_{split}: expected shape {x.shape[:1]} to match x_{split}; got {y.shape}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"x_test: expected example shape {self.x_train.shape[1:]} (as x_train); "
                             f"got {self.x_test.shape[1:]}")
        object.__setattr__(self, "extras", types.MappingProxyType(dict(self.extras)))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape, ``(C, *S)``."""
        return tuple(self.x_train.shape[1:])


def int_arg(value: Any, name: str, minimum: int, why: str = "") -> int:
    """One int ``>= minimum``; ``why`` says where the bound comes from."""
    if not is_int(value):
        raise TypeError(f"{name}: expected an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}{why}; got {value}")
    return int(value)


def standardize(dataset: Dataset, *, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> Dataset:
    """``(x - mean[c]) / std[c]`` per channel, with the train set's statistics by default.

    The test set uses the train statistics too (no peeking). The ``mean``/``std`` used are
    stored in ``extras`` as float32 arrays of shape ``(C,)``. Fashion-MNIST's are 0.2860, 0.3530.
    """
    channels = dataset.x_train.shape[1]
    axes = (0,) + tuple(range(2, dataset.x_train.ndim))
    stats = {}
    for name, given, compute in (("mean", mean, np.mean), ("std", std, np.std)):
        value = compute(dataset.x_train, axis=axes, dtype=np.float64) if given is None else given
        value = np.asarray(value, np.float32).reshape(-1)
        if value.shape != (channels,):
            raise ValueError(f"{name}: expected {channels} values (one per channel); got {value.shape[0]}")
        stats[name] = value
    if np.any(stats["std"] <= 0):
        raise ValueError(f"std: expected positive values; got {stats['std']}")
    shape = (1, channels) + (1,) * (dataset.x_train.ndim - 2)
    scale = lambda x: ((x - stats["mean"].reshape(shape)) / stats["std"].reshape(shape)).astype(np.float32)
    return dataclasses.replace(dataset, x_train=scale(dataset.x_train), x_test=scale(dataset.x_test),
                               extras={**dataset.extras, **stats})
