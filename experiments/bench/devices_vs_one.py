"""A training step with its batch split over 2 CPU devices against the same step on 1 (issue 28).

Usage: ``python experiments/bench/devices_vs_one.py [--models a,b] [--repeats 15] [--out DIR]``.
The process starts JAX with two forced CPU devices (``--xla_force_host_platform_device_count=2``)
on this machine's two cores, builds each model's jaxcnn step (``jaxcnn.bench.train_step.jax_step``:
forward, gradient and AdamW, channels last, ``impl="lax"``) and compiles it twice: on one device,
and with the batch split over a 2-device mesh (the parameters replicated), as ``jaxcnn train
--devices 2`` does. Both are timed interleaved in rounds (``time_interleaved``: medians after
warm-up, ``block_until_ready``), with the per-round ratio; the compiled program of each is
searched for the native kernels' custom calls and for the operands they read (in the 2-device
program each call should read half the batch). Writes ``devices.json`` and ``devices.md`` into
``--out`` (default ``experiments/bench/issue28``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from jaxcnn import models  # noqa: E402
from jaxcnn.bench import train_step  # noqa: E402
from jaxcnn.bench.timing import matmul_peak, paired_ratios, time_interleaved  # noqa: E402

HERE = Path(__file__).parent
BATCH = {"mnist1d-resnet": 100, "fashion-cnn": 128, "fashion-resnet": 128, "clips-cnn3d": 64}


def kernel_batches(compiled) -> list[int]:
    """The leading (batch) size of every native kernel call's first operand in the program."""
    sizes = []
    for line in compiled.as_text().splitlines():
        if 'custom_call_target="jaxcnn_' in line:
            operand = re.search(r"operand_layout_constraints=\{f32\[(\d+)", line)
            if operand:
                sizes.append(int(operand.group(1)))
    return sizes


def step_on(name: str, devices: int):
    """``(compiled, args)`` of the model's step with its batch split over ``devices``."""
    x, y = train_step.batch_data(name, BATCH[name])
    made = train_step.jax_step(name, "lax", x, y, channels_last=True)
    compiled, args = made["compiled"]["step"]
    if devices == 1:
        return compiled, args
    mesh = Mesh(np.array(jax.devices()[:devices]), ("batch",))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
    params, opt_state, xs, ys, key = args
    args = (jax.device_put(params, replicated), jax.device_put(opt_state, replicated),
            jax.device_put(xs, split), jax.device_put(ys, split), jax.device_put(key, replicated))
    return jax.jit(made["step"]).lower(*args).compile(), args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BATCH))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(HERE / "issue28"))
    opts = parser.parse_args()
    if jax.device_count() < 2:
        sys.exit("needs two CPU devices: XLA_FLAGS was read before this script set it")
    peak = matmul_peak(2048, 5)
    rows = []
    for name in opts.models.split(","):
        one, one_args = step_on(name, 1)
        two, two_args = step_on(name, 2)
        calls = {"1 device": (lambda: one(*one_args), jax.block_until_ready),
                 "2 devices": (lambda: two(*two_args), jax.block_until_ready)}
        times, _, failures = time_interleaved(calls, opts.repeats, min_seconds=3.0)
        ratio = paired_ratios(times, "1 device").get("2 devices")
        rows.append({"model": name, "batch": BATCH[name],
                     "ms": {k: statistics.median(v) for k, v in times.items()}, "ratio": ratio,
                     "kernel_batches": {"1 device": sorted(set(kernel_batches(one))),
                                        "2 devices": sorted(set(kernel_batches(two)))},
                     "failures": failures})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"matmul_gflops": peak["gflops"], "devices": [str(d) for d in jax.devices()],
              "jax": jax.__version__, "rows": rows}
    (out / "devices.json").write_text(json.dumps(report, indent=1))
    lines = [f"2 forced CPU devices on 2 cores against 1, matmul {peak['gflops']:.0f} GFLOP/s, "
             f"jax {jax.__version__}.", "",
             "| model | batch | 1 device ms | 2 devices ms | 2 / 1 (paired) | kernel batch, 1 device | kernel batch, 2 devices |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['ms'].get('1 device', float('nan')):.1f} | "
                     f"{r['ms'].get('2 devices', float('nan')):.1f} | {r['ratio'] or float('nan'):.2f} | "
                     f"{r['kernel_batches']['1 device']} | {r['kernel_batches']['2 devices']} |")
    (out / "devices.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
