"""Large host allocations on transparent huge pages, for ``jaxcnn train`` and ``jaxcnn bench``.

XLA's CPU runtime allocates a compiled program's temporaries as one block per call
(``posix_memalign``, from one of its worker threads). glibc serves a block that large (past its
mmap threshold, at most 32 MiB, or past a thread arena's 64 MiB heap) with a fresh ``mmap`` and
hands it back with ``munmap`` when the call ends, so every call touches all its pages anew, and
the kernel zeroes each 4 KiB page at its first touch: 36,000 page faults per fashion-resnet
training step (141 MiB of temporaries, batch 128), 118 ms per step against 88 ms with the block
kept in the heap (glibc's ``arena_max=1``, ``mmap_max=0``, no trimming: memory then never goes
back to the system). glibc's tunable ``glibc.malloc.hugetlb=1`` (glibc 2.35 on) has malloc ask
for transparent huge pages on its mappings (``madvise``), 2 MiB each: 344 faults, 92 ms, and
the memory still goes back when freed. PyTorch's tensors, smaller than the threshold each,
come from the heap and never pay this.

Tunables are read when the process starts, so the two commands re-execute themselves once with
the tunable added to ``GLIBC_TUNABLES`` (the same command line, ``sys.orig_argv``), where glibc
and the kernel's transparent huge pages (``always`` or ``madvise``) allow it and
``JAXCNN_HUGEPAGES`` is not ``0``. A program of your own gets the same with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python train.py``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")

__all__ = ["TUNABLE", "reexec_command", "use_hugepages"]


def _glibc_version() -> tuple[int, ...] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, OSError, ValueError):
        return None
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None


def _thp_mode() -> str | None:
    """The kernel's transparent huge page mode (the bracketed word), or None."""
    try:
        text = THP_SETTING.read_text()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")] if "[" in text and "]" in text else None


def reexec_command(env: Mapping[str, str], argv: Sequence[str], glibc: tuple[int, ...] | None,
                   thp: str | None) -> tuple[list[str], dict[str, str]] | None:
    """``(argv, env)`` to re-execute the command with the tunable, or None to keep the process:
    the tunable already set (by us or the user), ``JAXCNN_HUGEPAGES=0``, glibc older than 2.35
    or not glibc, or transparent huge pages off (``never``) or unknown."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if (env.get("JAXCNN_HUGEPAGES") == "0" or "glibc.malloc.hugetlb" in tunables
            or glibc is None or glibc < (2, 35) or thp not in ("always", "madvise")):
        return None
    return list(argv), {**env, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def use_hugepages() -> None:
    """Re-execute this process with the tunable where ``reexec_command`` says so (never returns
    then); otherwise return and go on as it is."""
    if sys.platform != "linux" or not getattr(sys, "orig_argv", None):
        return
    command = reexec_command(os.environ, sys.orig_argv, _glibc_version(), _thp_mode())
    if command is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command[0], command[1])
