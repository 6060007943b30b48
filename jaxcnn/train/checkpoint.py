"""Checkpoint I/O: the ``.npz`` checkpoints of ``jaxcnn train``, each written at once
(``jaxcnn._files.atomic_write``).

A checkpoint is an ``np.savez`` archive, no pickles (``np.load`` reads it with
``allow_pickle=False``): the leaves of a pytree as ``leaf_0``, ``leaf_1``, ... in
``jax.tree_util.tree_leaves`` order, named arrays (``step``, ``key``, ...), and ``config``,
the JSON of the run's settings.

Every way a file can fail to be one (not a zip, truncated, a byte changed anywhere in it,
entries missing or unreadable) raises ``NotACheckpointError`` naming the file: the archive's
CRC-32s are checked before anything is read, so a changed byte is never loaded as a value.
"""
from __future__ import annotations

import contextlib
import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._files import PathLike, atomic_write

CONFIG = "config"


class NotACheckpointError(ValueError):
    """A file that is not a jaxcnn checkpoint (or not one of the expected run)."""


# ----------------------------------------------------------------------------- checkpoints

def save(path: PathLike, tree: Any, config: Mapping[str, Any], **arrays: Any) -> None:
    """Write ``tree``'s leaves, the named ``arrays`` and ``config`` (as JSON) to ``path``, atomically."""
    leaves = jax.tree_util.tree_leaves(tree)
    stored = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    stored.update({name: np.asarray(value) for name, value in arrays.items()})
    stored[CONFIG] = np.asarray(json.dumps(config, sort_keys=True))
    atomic_write(path, lambda f: np.savez(f, **stored))


def _not_a_checkpoint(path: Path, names: Sequence[str], why: str) -> NotACheckpointError:
    expected = ", ".join(["leaf_0", "leaf_1", "...", *names, CONFIG])
    return NotACheckpointError(f"{path}: not a jaxcnn checkpoint: expected an .npz archive written by "
                               f"jaxcnn train (arrays {expected}); {why}")


def _check_zip(path: Path, names: Sequence[str]) -> None:
    """An .npz is a zip archive; say what the file is instead (numpy would call anything else
    pickled data)."""
    with path.open("rb") as f:
        head = f.read(8)
    if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first entry, or an empty zip
        what = ("it is empty" if not head else "it is a single .npy array" if head.startswith(b"\x93NUMPY")
                else f"it starts with {head!r}")
        raise _not_a_checkpoint(path, names, f"it is not a zip archive ({what})")


# What reading a damaged archive raises: zipfile's own errors, numpy's for a bad .npy header
# ("Header does not contain the correct keys"), decompression and short reads.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, struct.error, KeyError,
                UnicodeDecodeError, NotImplementedError)


def _check_crcs(path: Path, names: Sequence[str]) -> None:
    """Every entry's CRC-32, before numpy reads any: zipfile checks an entry's CRC-32 when it is
    read to its end, which numpy's reader never does for an entry holding an empty array."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except _READ_ERRORS as err:
        raise _not_a_checkpoint(path, names, f"its zip archive is unreadable ({_short(err)})") from None
    if bad is not None:
        raise _not_a_checkpoint(path, names, f"its entry {bad} is damaged (CRC-32 mismatch)")


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 160 else text[:157] + "..."


def _entry(path: Path, archive: Any, name: str, names: Sequence[str] = ()) -> np.ndarray:
    """``archive[name]``, or ``NotACheckpointError`` naming the file and the entry."""
    try:
        return archive[name]
    except _READ_ERRORS as err:
        raise _not_a_checkpoint(path, names, f"its entry {name!r} is unreadable ({_short(err)})") from None


@contextlib.contextmanager
def _open(path: Path, names: Sequence[str]) -> Iterator[tuple[Any, dict]]:
    """The open archive and its stored config; every reason it is not a checkpoint named."""
    _check_zip(path, names)
    _check_crcs(path, names)
    try:
        archive = np.load(path)
    except _READ_ERRORS as err:
        raise _not_a_checkpoint(path, names, f"its zip archive is unreadable ({_short(err)})") from None
    with archive:
        missing = [name for name in (*names, CONFIG) if name not in archive.files]
        if missing:
            raise _not_a_checkpoint(path, names, f"it lacks {', '.join(missing)}")
        text = str(_entry(path, archive, CONFIG, names))
        try:
            config = json.loads(text)
        except (ValueError, TypeError) as err:
            raise _not_a_checkpoint(path, names, f"its {CONFIG} is not a JSON object ({err})") from None
        if not isinstance(config, dict):
            raise _not_a_checkpoint(path, names, f"its {CONFIG} is not a JSON object")
        yield archive, config


def read_config(path: PathLike, names: Sequence[str] = ()) -> dict[str, Any]:
    """The ``config`` stored in the checkpoint at ``path``."""
    return read(path, names)[0]


def read(path: PathLike, names: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config, arrays)``: the ``config`` and the named arrays stored at ``path``, not the leaves."""
    path = Path(path)
    with _open(path, names) as (archive, config):
        return config, {name: _entry(path, archive, name, names) for name in names}


def _check_same_run(path: Path, stored: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    mine = json.loads(json.dumps(config, sort_keys=True))  # as stored: tuples become lists
    for name in sorted(set(stored) | set(mine)):
        if stored.get(name) != mine.get(name):
            raise ValueError(f"{name}: the checkpoint in {path.parent} was made with "
                             f"{name}={stored.get(name)!r}; got {mine.get(name)!r} (resume needs the same run)")


def _restore_leaves(path: Path, archive: Any, template: Any, names: Sequence[str]) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(template)
    count = sum(name.startswith("leaf_") for name in archive.files)
    if count != len(leaves):
        raise _not_a_checkpoint(path, names, f"it holds {count} leaves; the model and optimizer "
                                f"expect {len(leaves)}")
    restored = []
    for i, leaf in enumerate(leaves):
        value = _entry(path, archive, f"leaf_{i}", names)
        if value.shape != leaf.shape or value.dtype != leaf.dtype:
            raise ValueError(f"{path}: leaf {i} is {value.dtype}{value.shape}; the model "
                             f"expects {leaf.dtype}{leaf.shape}")
        restored.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, restored)


def load(path: PathLike, template: Any, config: Mapping[str, Any] | None,
         names: Sequence[str]) -> tuple[Any, dict[str, np.ndarray]]:
    """``(tree, arrays)`` saved at ``path``: the tree in ``template``'s structure (shapes and
    dtypes checked), and the named arrays.

    ``config``: what the stored ``config`` must equal, key by key (``None``: not checked here).

    Raises:
      NotACheckpointError: ``path`` is not a checkpoint (not an ``.npz``, damaged, or one
        without the arrays ``names``, ``config`` or the template's leaves); the message names
        the file.
      ValueError: it was saved with another ``config``, or a leaf's shape or dtype differs.
    """
    path = Path(path)
    with _open(path, names) as (archive, stored):
        if config is not None:
            _check_same_run(path, stored, config)
        tree = _restore_leaves(path, archive, template, names)
        return tree, {name: _entry(path, archive, name, names) for name in names}
