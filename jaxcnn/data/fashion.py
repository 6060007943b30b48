"""Fashion-MNIST: IDX files, finding an installed copy, loading, and a verified download.

The public names are re-exported by ``jaxcnn.data``. Nothing here touches the
network except ``download_fashion_mnist`` (``jaxcnn train --download``).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import struct
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jaxcnn._files import PathLike, atomic_write
from jaxcnn.data.dataset import Dataset, standardize


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

# Two MD5s per file: of the official .gz (from the Fashion-MNIST README), and of the IDX bytes
# inside it. The .gz MD5 cannot verify an installed copy: Debian's
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
# SHA-256s for the download: of the official .gz (as the mirrors serve it) and of the IDX bytes
# inside (they match files whose uncompressed MD5 is the official one above, Debian's included),
# so that a mirror that recompressed the files, as Debian's package did, verifies too.
FASHION_MNIST_SHA256 = {  # name: (SHA-256 of name.gz, SHA-256 of the uncompressed IDX file)
    "train-images-idx3-ubyte": ("08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte": ("b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte": ("78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                               "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte": ("42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                               "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
# Where download_fashion_mnist fetches from, when set: URL prefixes (http, https, file),
# separated by commas; else FASHION_MNIST_URLS.
FASHION_MNIST_MIRRORS_ENV = "JAXCNN_FASHION_MNIST_MIRRORS"
_FASHION_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                   "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_HOW_TO_GET = ("Get it with `apt-get install dataset-fashion-mnist` (into "
               f"{DEBIAN_FASHION_MNIST_DIR}), with `jaxcnn train --download --data-dir DIR`, or with "
               "jaxcnn.data.download_fashion_mnist(dest_dir) and then pass data_dir=dest_dir or set "
               "JAXCNN_DATA=dest_dir.")


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


def read_fashion_split(directory: Path, split: str, check_md5: bool) -> tuple[np.ndarray, np.ndarray]:
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


def to_unit(pixels: np.ndarray, dtype: Any) -> np.ndarray:
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
        images, labels = read_fashion_split(directory, split, check_md5)
        arrays[f"x_{split}"] = to_unit(images[:, None], np.float32)
        arrays[f"y_{split}"] = labels.astype(np.int32)
    dataset = Dataset(**arrays, num_classes=10, name="fashion_mnist")
    return standardize(dataset) if standardized else dataset


def _fetch(url: str, timeout: float) -> bytes:
    """One HTTP GET; the seam the tests replace."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _verify(name: str, payload: bytes) -> str | None:
    """``None`` if ``payload`` is the official ``name.gz`` (its SHA-256) or a gzip file of the
    official IDX bytes; else what is wrong."""
    gz_sha256, raw_sha256 = FASHION_MNIST_SHA256[name]
    actual = hashlib.sha256(payload).hexdigest()
    if actual == gz_sha256:
        return None
    try:
        if hashlib.sha256(gzip.decompress(payload)).hexdigest() == raw_sha256:
            return None
    except (OSError, EOFError, zlib.error):
        pass
    return f"SHA-256 {actual}, expected {gz_sha256} (or gzip data whose SHA-256 is {raw_sha256})"


def fashion_mnist_mirrors() -> tuple[str, ...]:
    """The URL prefixes to download from: ``$JAXCNN_FASHION_MNIST_MIRRORS`` (comma-separated),
    else ``FASHION_MNIST_URLS``."""
    listed = os.environ.get(FASHION_MNIST_MIRRORS_ENV, "")
    mirrors = tuple(m.strip() for m in listed.split(",") if m.strip())
    return mirrors or FASHION_MNIST_URLS


def download_fashion_mnist(dest_dir: PathLike, *, mirrors: Sequence[str] | None = None,
                           timeout: float = 60.0, log: Callable[[str], Any] | None = None) -> Path:
    """Download the four Fashion-MNIST ``.gz`` files into ``dest_dir``, verified by SHA-256.

    Each file is tried at each mirror in turn (``None``: ``fashion_mnist_mirrors()``); one whose
    SHA-256 is not the official file's (or whose uncompressed bytes' SHA-256 is not the official
    data's, for a mirror that recompressed it) is rejected. Files are written atomically; ones
    already present and verified are kept. ``log`` is called with a line per file fetched.

    Returns:
      ``dest_dir``, ready for ``load_fashion_mnist(dest_dir)``.

    Raises:
      ValueError: every mirror failed for a file and at least one sent wrong bytes.
      OSError: every mirror failed for a file with a network error.
    """
    mirrors = fashion_mnist_mirrors() if mirrors is None else mirrors
    if isinstance(mirrors, str) or not mirrors or not all(isinstance(m, str) for m in mirrors):
        raise TypeError(f"mirrors: expected a non-empty sequence of URL prefixes; got {mirrors!r}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_SHA256:
        target = dest / f"{name}.gz"
        if target.is_file() and _verify(name, target.read_bytes()) is None:
            continue
        failures, corrupt = [], False
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + target.name
            try:
                payload = _fetch(url, timeout)
            except (OSError, http.client.HTTPException) as err:
                failures.append(f"{url}: {err}")
                continue
            wrong = _verify(name, payload)
            if wrong is not None:
                failures.append(f"{url}: {wrong}")
                corrupt = True
                continue
            atomic_write(target, payload)
            if log is not None:
                log(f"downloaded {target} from {url} ({len(payload)} bytes, SHA-256 verified)")
            break
        else:
            error = ValueError if corrupt else OSError
            raise error(f"{target.name}: no mirror gave a verified copy: " + "; ".join(failures))
    return dest
