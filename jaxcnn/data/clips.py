"""Moving-item clips for 3D CNNs: ``make_clips`` and Fashion-MNIST clips.

The public names are re-exported by ``jaxcnn.data``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxcnn._files import PathLike
from jaxcnn.data.dataset import Dataset, int_arg
from jaxcnn.data.fashion import FASHION_MNIST_CLASSES, find_fashion_mnist, read_fashion_split, to_unit

DIRECTIONS = ("right", "left", "down", "up")
_VELOCITY = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]])  # (dy, dx) per frame, in steps


class Clips(NamedTuple):
    """Moving-item clips: ``x: (N, 1, T, size, size)``; ``y = item * 4 + direction``."""

    x: np.ndarray
    y: np.ndarray
    item: np.ndarray
    direction: np.ndarray


def make_clips(images: np.ndarray, labels: np.ndarray, *, frames: int = 8, size: int = 32,
               step: int = 2, seed: int | np.random.SeedSequence = 0) -> Clips:
    """Each image moves across a ``size x size`` frame in one of ``DIRECTIONS``.

    Frame ``t`` of clip ``n`` is the image pasted at ``(y0, x0) + t * step * v`` on a periodic
    (torus) canvas, with ``v`` the direction's ``(dy, dx)`` unit vector:
    ``x[n, 0, t, i, j] = canvas_n[(i - y0 - t·step·dy) mod size, (j - x0 - t·step·dx) mod size]``.
    The start ``(y0, x0)`` is uniform over all ``size²`` positions, and a translation of the
    torus keeps that distribution uniform, so every single frame, at every ``t``, has the same
    distribution for all four directions: only the motion between frames tells the direction.
    (A frame with edges would leak it: late frames of right-moving items sit further right.)
    Directions are balanced: ``arange(N) % 4``, permuted.

    Args:
      images: ``(N, H, W)`` or ``(N, 1, H, W)``, any dtype (kept, so uint8 input keeps the
        clips 4x smaller than float32), with ``H, W <= size``.
      labels: ``(N,)`` item classes, non-negative ints.
      frames: ``T >= 2``. size: canvas side. step: pixels per frame, ``1 <= step < size / 2``
        (so right and left, up and down, differ).
      seed: int or ``np.random.SeedSequence`` for directions and start positions.

    Returns:
      ``Clips(x: (N, 1, T, size, size), y, item, direction)``; ``y, item, direction`` (N,) int32.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"images: expected (N, H, W) or (N, 1, H, W); got shape {images.shape}")
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer) or np.any(labels < 0):
        raise ValueError(f"labels: expected shape {images.shape[:1]} of non-negative ints; "
                         f"got {labels.dtype} of shape {labels.shape}")
    frames = int_arg(frames, "frames", 2)
    size = int_arg(size, "size", max(images.shape[1:]), f" (the image side, images are {images.shape[1:]})")
    step = int_arg(step, "step", 1)
    if 2 * step >= size:
        raise ValueError(f"step: expected 1 <= step < size / 2 = {size / 2}; got {step}")
    count = images.shape[0]
    rng = np.random.default_rng(seed)
    direction = rng.permutation(np.arange(count) % len(DIRECTIONS)).astype(np.int32)
    start = rng.integers(0, size, size=(count, 2))
    canvas = np.zeros((count, size, size), images.dtype)
    canvas[:, :images.shape[1], :images.shape[2]] = images
    # Source row/col of each output pixel: (N, T, size), from the formula above.
    times = np.arange(frames)[None, :, None] * step
    pixels = np.arange(size)[None, None, :]
    rows = (pixels - start[:, 0, None, None] - times * _VELOCITY[direction, 0, None, None]) % size
    cols = (pixels - start[:, 1, None, None] - times * _VELOCITY[direction, 1, None, None]) % size
    x = canvas[np.arange(count)[:, None, None, None], rows[..., :, None], cols[..., None, :]]
    item = labels.astype(np.int32)
    return Clips(x[:, None], item * len(DIRECTIONS) + direction, item, direction)


def load_fashion_clips(data_dir: PathLike | None = None, *, n_train: int | None = 10_000,
                       n_test: int | None = 2_000, frames: int = 8, size: int = 32, step: int = 2,
                       seed: int = 0, dtype: Any = np.float32, check_md5: bool = True) -> Dataset:
    """Moving Fashion-MNIST clips (``make_clips``) from the first ``n_train``/``n_test`` items.

    40 classes, ``y = item * 4 + direction``; ``extras`` holds ``item_train``,
    ``direction_train``, ``item_test``, ``direction_test``. Memory: one 8x32x32 clip is 8 KiB in
    uint8 and 32 KiB in float32, so all 60000 train clips take 0.5 GB as uint8 and 2 GB as
    float32; pass ``dtype=np.uint8`` and scale per batch to keep more.

    Returns:
      ``x_*: (n, 1, frames, size, size)`` in [0, 1] (float ``dtype``) or raw uint8.
    """
    directory = find_fashion_mnist(data_dir)
    train_seed, test_seed = np.random.SeedSequence(int_arg(seed, "seed", 0)).spawn(2)
    arrays, extras = {}, {}
    for split, limit, split_seed in (("train", n_train, train_seed), ("test", n_test, test_seed)):
        images, labels = read_fashion_split(directory, split, check_md5)
        if limit is not None:
            limit = int_arg(limit, f"n_{split}", 1)
            if limit > images.shape[0]:
                raise ValueError(f"n_{split}: expected at most {images.shape[0]}; got {limit}")
            images, labels = images[:limit], labels[:limit]
        clips = make_clips(images, labels, frames=frames, size=size, step=step, seed=split_seed)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = to_unit(clips.x, dtype), clips.y
        extras[f"item_{split}"], extras[f"direction_{split}"] = clips.item, clips.direction
    return Dataset(**arrays, num_classes=len(FASHION_MNIST_CLASSES) * len(DIRECTIONS),
                   name="fashion_clips", extras=extras)
