"""XLA's SPMD partitioner on lhs-dilated convolutions split along a spatial axis (plain JAX).

Each configuration: a 2D ``jax.lax.conv_general_dilated`` (channels last, float32) whose first
spatial axis is split over 2 CPU devices of an Auto mesh under ``jax.jit``, against the same
convolution on one device. Configurations run in a child process that is restarted after an
abort (a failed check inside XLA ends the process). Writes ``results.md`` beside this file.

    python experiments/xla_partitioner_conv/sweep.py
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

# (L, K, lhs_dilation, rhs_dilation, lo, hi, stride) along the split axis.
GRID = list(itertools.product((2, 4, 6), (1, 2, 4), (1, 2, 3), (1, 3), (0, 3, 9), (0, 3, 9), (1, 3)))


def child(start: int) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = jax.make_mesh((2,), ("d",), devices=jax.devices()[:2])
    for index in range(start, len(GRID)):
        size, k, lhs, rhs, lo, hi, stride = GRID[index]
        x = np.random.default_rng(0).standard_normal((1, size, 3, 2)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((k, 1, 2, 2)).astype(np.float32)

        def conv(x, w):
            return jax.lax.conv_general_dilated(x, w, (stride, 1), [(lo, hi), (0, 0)], lhs_dilation=(lhs, 1),
                                                rhs_dilation=(rhs, 1), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        try:
            want = np.asarray(conv(x, w))
        except Exception:
            print(index, "invalid", flush=True)
            continue
        if want.size == 0 or want.shape[1] % 2:
            print(index, "invalid", flush=True)
            continue
        print(index, "started", flush=True)
        split = NamedSharding(mesh, P(None, "d"))
        try:
            got = np.asarray(jax.jit(conv, out_shardings=split)(jax.device_put(x, split), w))
            print(index, "ok" if np.allclose(got, want, atol=1e-4) else "wrong values", flush=True)
        except Exception as err:
            print(index, "error: " + str(err).splitlines()[0][:90].replace("|", "/"), flush=True)


def main() -> None:
    status, start = {}, 0
    while start < len(GRID):
        run = subprocess.run([sys.executable, __file__, "--child", str(start)], capture_output=True, text=True)
        for line in run.stdout.splitlines():
            index, verdict = line.split(" ", 1)
            status[int(index)] = verdict
        last = max(status, default=start - 1)
        if run.returncode == 0:
            break
        status[last] = "abort (process killed by a failed check)"
        start = last + 1
    tried = {i: v for i, v in status.items() if v != "invalid"}
    failed = {i: v for i, v in tried.items() if v != "ok"}
    import jax
    lines = [f"jax {jax.__version__}, 2 CPU devices, Auto mesh, jit; the first spatial axis split in two.",
             "", f"{len(tried)} valid configurations, {len(failed)} failed; every failure has lhs_dilation > 1 "
             f"({sum(GRID[i][2] > 1 for i in failed)} of {len(failed)}).", "",
             "| L | K | lhs_dilation | rhs_dilation | pad lo | pad hi | stride | result |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {' | '.join(map(str, GRID[i]))} | {v} |" for i, v in sorted(failed.items())]
    (Path(__file__).parent / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:3]))


if __name__ == "__main__":
    child(int(sys.argv[2])) if sys.argv[1:2] == ["--child"] else main()
