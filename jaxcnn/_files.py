"""The one atomic write of jaxcnn: every file it rewrites goes through ``atomic_write``.

``atomic_write`` writes a temporary file in the target's folder, flushes and ``os.fsync``\\ s
it, ``os.replace``\\ s it onto the target and fsyncs the folder (where the platform allows),
so a reader sees the old file or the whole new one, never a partial one, even after a crash:
checkpoints, caches, downloads, reports.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

PathLike = str | os.PathLike


def atomic_write(path: PathLike, content: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write ``path`` whole or not at all: bytes, text (UTF-8), or ``content(f)`` writing to a
    binary file. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable: fsync the folder's entry list (POSIX; Windows cannot open a
    folder, and some file systems refuse, which only loses durability, not atomicity)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
