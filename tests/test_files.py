"""Tests for jaxcnn._files: the atomic write (whole file or the old one, synced to disk, no
temporary file left)."""
from __future__ import annotations

import os

import pytest

from jaxcnn._files import atomic_write


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("content, expected", [
    (b"\x00bytes\xff", b"\x00bytes\xff"),
    ("text é", "text é".encode()),
    (lambda f: f.write(b"written by a callback"), b"written by a callback"),
], ids=["bytes", "text", "callback"])
def test_atomic_write_writes_the_whole_file(tmp_path, content, expected):
    path = tmp_path / "new" / "folder" / "file.bin"
    atomic_write(path, content)
    assert path.read_bytes() == expected
    assert leftovers(path.parent) == []


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def fail_halfway(f):
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, fail_halfway)
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    path = tmp_path / "file.bin"
    atomic_write(path, b"data")
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["fsync", "replace"] and events[1][1] == str(path)
    if hasattr(os, "O_DIRECTORY") and os.path.exists("/proc/self/fd"):
        assert events[2:] == [("fsync", os.path.realpath(tmp_path))]
