"""Compiled temp memory of fwd+bwd, float32, every conv and max-pool row of ``jaxcnn bench``
at CPU scale: ``jax.grad`` of plain lax against jaxcnn's ``impl="lax"`` and ``impl="manual"``
(pooling: ``jaxcnn``). XLA's own numbers (``memory_analysis().temp_size_in_bytes``), no timing.

    python experiments/bench/memory.py [--markdown experiments/bench/memory.md] [--scale cpu]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from jaxcnn import bench
from jaxcnn.bench.rows import _jax_runner


def memory_rows(scale: str = "cpu") -> list[dict]:
    rows = []
    for case in bench.CASES:
        if case.op == "avg_pool":
            continue
        sized = case.sized(scale)
        pooling = case.op == "max_pool"
        for channels_last in (False, True):
            shapes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in sized.shapes(channels_last) if s]
            n = len(shapes) - 1
            mib = {"jax": bench.compiled_temp_bytes(
                _jax_runner(bench.baseline_fn(sized, channels_last), "fwd+bwd", n), *shapes) / 2 ** 20}
            for impl in ("jaxcnn",) if pooling else ("lax", "manual"):
                run = _jax_runner(bench.jaxcnn_fn(sized, channels_last, impl), "fwd+bwd", n)
                mib[impl] = bench.compiled_temp_bytes(run, *shapes) / 2 ** 20
            rows.append({"case": case.name, "shape": bench.describe(sized),
                         "layout": "N…C" if channels_last else "NC…", "mib": mib})
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| case | shape | layout | jax MiB | lax MiB | manual MiB | lax/jax | manual/jax |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["mib"]
        ours = m.get("lax", m.get("jaxcnn"))
        manual, base = m.get("manual"), m["jax"]
        manual_mib = "—" if manual is None else f"{manual:.3g}"
        manual_ratio = "—" if manual is None else f"{manual / base:.2f}"
        lines.append(f"| {r['case']} | {r['shape']} | {r['layout']} | {base:.3g} | {ours:.3g} | "
                     f"{manual_mib} | {ours / base:.2f} | {manual_ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--markdown", help="write the table to this path")
    p.add_argument("--scale", default="cpu", choices=("cpu", "full", "quick"))
    args = p.parse_args()
    table = markdown(memory_rows(args.scale))
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
