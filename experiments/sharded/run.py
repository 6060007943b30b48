"""The hand-written halo exchange (``jaxcnn.sharded.conv``) against XLA's partitioner (GSPMD:
``jax.jit(jaxcnn.conv)`` on an input placed split along the same spatial axis).

For a 3D volume split along its depth and a long 1D signal split along its length, over 8
devices (forced CPU devices unless the process already has 8), float32, padding "SAME":

- time, forward and forward+backward (``value_and_grad`` of ``Σ y·ct`` w.r.t. ``x`` and
  ``w``), jit-compiled, interleaved in rounds after a warm-up (``jaxcnn.bench.timing``),
  medians, every call ``block_until_ready``;
- compiled memory (``jax.jit(f).lower(...).compile().memory_analysis()``): temporaries,
  peak where the release reports it, per device;
- communication: the collectives in each compiled program (counted in its HLO, with the bytes
  of their results per device) and the halo the exchange sends per step, against an
  all-gather of the input;
- agreement: both outputs and gradients against the unsharded conv.

    python experiments/sharded/run.py [--rounds R] [--quick]

writes experiments/sharded/results.json and table.md (results.md quotes it, with what it
means). Forced CPU devices share the
machine's cores: times measure the programs' overhead and structure, not a scaling.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcnn
from jaxcnn._compat import axis_types, make_mesh
from jaxcnn._shapes import dilated_size, halo_widths, resolve_padding
from jaxcnn.bench.report import device_info, load_average
from jaxcnn.bench.timing import time_interleaved

HERE = Path(__file__).resolve().parent
SHARDS = 8
# name: (x shape (N, C, *S), w shape (O, C, *K), split spatial axis)
CASES = {
    "3D volume 64×48×48, 8→8 channels, kernel 3³, split along depth":
        ((1, 8, 64, 48, 48), (8, 8, 3, 3, 3), 0),
    "1D signal 2¹⁷ samples, 16→16 channels, kernel 9, split along time":
        ((2, 16, 2 ** 17), (16, 16, 9), 0),
}
QUICK = {
    "3D volume 16×12×12 (quick)": ((1, 4, 16, 12, 12), (4, 4, 3, 3, 3), 0),
    "1D signal 2¹² samples (quick)": ((2, 4, 2 ** 12), (4, 4, 9), 0),
}
COLLECTIVES = ("collective-permute", "all-gather", "all-reduce", "all-to-all", "reduce-scatter")
DTYPE_BYTES = {"f32": 4, "f64": 8, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1}


def contenders(mesh, split_axis: int, split: P, ct):
    """``{name: (forward, forward+backward)}``, each a jitted function of ``(x, w)`` whose
    results stay where they are computed (``y`` and ``dx`` split like ``x``, the loss and
    ``dw`` replicated), so that neither program gathers a result for its caller."""
    y_out = NamedSharding(mesh, split)
    grads_out = (NamedSharding(mesh, P()), (NamedSharding(mesh, split), NamedSharding(mesh, P())))
    kwargs = dict(padding="SAME")
    halo = lambda x, w: jaxcnn.sharded.conv(x, w, mesh=mesh, axis_name="s",
                                            spatial_axis=split_axis, **kwargs)
    gspmd = lambda x, w: jaxcnn.conv(x, w, **kwargs)
    result = {}
    for name, f in (("halo exchange", halo), ("GSPMD", gspmd)):
        loss = lambda x, w, f=f: jnp.sum(f(x, w) * ct)     # (vdot would flatten: a gather)
        result[name] = (jax.jit(f, out_shardings=y_out),
                        jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), out_shardings=grads_out))
    return result


def collectives(compiled_text: str) -> dict[str, dict[str, int]]:
    """Each collective kind in a compiled HLO module: how many, and the bytes of their results
    (per device: an SPMD module is one device's program)."""
    found = {}
    for kind in COLLECTIVES:
        pattern = re.compile(r"= (\(?[a-z0-9]+\[[0-9,]*\][^=]*?) " + re.escape(kind) + r"(?:-start)?\(")
        count, size = 0, 0
        for match in pattern.finditer(compiled_text):
            count += 1
            for dtype, dims in re.findall(r"([a-z0-9]+)\[([0-9,]*)\]", match.group(1)):
                size += DTYPE_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
        if count:
            found[kind] = {"count": count, "bytes": size}
    return found


def memory(jitted, *args) -> dict[str, int | None]:
    compiled = jitted.lower(*args).compile()
    analysis = compiled.memory_analysis()
    return {"temp_bytes": int(analysis.temp_size_in_bytes),
            "peak_bytes": int(getattr(analysis, "peak_memory_in_bytes", -1)),
            "argument_bytes": int(analysis.argument_size_in_bytes),
            "output_bytes": int(analysis.output_size_in_bytes),
            "collectives": collectives(compiled.as_text())}


def halo_traffic(x_shape, w_shape, split_axis: int) -> dict[str, int]:
    """Bytes the exchange sends per forward step (the backward sends as much back), against an
    all-gather of the input (every device receiving the other devices' blocks)."""
    spatial = x_shape[2:]
    k, length = w_shape[2 + split_axis], spatial[split_axis]
    (lo, _), = resolve_padding("SAME", (length,), (k,), (1,), (1,))
    left, right = halo_widths(dilated_size(k, 1), 1, lo)
    slice_bytes = 4 * x_shape[0] * x_shape[1] * int(np.prod(spatial)) // length
    return {"halo_forward": (SHARDS - 1) * (left + max(right, 0)) * slice_bytes,
            "all_gather_input": (SHARDS - 1) * length * slice_bytes,
            "input": slice_bytes * length}


def run_case(name: str, x_shape, w_shape, split_axis: int, mesh, rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
    y_shape = jax.eval_shape(lambda x, w: jaxcnn.conv(x, w, padding="SAME"), x, w).shape
    ct = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)
    split = [None] * len(x_shape)
    split[2 + split_axis] = "s"
    x_split = jax.device_put(x, NamedSharding(mesh, P(*split)))
    w_rep = jax.device_put(w, NamedSharding(mesh, P()))
    ct_split = jax.device_put(ct, NamedSharding(mesh, P(*split)))
    fns = contenders(mesh, split_axis, P(*split), ct_split)
    reference = jax.jit(jax.value_and_grad(
        lambda x, w: jnp.sum(jaxcnn.conv(x, w, padding="SAME") * ct), argnums=(0, 1)))
    ref_loss, ref_grads = reference(x, w)
    ref_y = jax.jit(lambda x, w: jaxcnn.conv(x, w, padding="SAME"))(x, w)
    traffic = halo_traffic(x_shape, w_shape, split_axis)
    rows = []
    for mode, index in (("fwd", 0), ("fwd+bwd", 1)):
        calls = {c: (lambda f=fns[c][index]: f(x_split, w_rep), jax.block_until_ready) for c in fns}
        times, outs, failures = time_interleaved(calls, rounds)
        for contender in fns:
            row = {"case": name, "mode": mode, "contender": contender,
                   "x_shape": list(x_shape), "w_shape": list(w_shape)}
            if contender in failures:
                rows.append(dict(row, error=failures[contender]))
                continue
            out = outs[contender]
            if mode == "fwd":
                err = float(jnp.max(jnp.abs(out - ref_y)) / jnp.max(jnp.abs(ref_y)))
            else:
                err = max(float(jnp.max(jnp.abs(g - r)) / jnp.max(jnp.abs(r)))
                          for g, r in zip(out[1], ref_grads))
            rows.append(dict(row, median_ms=statistics.median(times[contender]),
                             min_ms=min(times[contender]), rounds=len(times[contender]),
                             rel_err_vs_unsharded=err,
                             memory=memory(fns[contender][index], x_split, w_rep), **traffic))
    return rows


def _mb(value: int | None) -> str:
    return "—" if value is None or value < 0 else f"{value / 2 ** 20:.2f}"


def _size(value: int) -> str:
    return f"{value / 2 ** 10:.1f} KiB" if value < 2 ** 20 else f"{value / 2 ** 20:.2f} MiB"


def _collective_cell(found: dict) -> str:
    if not found:
        return "none"
    return ", ".join(f"{v['count']}× {k} ({_size(v['bytes'])})" for k, v in found.items())


def markdown(rows: list[dict], info: dict) -> str:
    lines = ["| case | mode | contender | median ms | temp MiB | peak MiB | collectives per device "
             "(result bytes) | rel. err vs unsharded |", "|---|---|---|---:|---:|---:|---|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['mode']} | {r['contender']} | failed: {r['error']} | | | | |")
            continue
        m = r["memory"]
        lines.append(f"| {r['case']} | {r['mode']} | {r['contender']} | {r['median_ms']:.2f} | "
                     f"{_mb(m['temp_bytes'])} | {_mb(m['peak_bytes'])} | "
                     f"{_collective_cell(m['collectives'])} | {r['rel_err_vs_unsharded']:.1e} |")
    traffic = ["", "| case | input | halo sent per forward step (all shards) | all-gather of the input | ratio |",
               "|---|---:|---:|---:|---:|"]
    for case in dict.fromkeys(r["case"] for r in rows):
        r = next(r for r in rows if r["case"] == case and "halo_forward" in r)
        traffic.append(f"| {case} | {_size(r['input'])} | {_size(r['halo_forward'])} | "
                       f"{_size(r['all_gather_input'])} | {r['halo_forward'] / r['all_gather_input']:.2e} |")
    head = (f"{SHARDS} devices ({info['platform']}, {info.get('cpu', '?')}, "
            f"{info.get('cpu_cores', '?')} cores, jax {info['jax']}), float32, padding SAME; "
            f"load average {info.get('load_average')}. Medians of interleaved rounds after "
            f"warm-up. Forced CPU devices share the cores: the times compare the two programs' "
            f"overhead, not a multi-device speed-up.")
    return "\n".join([head, ""] + lines + traffic) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, to check the script")
    options = parser.parse_args(argv)
    if jax.device_count() < SHARDS:
        print(f"needs {SHARDS} devices; found {jax.device_count()}", file=sys.stderr)
        return 1
    kinds = axis_types()
    mesh = make_mesh((SHARDS,), ("s",), kinds[1] if kinds else None)
    rows = []
    for name, (x_shape, w_shape, split) in (QUICK if options.quick else CASES).items():
        print(f"{name} ...", file=sys.stderr)
        rows += run_case(name, x_shape, w_shape, split, mesh, options.rounds)
    info = dict(device_info(), load_average=load_average())
    suffix = "_quick" if options.quick else ""
    (HERE / f"results{suffix}.json").write_text(json.dumps({"device": info, "rows": rows}, indent=1))
    (HERE / f"table{suffix}.md").write_text(markdown(rows, info))
    print(markdown(rows, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
