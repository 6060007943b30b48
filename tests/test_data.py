"""Tests for jaxcnn.data: MNIST-1D, the Dataset and its standardisation, batching and
augmentation. Every check compares with a value built independently in the test (np.roll / np.pad
references, published dataset statistics). Fashion-MNIST's files: test_data_fashion.py; the
moving clips: test_data_clips.py."""
from __future__ import annotations

import itertools
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import data
from jaxcnn.data import augmentation
from jaxcnn.data import mnist1d as mnist1d_module


# ----------------------------------------------------------------------------- MNIST-1D

@pytest.fixture(scope="session")
def mnist1d():
    """One generation (about 2 s), with the network cut off; returns the dataset and whether
    the global numpy RNG state survived."""
    def no_network(*args, **kwargs):
        raise AssertionError("load_mnist1d tried to open a network connection")

    np.random.seed(1234)
    before = np.random.get_state()[1].copy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", no_network)
        dataset = data.load_mnist1d()
    return dataset, np.array_equal(before, np.random.get_state()[1])


def test_mnist1d_shapes_split_and_statistics(mnist1d):
    dataset, _ = mnist1d
    assert (dataset.name, dataset.num_classes, dataset.input_shape) == ("mnist1d", 10, (1, 40))
    assert dataset.x_train.shape == (4000, 1, 40) and dataset.x_test.shape == (1000, 1, 40)
    assert dataset.x_train.dtype == dataset.x_test.dtype == np.float32
    assert dataset.y_train.dtype == dataset.y_test.dtype == np.int32
    assert set(np.unique(dataset.y_train)) == set(range(10)) == set(np.unique(dataset.y_test))
    # mnist1d standardises the 5000 examples as a whole: mean 0, std 1.
    both = np.concatenate([dataset.x_train, dataset.x_test])
    np.testing.assert_allclose([both.mean(), both.std()], [0, 1], atol=1e-4)
    # Every class has 500 examples overall (num_samples // 10).
    assert np.all(np.bincount(np.concatenate([dataset.y_train, dataset.y_test])) == 500)


def test_mnist1d_leaves_global_rng_alone(mnist1d):
    assert mnist1d[1], "load_mnist1d changed the global numpy RNG state"


def test_mnist1d_is_deterministic_and_cached(mnist1d, tmp_path, monkeypatch):
    first, _ = mnist1d
    again = data.load_mnist1d(cache_dir=tmp_path)  # a second, independent generation
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, key), getattr(first, key))
    (cache,) = tmp_path.glob("mnist1d-*-seed42.npz")
    assert not list(tmp_path.glob(".*.part"))

    def must_not_generate(seed):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(mnist1d_module, "_generate_mnist1d", must_not_generate)
    cached = data.load_mnist1d(cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.x_test, first.x_test)


def test_mnist1d_corrupt_cache_is_regenerated(mnist1d, tmp_path, monkeypatch):
    first, _ = mnist1d
    arrays = {k: getattr(first, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    monkeypatch.setattr(mnist1d_module, "_generate_mnist1d", lambda seed: arrays)
    data.load_mnist1d(cache_dir=tmp_path)
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    cache.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable cache"):
        data.load_mnist1d(cache_dir=tmp_path)
    with np.load(cache) as stored:
        np.testing.assert_array_equal(stored["y_test"], first.y_test)


def test_mnist1d_seed_reaches_the_generator(monkeypatch):
    import mnist1d.data

    seen = {}

    def fake_make_dataset(args):
        seen["seed"] = args.seed
        np.random.seed(args.seed)  # as mnist1d's set_seed does
        x = np.zeros((5, 40))
        return {"x": x[:4], "y": np.arange(4), "x_test": x[4:], "y_test": np.arange(1)}

    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset)
    dataset = data.load_mnist1d(seed=7)
    assert seen["seed"] == 7 and dataset.x_train.shape == (4, 1, 40)


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), ("42", TypeError)])
def test_mnist1d_bad_seed(seed, error):
    with pytest.raises(error, match="seed"):
        data.load_mnist1d(seed=seed)


# ----------------------------------------------------------------------------- batching

@pytest.mark.parametrize("drop_last", [True, False])
def test_batches_cover_each_example_once(drop_last):
    x, y = np.arange(23)[:, None] * 10, np.arange(23)
    batches = list(data.batches(5, x, y, 4, drop_last=drop_last))
    assert [len(b[1]) for b in batches] == [4] * 5 + ([] if drop_last else [3])
    seen = np.concatenate([b[1] for b in batches])
    assert len(np.unique(seen)) == len(seen) == (20 if drop_last else 23)
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb * 10)


def test_batch_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        return np.concatenate([yb for _, yb in data.batches(seed, np.zeros((50, 1)), np.arange(50), 10,
                                                            epoch=epoch)])

    np.testing.assert_array_equal(order(0, 3), order(0, 3))
    np.testing.assert_array_equal(order(0, 3), data.epoch_permutation(0, 3, 50))
    np.testing.assert_array_equal(order(0, 3), order(jax.random.key(0), 3))
    np.testing.assert_array_equal(order(0, 3), order(jax.random.PRNGKey(0), 3))
    assert not np.array_equal(order(0, 3), order(0, 4))
    assert not np.array_equal(order(0, 3), order(1, 3))
    np.testing.assert_array_equal(np.sort(order(0, 3)), np.arange(50))
    unshuffled = [yb for _, yb in data.batches(0, np.zeros((6, 1)), np.arange(6), 2, shuffle=False)]
    np.testing.assert_array_equal(np.concatenate(unshuffled), np.arange(6))


@pytest.mark.parametrize("key, x, y, batch_size, kwargs, error, message", [
    (0, np.zeros((5, 1)), np.zeros(5), 0, {}, ValueError, "batch_size: expected an int >= 1"),
    (0, np.zeros((5, 1)), np.zeros(5), 6, {}, ValueError, "batch_size: expected at most N = 5"),
    (0, np.zeros((5, 1)), np.zeros(4), 2, {}, ValueError, r"x, y: .*\(5, 1\) and \(4,\)"),
    ("0", np.zeros((5, 1)), np.zeros(5), 2, {}, TypeError, "key_or_seed"),
    (0, np.zeros((5, 1)), np.zeros(5), 2, {"epoch": -1}, ValueError, "epoch"),
])
def test_batches_bad_arguments(key, x, y, batch_size, kwargs, error, message):
    with pytest.raises(error, match=message):
        data.batches(key, x, y, batch_size, **kwargs)  # raised eagerly, before iteration


# ----------------------------------------------------------------------------- augmentation

def test_shift_by_hand():
    ramp = jnp.array([[[1.0, 2, 3, 4, 5]]])
    shifts = jnp.array([[2]], jnp.int32)
    np.testing.assert_array_equal(augmentation.shift(ramp, shifts, circular=True)[0, 0], [4, 5, 1, 2, 3])
    np.testing.assert_array_equal(augmentation.shift(ramp, shifts, circular=False)[0, 0], [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(augmentation.shift(ramp, -shifts, circular=False)[0, 0], [3, 4, 5, 0, 0])


def candidates_1d(row: np.ndarray, max_shift: int, circular: bool) -> dict[int, np.ndarray]:
    """Every allowed shift of ``row`` (C, L), by np.roll or zero-padded slicing."""
    padded = np.pad(row, ((0, 0), (max_shift, max_shift)))
    length = row.shape[-1]
    return {s: np.roll(row, s, axis=-1) if circular else padded[:, max_shift - s:max_shift - s + length]
            for s in range(-max_shift, max_shift + 1)}


@pytest.mark.parametrize("mode", ["circular", "zeros"])
def test_random_shift_1d_is_a_shift_of_the_ramp(mode):
    x = np.tile(np.arange(1.0, 13.0, dtype=np.float32), (200, 2, 1)) * np.array([1, -1], np.float32)[:, None]
    shifted = np.asarray(jax.jit(data.random_shift_1d, static_argnames=("max_shift", "mode"))(
        jax.random.key(0), x, 3, mode=mode))
    used = []
    for n in range(200):
        options = candidates_1d(x[n], 3, mode == "circular")
        matches = [s for s, candidate in options.items() if np.array_equal(candidate, shifted[n])]
        assert len(matches) == 1  # both channels moved by the same amount
        used.append(matches[0])
    assert set(used) == set(range(-3, 4))


@pytest.mark.parametrize("spatial", [(6,), (5, 6), (3, 4, 5)], ids=["1d", "2d", "3d"])
def test_random_crop_matches_pad_then_crop(spatial):
    padding, count = 1, 120
    x = np.random.default_rng(0).normal(size=(count, 2, *spatial)).astype(np.float32)
    key = jax.random.key(1)
    cropped = np.asarray(data.random_crop(key, x, padding))
    if len(spatial) == 1:  # compiling takes about a second a shape, so once is enough
        jitted = jax.jit(data.random_crop, static_argnames="padding")
        np.testing.assert_array_equal(jitted(key, x, padding), cropped)
    width = len(spatial)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(padding, padding)] * width)
    offsets = list(itertools.product(range(2 * padding + 1), repeat=width))
    used = set()
    for n in range(count):
        window = lambda o: padded[(n, slice(None)) + tuple(slice(a, a + s) for a, s in zip(o, spatial))]
        matches = [o for o in offsets if np.array_equal(window(o), cropped[n])]
        assert len(matches) == 1
        used.add(matches[0])
    assert used == set(offsets)


def test_random_flip_flips_whole_examples():
    x = np.random.default_rng(0).normal(size=(400, 2, 3, 5)).astype(np.float32)
    flipped = np.asarray(jax.jit(data.random_flip, static_argnames="axis")(jax.random.key(2), x, -1))
    was_flipped = np.array([np.array_equal(flipped[n], x[n, :, :, ::-1]) for n in range(400)])
    unchanged = np.array([np.array_equal(flipped[n], x[n]) for n in range(400)])
    assert np.all(was_flipped ^ unchanged)
    assert 160 < was_flipped.sum() < 240  # Binomial(400, 0.5): mean 200, sd 10
    vertical = np.asarray(data.random_flip(jax.random.key(2), x, axis=2))
    assert all(np.array_equal(vertical[n], x[n, :, ::-1]) or np.array_equal(vertical[n], x[n])
               for n in range(400))


@pytest.mark.parametrize("call, error, message", [
    (lambda k, x: data.random_flip(k, x, axis=1), ValueError, "axis: expected a spatial axis"),
    (lambda k, x: data.random_flip(k, x, axis=-4), ValueError, "axis"),
    (lambda k, x: data.random_flip(k, x, p=1.5), ValueError, "p: expected a probability"),
    (lambda k, x: data.random_crop(k, x, -1), ValueError, "max_shift: expected every value >= 0"),
    (lambda k, x: data.random_shift(k, x, (1, 2, 3)), ValueError, "max_shift: expected an int or 2 ints"),
    (lambda k, x: data.random_shift(k, x, 1, mode="reflect"), ValueError, "mode: expected one of"),
    (lambda k, x: data.random_shift_1d(k, x, 1), ValueError, r"x: expected \(N, C, L\)"),
    (lambda k, x: data.random_crop(k, x[0, 0], 1), ValueError, r"x: expected \(N, C, \*S\)"),
])
def test_augmentation_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call(jax.random.key(0), jnp.zeros((2, 1, 4, 4)))


# ----------------------------------------------------------------------------- the Dataset

@pytest.mark.parametrize("x_test, y_train, message", [
    (np.zeros((2, 1, 5)), np.zeros(3), r"y_train: expected shape \(4,\).*got \(3,\)"),
    (np.zeros((2, 1, 4)), np.zeros(4), r"x_test: expected example shape \(1, 5\)"),
    (np.zeros((2, 5)), np.zeros(4), r"x_test: expected \(N, C, \*S\)"),
])
def test_dataset_checks_shapes(x_test, y_train, message):
    with pytest.raises(ValueError, match=message):
        data.Dataset(np.zeros((4, 1, 5)), y_train, x_test, np.zeros(2), num_classes=2, name="toy")


def test_standardize_uses_train_statistics():
    x_train = np.array([[[1.0, 3.0]], [[5.0, 7.0]]], np.float32)  # (2, 1, 2): mean 4, std sqrt(5)
    dataset = data.Dataset(x_train, np.zeros(2, np.int32), np.full((1, 1, 2), 4.0, np.float32),
                           np.zeros(1, np.int32), num_classes=1, name="toy")
    result = data.standardize(dataset)
    np.testing.assert_allclose(result.x_train[:, 0], (np.array([[1, 3], [5, 7]]) - 4) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(result.x_test, 0)
    stats = [result.extras["mean"][0], result.extras["std"][0]]
    np.testing.assert_allclose(stats, [4, np.sqrt(5)], rtol=1e-6)
    with pytest.raises(ValueError, match="mean: expected 1 values"):
        data.standardize(dataset, mean=[0.0, 1.0])
