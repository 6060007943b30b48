"""``jaxcnn._hugepages``: when ``jaxcnn train`` and ``jaxcnn bench`` re-execute themselves with
glibc's huge-page tunable, and that they do so exactly once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcnn import _hugepages
from jaxcnn._hugepages import TUNABLE, reexec_command

ARGV = ["/venv/bin/python", "-m", "jaxcnn", "bench", "--train"]


@pytest.mark.parametrize("env, glibc, thp, tunables", [
    ({}, (2, 36), "madvise", TUNABLE),
    ({}, (2, 35), "always", TUNABLE),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, (2, 36), "madvise", f"glibc.malloc.arena_max=2:{TUNABLE}"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise", None),   # the user's choice stands
    ({"JAXCNN_HUGEPAGES": "0"}, (2, 36), "madvise", None),
    ({}, (2, 34), "madvise", None),      # the tunable came in glibc 2.35
    ({}, None, "madvise", None),         # not glibc (musl, another OS)
    ({}, (2, 36), "never", None),
    ({}, (2, 36), None, None),
], ids=["madvise", "always", "other-tunables", "already-set", "opted-out", "old-glibc", "no-glibc",
        "thp-never", "thp-unknown"])
def test_reexec_command(env, glibc, thp, tunables):
    command = reexec_command(env, ARGV, glibc, thp)
    if tunables is None:
        assert command is None
        return
    argv, new_env = command
    assert argv == ARGV and new_env["GLIBC_TUNABLES"] == tunables
    assert {k: v for k, v in new_env.items() if k != "GLIBC_TUNABLES"} == {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}


def test_the_process_reexecutes_once(tmp_path):
    """A script that calls ``use_hugepages`` and counts its starts in a file: where the tunable
    applies here, it starts twice (the second time with the tunable) and then goes on; else once."""
    script = tmp_path / "start.py"
    starts = tmp_path / "starts"
    script.write_text(
        "import os, sys, json\n"
        f"open({str(starts)!r}, 'a').write(json.dumps(os.environ.get('GLIBC_TUNABLES')) + '\\n')\n"
        "from jaxcnn._hugepages import use_hugepages\n"
        "use_hugepages()\n"
        "print('done')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXCNN_HUGEPAGES")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(_hugepages.__file__).parents[1]), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "done"
    seen = [json.loads(line) for line in starts.read_text().splitlines()]
    applies = reexec_command(env, ["x"], _hugepages._glibc_version(), _hugepages._thp_mode()) is not None
    assert seen == ([None, TUNABLE] if applies and sys.platform == "linux" else [None])
