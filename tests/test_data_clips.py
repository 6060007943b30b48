"""Tests for jaxcnn.data.clips: moving Fashion-MNIST items on a periodic canvas, checked with
np.roll references and marker images whose one bright pixel is tracked frame by frame."""
from __future__ import annotations

import numpy as np
import pytest

from jaxcnn import data
from test_data_fashion import write_fashion

VELOCITY = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}  # (dy, dx)


# ----------------------------------------------------------------------------- clips

def marker_images(n: int, side: int = 4) -> np.ndarray:
    images = np.zeros((n, side, side), np.uint8)
    images[:, 0, 0] = 255
    return images


def marker_positions(clips: data.Clips) -> np.ndarray:
    """(N, T, 2) row/col of the single bright pixel in each frame."""
    frames = clips.x[:, 0]
    flat = frames.reshape(*frames.shape[:2], -1).argmax(-1)
    return np.stack(np.unravel_index(flat, frames.shape[2:]), axis=-1)


def test_clips_shapes_and_labels():
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(40) % 10
    clips = data.make_clips(images, labels, frames=8, size=32, seed=3)
    assert clips.x.shape == (40, 1, 8, 32, 32) and clips.x.dtype == np.uint8
    np.testing.assert_array_equal(clips.item, labels)
    np.testing.assert_array_equal(clips.y, labels * 4 + clips.direction)
    np.testing.assert_array_equal(np.bincount(clips.direction), [10] * 4)
    # Every frame shows the whole item: nothing leaves the periodic canvas.
    np.testing.assert_array_equal(clips.x.sum((2, 3, 4), dtype=np.int64)[:, 0],
                                  8 * images.sum((1, 2, 3), dtype=np.int64))
    again = data.make_clips(images, labels, frames=8, size=32, seed=3)
    np.testing.assert_array_equal(again.x, clips.x)
    assert not np.array_equal(data.make_clips(images, labels, seed=4).direction, clips.direction)


def test_clips_move_by_step_per_frame():
    step, size, frames = 3, 16, 6
    clips = data.make_clips(marker_images(64), np.zeros(64, int), frames=frames, size=size, step=step)
    positions = marker_positions(clips)
    velocity = np.array([VELOCITY[data.DIRECTIONS[d]] for d in clips.direction])
    expected = (positions[:, :1] + np.arange(frames)[None, :, None] * step * velocity[:, None]) % size
    np.testing.assert_array_equal(positions, expected)
    for n in range(4):  # each frame is frame 0 rolled on the torus
        for t in range(frames):
            rolled = np.roll(clips.x[n, 0, 0], tuple(t * step * velocity[n]), axis=(0, 1))
            np.testing.assert_array_equal(clips.x[n, 0, t], rolled)


def test_clips_direction_is_recoverable_from_two_frames():
    images = np.random.default_rng(1).integers(0, 256, (48, 28, 28), dtype=np.uint8)
    clips = data.make_clips(images, np.zeros(48, int), size=32, step=2)
    for n in range(48):
        first, second = clips.x[n, 0, 0], clips.x[n, 0, 1]
        moved = [np.roll(first, tuple(2 * np.array(VELOCITY[name])), axis=(0, 1)) for name in data.DIRECTIONS]
        matches = [d for d, candidate in enumerate(moved) if np.array_equal(candidate, second)]
        assert matches == [clips.direction[n]]


def test_clips_single_frames_do_not_reveal_direction():
    """For every direction and every t, the item's row and column are uniform over the frame:
    a per-frame model (even one told t) sees the same distribution for all four directions."""
    size, count = 16, 4000
    clips = data.make_clips(marker_images(count), np.zeros(count, int), frames=6, size=size, step=3, seed=0)
    positions = marker_positions(clips)
    for d in range(4):
        for t in range(6):
            for axis in range(2):
                histogram = np.bincount(positions[clips.direction == d, t, axis], minlength=size)
                expected = count / 4 / size
                chi2 = ((histogram - expected) ** 2 / expected).sum()
                assert histogram.min() > 0 and chi2 < 45, (d, t, axis, histogram)  # df 15: p ~ 1e-4


@pytest.mark.parametrize("kwargs, error, message", [
    ({"step": 16}, ValueError, "step: expected 1 <= step < size / 2"),
    ({"size": 20}, ValueError, "size: expected an int >= 28"),
    ({"frames": 1}, ValueError, "frames"),
    ({"frames": 2.0}, TypeError, "frames"),
    ({"labels": np.zeros(3, int)}, ValueError, "labels"),
    ({"images": np.zeros((4, 2, 28, 28))}, ValueError, "images"),
])
def test_clips_bad_arguments(kwargs, error, message):
    arguments = {"images": np.zeros((4, 28, 28), np.uint8), "labels": np.zeros(4, int), **kwargs}
    with pytest.raises(error, match=message):
        data.make_clips(arguments.pop("images"), arguments.pop("labels"), **arguments)


def test_load_fashion_clips(tmp_path):
    train_images = write_fashion(tmp_path, n_train=12, n_test=5)
    dataset = data.load_fashion_clips(tmp_path, n_train=8, n_test=4, frames=4, size=30, check_md5=False)
    assert dataset.x_train.shape == (8, 1, 4, 30, 30) and dataset.x_test.shape == (4, 1, 4, 30, 30)
    assert dataset.num_classes == 40 and dataset.x_train.dtype == np.float32
    np.testing.assert_array_equal(dataset.extras["item_train"], np.arange(8) % 10)
    extras = dataset.extras
    np.testing.assert_array_equal(dataset.y_train, extras["item_train"] * 4 + extras["direction_train"])
    expected_mass = 4 * train_images[:8].sum((1, 2)) / 255  # 4 frames, each the whole item
    np.testing.assert_allclose(dataset.x_train.sum((1, 2, 3, 4)), expected_mass, rtol=1e-5)
    with pytest.raises(ValueError, match="n_train: expected at most 12; got 13"):
        data.load_fashion_clips(tmp_path, n_train=13, check_md5=False)

