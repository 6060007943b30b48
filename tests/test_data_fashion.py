"""Tests for jaxcnn.data.fashion: the IDX reader, Fashion-MNIST's files (the real ones where
Debian's package is installed, else synthetic ones) and their download from mirrors. Every check
compares with a value built independently in the test (hand-written IDX bytes, published dataset
statistics, the checksums of the files served)."""
from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from jaxcnn import data
from jaxcnn.data import fashion as fashion_files


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
