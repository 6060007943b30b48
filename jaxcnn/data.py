"""Datasets and batching: MNIST-1D, Fashion-MNIST, moving-item clips for 3D CNNs.

Every array is channels-first, ``x: (N, C, *S)``, ``y: (N,)`` int32. Loaders return numpy
arrays on the host; ``batches`` slices them per step, and the augmentations are pure JAX
functions of ``(key, x)`` that can be jit-compiled (their size arguments are static).

Nothing here touches the network except ``download_fashion_mnist``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.client
import importlib.metadata
import os
import random
import struct
import tempfile
import types
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._args import _is_int, choice, int_tuple

PathLike = str | os.PathLike

__all__ = [
    "Dataset", "Clips", "load_mnist1d", "read_idx", "load_fashion_mnist", "find_fashion_mnist",
    "download_fashion_mnist", "standardize", "make_clips", "load_fashion_clips",
    "epoch_permutation", "batches", "random_shift", "random_shift_1d", "random_crop",
    "random_flip", "FASHION_MNIST_CLASSES", "DIRECTIONS",
]


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


def _int_arg(value: Any, name: str, minimum: int, why: str = "") -> int:
    """One int ``>= minimum``; ``why`` says where the bound comes from."""
    if not _is_int(value):
        raise TypeError(f"{name}: expected an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}{why}; got {value}")
    return int(value)


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


def _atomic_write(path: Path, write: bytes | Callable[[Any], None]) -> None:
    """Write ``path`` through a temporary file in the same directory and ``os.replace``, so
    readers see the old file or the whole new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(write) if isinstance(write, bytes) else write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


# ----------------------------------------------------------------------------- IDX files

# IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a dtype code,
# the number of dims, then each dim as a big-endian uint32, then the C-order big-endian payload.
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: PathLike, *, md5: str | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by its magic bytes) or plain.

    Args:
      path: the file.
      md5: optional expected MD5 hex digest of the *uncompressed* bytes.

    Returns:
      The array, shape as the header says, native byte order (read-only for uint8).

    Raises:
      FileNotFoundError: no such file.
      ValueError: corrupt gzip data, a bad magic number or dtype code, a payload length that
        differs from the header's (truncated or trailing bytes), or an MD5 mismatch; the
        message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise ValueError(f"{path}: bad IDX magic number 0x{raw[:4].hex()}: expected 0x0000 then a "
                         f"dtype code and a dim count (e.g. 0x00000803 for uint8 images)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x}; expected one of "
                         f"{[f'0x{c:02x}' for c in _IDX_DTYPES]}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: IDX header declares {ndim} dims, needs {header} bytes; "
                         f"file has {len(raw)} bytes")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        what = "truncated" if len(raw) - header < expected else "trailing bytes after the data"
        raise ValueError(f"{path}: {what}: header says shape {dims} of {dtype.name} = {expected} "
                         f"payload bytes; file has {len(raw) - header}")
    if md5 is not None and (actual := hashlib.md5(raw).hexdigest()) != md5:
        raise ValueError(f"{path}: MD5 of the uncompressed data is {actual}, expected {md5}: "
                         f"the file is corrupt or not the expected file")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


# ----------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# Two MD5s per file: of the official .gz, and of the IDX bytes inside it.
# The .gz MD5 (from the Fashion-MNIST README) verifies a download byte for byte, so
# download_fashion_mnist checks it. It cannot verify an installed copy: Debian's
# dataset-fashion-mnist (0.0~git20200523.55506a9-1) ships .gz files with other MD5s
# (train-images: cf8536b0aa1a6ac5fa3f23001093305c), because its build rewrote the gzip headers
# (strip-nondeterminism): the stored file name is gone, each .gz is exactly len(name) + 1 bytes
# shorter than upstream (26421856 vs 26421880 for train-images), and the mtime is the Debian
# changelog date. The compressed data is upstream's: the uncompressed MD5s match the official
# ones (as torchvision's FashionMNIST lists them). So loading checks the uncompressed MD5,
# which holds for Debian's files, downloaded ones, and ones the user gunzipped.
FASHION_MNIST_MD5 = {  # name: (MD5 of name.gz, MD5 of the uncompressed IDX file)
    "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
_FASHION_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                   "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_HOW_TO_GET = ("Get it with `apt-get install dataset-fashion-mnist` (into "
               f"{DEBIAN_FASHION_MNIST_DIR}), or with jaxcnn.data.download_fashion_mnist(dest_dir) "
               "and then pass data_dir=dest_dir or set JAXCNN_DATA=dest_dir.")


def _idx_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def find_fashion_mnist(data_dir: PathLike | None = None) -> Path:
    """The directory holding the four Fashion-MNIST IDX files (``.gz`` or plain).

    Searched in order: ``data_dir`` (when given, only it), ``$JAXCNN_DATA``, then
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).

    Raises:
      FileNotFoundError: no candidate holds the files, or one holds only some of them; the
        message lists the directories searched and how to get the data.
    """
    if data_dir is not None:
        candidates = [(Path(data_dir), "data_dir")]
    else:
        env = os.environ.get("JAXCNN_DATA")
        candidates = [(Path(env), "$JAXCNN_DATA")] if env else []
        candidates.append((DEBIAN_FASHION_MNIST_DIR, "the Debian package path"))
    for directory, source in candidates:
        missing = [name for name in FASHION_MNIST_MD5 if _idx_file(directory, name) is None]
        if not missing:
            return directory
        if len(missing) < len(FASHION_MNIST_MD5):
            raise FileNotFoundError(f"{directory} ({source}) holds only part of Fashion-MNIST: "
                                    f"missing {', '.join(missing)} (.gz or plain). {_HOW_TO_GET}")
    searched = ", ".join(f"{directory} ({source})" for directory, source in candidates)
    raise FileNotFoundError(f"Fashion-MNIST not found; searched {searched}. {_HOW_TO_GET}")


def _read_fashion_split(directory: Path, split: str, check_md5: bool) -> tuple[np.ndarray, np.ndarray]:
    """Verified raw arrays of one split: images ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8."""
    image_name, label_name = _FASHION_SPLITS[split]
    image_path, label_path = _idx_file(directory, image_name), _idx_file(directory, label_name)
    for path, name in ((image_path, image_name), (label_path, label_name)):
        if path is None:
            raise FileNotFoundError(f"{directory / name}(.gz) not found. {_HOW_TO_GET}")
    images = read_idx(image_path, md5=FASHION_MNIST_MD5[image_name][1] if check_md5 else None)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: expected uint8 images of shape (N, 28, 28) (magic 0x00000803); "
                         f"got {images.dtype} of shape {images.shape}")
    labels = read_idx(label_path, md5=FASHION_MNIST_MD5[label_name][1] if check_md5 else None)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{label_path}: expected uint8 labels of shape (N,) (magic 0x00000801); "
                         f"got {labels.dtype} of shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{label_path}: holds {labels.shape[0]} labels, but {image_path} holds "
                         f"{images.shape[0]} images")
    bad = np.flatnonzero(labels >= len(FASHION_MNIST_CLASSES))
    if bad.size:
        raise ValueError(f"{label_path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..9 "
                         f"({bad.size} such labels)")
    return images, labels


def _to_unit(pixels: np.ndarray, dtype: Any) -> np.ndarray:
    """uint8 pixels as ``dtype`` in [0, 1] (a float dtype), or unchanged for uint8."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return pixels
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"dtype: expected uint8 or a floating dtype; got {dtype}")
    return np.multiply(pixels, dtype.type(1 / 255), dtype=dtype)


def load_fashion_mnist(data_dir: PathLike | None = None, *, standardized: bool = False,
                       check_md5: bool = True) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) from its IDX files.

    Args:
      data_dir: directory of the four files; see ``find_fashion_mnist`` for the search order.
      standardized: apply ``standardize`` (train-set mean and std) instead of plain [0, 1].
      check_md5: compare the uncompressed files with the official MD5s.

    Returns:
      ``x_train: (60000, 1, 28, 28)``, ``x_test: (10000, 1, 28, 28)`` float32 in [0, 1];
      ``y_*`` int32 in ``[0, 10)`` (``FASHION_MNIST_CLASSES`` names them).
    """
    directory = find_fashion_mnist(data_dir)
    arrays = {}
    for split in _FASHION_SPLITS:
        images, labels = _read_fashion_split(directory, split, check_md5)
        arrays[f"x_{split}"] = _to_unit(images[:, None], np.float32)
        arrays[f"y_{split}"] = labels.astype(np.int32)
    dataset = Dataset(**arrays, num_classes=10, name="fashion_mnist")
    return standardize(dataset) if standardized else dataset


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


def _fetch(url: str, timeout: float) -> bytes:
    """One HTTP GET; the seam the tests replace."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def download_fashion_mnist(dest_dir: PathLike, *, mirrors: Sequence[str] = FASHION_MNIST_URLS,
                           timeout: float = 60.0) -> Path:
    """Download the four Fashion-MNIST ``.gz`` files into ``dest_dir``, verified by MD5.

    Each file is tried at each mirror in turn; one whose MD5 is not the official one is
    rejected. Files are written atomically; ones already present with the right MD5 are kept.

    Returns:
      ``dest_dir``, ready for ``load_fashion_mnist(dest_dir)``.

    Raises:
      ValueError: every mirror failed for a file and at least one sent wrong bytes.
      OSError: every mirror failed for a file with a network error.
    """
    if isinstance(mirrors, str) or not mirrors or not all(isinstance(m, str) for m in mirrors):
        raise TypeError(f"mirrors: expected a non-empty sequence of URL prefixes; got {mirrors!r}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name, (gz_md5, _) in FASHION_MNIST_MD5.items():
        target = dest / f"{name}.gz"
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == gz_md5:
            continue
        failures, corrupt = [], False
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + target.name
            try:
                payload = _fetch(url, timeout)
            except (OSError, http.client.HTTPException) as err:
                failures.append(f"{url}: {err}")
                continue
            if (actual := hashlib.md5(payload).hexdigest()) != gz_md5:
                failures.append(f"{url}: MD5 {actual}, expected {gz_md5}")
                corrupt = True
                continue
            _atomic_write(target, payload)
            break
        else:
            error = ValueError if corrupt else OSError
            raise error(f"{target.name}: no mirror gave a verified copy: " + "; ".join(failures))
    return dest


# ----------------------------------------------------------------------------- 3D clips

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
    frames = _int_arg(frames, "frames", 2)
    size = _int_arg(size, "size", max(images.shape[1:]), f" (the image side, images are {images.shape[1:]})")
    step = _int_arg(step, "step", 1)
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
    train_seed, test_seed = np.random.SeedSequence(_int_arg(seed, "seed", 0)).spawn(2)
    arrays, extras = {}, {}
    for split, limit, split_seed in (("train", n_train, train_seed), ("test", n_test, test_seed)):
        images, labels = _read_fashion_split(directory, split, check_md5)
        if limit is not None:
            limit = _int_arg(limit, f"n_{split}", 1)
            if limit > images.shape[0]:
                raise ValueError(f"n_{split}: expected at most {images.shape[0]}; got {limit}")
            images, labels = images[:limit], labels[:limit]
        clips = make_clips(images, labels, frames=frames, size=size, step=step, seed=split_seed)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = _to_unit(clips.x, dtype), clips.y
        extras[f"item_{split}"], extras[f"direction_{split}"] = clips.item, clips.direction
    return Dataset(**arrays, num_classes=len(FASHION_MNIST_CLASSES) * len(DIRECTIONS),
                   name="fashion_clips", extras=extras)


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
