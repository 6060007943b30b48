"""Tests for jaxcnn.data: every check compares with a value built independently in the test
(hand-written IDX bytes, np.roll / np.pad references, published dataset statistics)."""
from __future__ import annotations

import gzip
import hashlib
import itertools
import socket
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import data
from jaxcnn.data import augmentation
from jaxcnn.data import mnist1d as mnist1d_module
from jaxcnn.data import fashion as fashion_files

VELOCITY = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}  # (dy, dx)


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


# ----------------------------------------------------------------------------- IDX files

def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """IDX encoding written out by hand: 0x0000, dtype code, ndim, big-endian dims, payload."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype, code, shape", [
    (np.uint8, 0x08, (3, 4, 5)), (np.int16, 0x0B, (6, 2)), (np.float32, 0x0D, (7,)),
    (np.float64, 0x0E, (2, 1, 2, 3)),
], ids=["uint8-3d", "int16-2d", "float32-1d", "float64-4d"])
def test_read_idx_round_trip(tmp_path, compressed, dtype, code, shape):
    array = (np.arange(np.prod(shape)) * 37 % 251 - 100 * (dtype != np.uint8)).astype(dtype).reshape(shape)
    encoded = idx_bytes(array, code)
    path = tmp_path / ("file.gz" if compressed else "file")
    path.write_bytes(gzip.compress(encoded) if compressed else encoded)
    result = data.read_idx(path, md5=hashlib.md5(encoded).hexdigest())
    assert result.dtype == dtype and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)


@pytest.mark.parametrize("payload, message", [
    (GOOD[:-1], "truncated"),
    (GOOD + b"\0", "trailing bytes"),
    (b"\x01\x08" + GOOD[2:], "magic number"),
    (GOOD[:2] + b"\x07" + GOOD[3:], "dtype code"),
    (GOOD[:9], "header declares 3 dims"),
    (gzip.compress(GOOD)[:-6], "gzip"),
], ids=["truncated", "trailing", "magic", "dtype-code", "short-header", "truncated-gzip"])
def test_read_idx_rejects_corrupt_files(tmp_path, payload, message):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=message) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_md5_mismatch_and_missing_file(tmp_path):
    path = tmp_path / "good"
    path.write_bytes(GOOD)
    with pytest.raises(ValueError, match=f"{path}.*MD5"):
        data.read_idx(path, md5="0" * 32)
    with pytest.raises(FileNotFoundError, match="absent"):
        data.read_idx(tmp_path / "absent")


# ----------------------------------------------------------------------------- Fashion-MNIST

def write_fashion(directory, n_train=12, n_test=5, *, labels=None, image_shape=(28, 28), gz=True):
    """Small synthetic Fashion-MNIST IDX files; returns the train images written."""
    rng = np.random.default_rng(0)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10 if labels is None or prefix == "t10k" else labels
        for name, array, code in ((f"{prefix}-images-idx3-ubyte", images, 0x08),
                                  (f"{prefix}-labels-idx1-ubyte", y, 0x08)):
            encoded = idx_bytes(array, code)
            path = directory / (name + ".gz" if gz else name)
            path.write_bytes(gzip.compress(encoded) if gz else encoded)
        written[prefix] = images
    return written["train"]


@pytest.fixture(scope="module")
def fashion():
    try:
        data.find_fashion_mnist(data.DEBIAN_FASHION_MNIST_DIR)
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {err}")
    return data.load_fashion_mnist(data.DEBIAN_FASHION_MNIST_DIR)


def test_fashion_mnist_real_files(fashion):
    assert fashion.x_train.shape == (60000, 1, 28, 28) and fashion.x_test.shape == (10000, 1, 28, 28)
    assert fashion.x_train.dtype == np.float32 and fashion.y_train.dtype == np.int32
    assert fashion.x_train.min() == 0 and fashion.x_train.max() == 1
    np.testing.assert_array_equal(np.bincount(fashion.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(fashion.y_test), [1000] * 10)
    # The published pixel statistics of the train set.
    np.testing.assert_allclose([fashion.x_train.mean(), fashion.x_train.std()], [0.2860, 0.3530], atol=1e-4)


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


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_fashion_mnist_synthetic_files(tmp_path, gz):
    train_images = write_fashion(tmp_path, gz=gz)
    dataset = data.load_fashion_mnist(tmp_path, check_md5=False)
    assert dataset.x_train.shape == (12, 1, 28, 28) and dataset.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(dataset.x_train[:, 0], train_images / 255, rtol=1e-6)
    np.testing.assert_array_equal(dataset.y_train, np.arange(12) % 10)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*MD5"):  # not the real files
        data.load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("kwargs, culprit, message", [
    ({"labels": np.array([0, 1, 10, 2], np.uint8), "n_train": 4}, "train-labels", "label 10 at index 2"),
    ({"labels": np.zeros(11, np.uint8)}, "train-labels", "11 labels.*12 images"),
    ({"image_shape": (27, 28)}, "train-images", r"shape \(N, 28, 28\)"),
], ids=["label-range", "count-mismatch", "image-size"])
def test_fashion_mnist_rejects_bad_files(tmp_path, kwargs, culprit, message):
    write_fashion(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message) as info:
        data.load_fashion_mnist(tmp_path, check_md5=False)
    assert str(tmp_path / culprit) in str(info.value)


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    how = "apt-get install dataset-fashion-mnist.*download_fashion_mnist"
    with pytest.raises(FileNotFoundError, match=how):
        data.load_fashion_mnist(tmp_path)
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        data.load_fashion_mnist(tmp_path)


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    env_dir, explicit_dir = tmp_path / "env", tmp_path / "explicit"
    env_dir.mkdir()
    explicit_dir.mkdir()
    write_fashion(env_dir)
    write_fashion(explicit_dir)
    monkeypatch.setenv("JAXCNN_DATA", str(env_dir))
    assert data.find_fashion_mnist() == env_dir
    assert data.find_fashion_mnist(explicit_dir) == explicit_dir
    monkeypatch.setenv("JAXCNN_DATA", str(tmp_path / "empty"))  # falls through to Debian's
    monkeypatch.setattr(fashion_files, "DEBIAN_FASHION_MNIST_DIR", explicit_dir)
    assert data.find_fashion_mnist() == explicit_dir


# ----------------------------------------------------------------------------- download

@pytest.fixture
def mirrors(tmp_path, monkeypatch):
    """Three fake mirrors serving synthetic .gz files: a corrupt one, a good one, and one that
    recompressed them (other .gz bytes, the same IDX bytes inside); the checksum table is set to
    the good files'."""
    source = tmp_path / "source"
    source.mkdir()
    write_fashion(source)
    good = {p.name: p.read_bytes() for p in source.iterdir()}
    for name in fashion_files.FASHION_MNIST_SHA256:
        gz = good[name + ".gz"]
        monkeypatch.setitem(fashion_files.FASHION_MNIST_SHA256, name, (hashlib.sha256(gz).hexdigest(),
                                                               hashlib.sha256(gzip.decompress(gz)).hexdigest()))
    recompressed = {name: gzip.compress(gzip.decompress(gz), compresslevel=1, mtime=1) for name, gz in good.items()}
    assert all(recompressed[name] != good[name] for name in good)
    served = {"http://a/": {name: b"corrupt" for name in good}, "http://b/": good, "http://c/": recompressed}
    calls = []

    def fake_fetch(url, timeout):
        calls.append(url)
        base, name = url.rsplit("/", 1)
        if name not in served[base + "/"]:
            raise OSError(f"404 for {url}")
        return served[base + "/"][name]

    monkeypatch.setattr(fashion_files, "_fetch", fake_fetch)
    return good, served, calls


def test_download_verifies_sha256_and_falls_back(tmp_path, mirrors):
    good, _, calls = mirrors
    lines = []
    dest = data.download_fashion_mnist(tmp_path / "dest", mirrors=["http://a/", "http://b/"], log=lines.append)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == good  # no corrupt or .part file
    assert len(calls) == 8  # each file: the corrupt mirror, then the good one
    assert len(lines) == 4 and all("from http://b/" in line and "SHA-256 verified" in line for line in lines)
    data.download_fashion_mnist(dest, mirrors=["http://a/", "http://b/"])
    assert len(calls) == 8  # verified files are not fetched again
    assert data.load_fashion_mnist(dest, check_md5=False).x_train.shape == (12, 1, 28, 28)


def test_download_accepts_a_recompressed_copy_of_the_data(tmp_path, mirrors):
    good, served, _ = mirrors
    dest = data.download_fashion_mnist(tmp_path / "dest", mirrors=["http://c/"])
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == served["http://c/"]
    assert all(gzip.decompress(served["http://c/"][name]) == gzip.decompress(good[name]) for name in good)


def test_download_rejects_wrong_sha256(tmp_path, mirrors):
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*http://a/.*SHA-256"):
        data.download_fashion_mnist(tmp_path / "dest", mirrors=["http://a/"])
    assert not list((tmp_path / "dest").iterdir())
    _, served, _ = mirrors
    served["http://b/"].clear()
    with pytest.raises(OSError, match="404"):
        data.download_fashion_mnist(tmp_path / "dest", mirrors=["http://b/"])


def test_download_mirrors_come_from_the_environment(tmp_path, mirrors, monkeypatch):
    _, _, calls = mirrors
    monkeypatch.setenv(fashion_files.FASHION_MNIST_MIRRORS_ENV, " http://b/ ,")
    assert fashion_files.fashion_mnist_mirrors() == ("http://b/",)
    data.download_fashion_mnist(tmp_path / "dest")
    assert len(calls) == 4 and all(url.startswith("http://b/") for url in calls)
    monkeypatch.delenv(fashion_files.FASHION_MNIST_MIRRORS_ENV)
    assert fashion_files.fashion_mnist_mirrors() == data.FASHION_MNIST_URLS


def test_download_checks_the_official_sha256(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_files, "_fetch", lambda url, timeout: b"not fashion-mnist")
    with pytest.raises(ValueError, match="expected 08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc"):
        data.download_fashion_mnist(tmp_path)
    with pytest.raises(TypeError, match="mirrors"):
        data.download_fashion_mnist(tmp_path, mirrors="http://a/")


def test_download_of_the_real_files_from_a_local_mirror(tmp_path):
    """Debian's copy served through file:// (its .gz headers were rewritten, so only the
    uncompressed SHA-256 matches); loading then checks the official uncompressed MD5s, an
    independent table, so both tables describe the same files."""
    try:
        data.find_fashion_mnist(data.DEBIAN_FASHION_MNIST_DIR)
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {err}")
    dest = data.download_fashion_mnist(tmp_path, mirrors=[data.DEBIAN_FASHION_MNIST_DIR.as_uri()])
    for name in fashion_files.FASHION_MNIST_SHA256:
        assert (dest / f"{name}.gz").read_bytes() == (data.DEBIAN_FASHION_MNIST_DIR / f"{name}.gz").read_bytes()
    assert data.load_fashion_mnist(dest).y_test.shape == (10000,)


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


@pytest.mark.parametrize("x_test, y_train, message", [
    (np.zeros((2, 1, 5)), np.zeros(3), r"y_train: expected shape \(4,\).*got \(3,\)"),
    (np.zeros((2, 1, 4)), np.zeros(4), r"x_test: expected example shape \(1, 5\)"),
    (np.zeros((2, 5)), np.zeros(4), r"x_test: expected \(N, C, \*S\)"),
])
def test_dataset_checks_shapes(x_test, y_train, message):
    with pytest.raises(ValueError, match=message):
        data.Dataset(np.zeros((4, 1, 5)), y_train, x_test, np.zeros(2), num_classes=2, name="toy")
