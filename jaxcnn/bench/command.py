r"""``jaxcnn bench``: time jaxcnn's ops beside ``jax.grad`` of plain ``lax`` and PyTorch.

For each case of a fixed suite (ResNet-like 3×3, a 7×7 stride-2 stem, depthwise, 1D, 3D, the
layers of the training models, ``conv_transpose``, pooling), dtype and layout, one run times
``fwd`` (the op) and ``fwd+bwd`` (``value_and_grad`` of ``Σ y·ct`` for a fixed random ``ct``,
with respect to ``x`` and ``w``), jit-compiled, of: ``lax`` and ``manual`` (jaxcnn's two impls;
``jaxcnn`` for pooling), ``jax`` (the baseline: JAX autodiff of plain ``lax.conv_general_dilated``
or ``lax.reduce_window``; ratio = ms / its ms) and ``torch`` (``torch.nn.functional``, the
channels-last rows in ``torch.channels_last`` memory format, cuDNN on a GPU) where installed.
Times are medians of synchronised calls after a compiling call and a warm-up. A conv costs
``2·N·O·(C/g)·∏K·∏S_out`` FLOPs forward, 3× that forward+backward (``dx`` and ``dw`` each cost
one forward); GFLOP/s are also a fraction of a square float32 matmul timed on the same device at
the start. Every output is compared with the baseline's (``max_rel_err``): a fast wrong answer
shows. Shapes are full on a GPU, shrunk on CPU (each case's ``cpu`` sizes), tiny with ``--quick``.

``jaxcnn bench --train [--models ...]``: the training step of every named model instead, beside
the same network in plain lax, in stock Flax NNX and in PyTorch as its users write it, eager
and under ``torch.compile`` (``jaxcnn.bench.train_step``).

The suite (``Case``, ``CASES``) lives in ``jaxcnn.bench.cases``, the contenders in
``jaxcnn.bench.contenders``, the timing in ``jaxcnn.bench.timing``, one row in
``jaxcnn.bench.rows``, the table in ``jaxcnn.bench.report``; this module is the command.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import jax

from jaxcnn.bench.cases import CASES, QUICK_CASES, available, describe, select_cases
from jaxcnn.bench.contenders import TorchSide
from jaxcnn.bench.report import device_info, load_average, markdown_table, print_rich_table
from jaxcnn.bench.rows import bench_row
from jaxcnn.bench.timing import matmul_peak

LAYOUTS = ("channels_first", "channels_last")
MODES = ("fwd", "fwd+bwd")
DTYPES = ("float32", "bfloat16", "bfloat16-f32acc")  # the last: bf16 in, preferred_element_type f32
IMPLS = ("jax", "lax", "manual", "jaxcnn", "torch")
SCALES = ("auto", "full", "cpu", "quick")


def _choices(text: str, options: Sequence[str], name: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in options]
    if bad or not values:
        raise ValueError(f"{name}: expected a comma-separated list from {tuple(options)}; got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jaxcnn bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size: tiny shapes, 1 repeat, float32")
    p.add_argument("--json", metavar="PATH", help="write every row and the device to PATH")
    p.add_argument("--markdown", metavar="PATH", help="write the results table to PATH")
    p.add_argument("--cases", help="comma-separated names or fnmatch patterns ('training': the training layers)")
    p.add_argument("--dtype", help=f"comma-separated, from {DTYPES} (default float32,bfloat16; quick: float32)")
    p.add_argument("--layout", default=",".join(LAYOUTS), help=f"comma-separated, from {LAYOUTS}")
    p.add_argument("--mode", default=",".join(MODES), help=f"comma-separated, from {MODES}")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {IMPLS} (jax always runs)")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (default: 1 quick, 5 CPU, 20 GPU)")
    p.add_argument("--scale", default="auto", choices=SCALES,
                   help="shapes: full (GPU), cpu (shrunk), quick; auto picks by device and --quick")
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    p.add_argument("--train", action="store_true",
                   help="the training step of every named model instead (jaxcnn.bench.train_step)")
    p.add_argument("--models", help="with --train: comma-separated model names (default: all)")
    p.add_argument("--batch", type=int, help="with --train: batch size (default: each model's)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.train:
        from jaxcnn.bench import train_step
        names = _choices(",".join(train_step.TRAIN_MODELS) if args.models is None else args.models,
                         train_step.TRAIN_MODELS, "--models")
        repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
        if repeats < 1:
            raise ValueError(f"--repeats: expected a positive int; got {repeats}")
        if args.batch is not None and args.batch < 1:
            raise ValueError(f"--batch: expected a positive int; got {args.batch}")
        return train_step.run(names, repeats, args.markdown, args.json, 2 if args.quick else args.batch)
    platform_name = jax.devices()[0].platform
    scale = args.scale if args.scale != "auto" else (
        "quick" if args.quick else "cpu" if platform_name == "cpu" else "full")
    cases = select_cases(args.cases or (",".join(QUICK_CASES) if scale == "quick" else None))
    if args.list:
        for case in cases:
            print(f"{case.name:<18} {case.op:<15} full {describe(case):<28} cpu {describe(case.sized('cpu'))}")
        return 0
    if not cases:
        raise ValueError(f"--cases: expected names or patterns matching {[c.name for c in CASES]}; got {args.cases!r}")
    dtypes = _choices(args.dtype or ("float32" if scale == "quick" else "float32,bfloat16"), DTYPES, "--dtype")
    layouts = _choices(args.layout, LAYOUTS, "--layout")
    modes = _choices(args.mode, MODES, "--mode")
    impls = _choices(args.impls, IMPLS, "--impls")
    repeats = args.repeats if args.repeats is not None else (
        1 if scale == "quick" else 5 if platform_name == "cpu" else 20)
    if repeats < 1:
        raise ValueError(f"--repeats: expected a positive int; got {repeats}")
    torch_side = None
    if "torch" in impls:
        try:
            torch_side = TorchSide()
        except ImportError:
            print("torch is not installed: no PyTorch column", file=sys.stderr)
    matmul_n = 256 if scale == "quick" else 2048 if platform_name == "cpu" else 8192
    peak = matmul_peak(matmul_n, max(repeats, 3))
    info = device_info()
    print(f"device: {info['device_kind']} ({platform_name}), vector ISA {info['vector_isa']}; float32 "
          f"{matmul_n}² matmul {peak['gflops']:.1f} GFLOP/s; scale {scale}, {repeats} repeats", flush=True)
    print(markdown_table([]), flush=True)   # the columns, before the rows come
    rows, skipped, load_start = [], [], load_average()
    for case in cases:
        reason = available(case)
        if reason:
            skipped.append({"case": case.name, "reason": reason})
            print(f"skip {case.name}: {reason}", flush=True)
            continue
        sized = case.sized(scale)
        for dtype in dtypes:
            if dtype == "bfloat16-f32acc" and case.op != "conv":
                continue   # only conv takes preferred_element_type
            for layout in layouts:
                for mode in modes:
                    row = bench_row(sized, dtype, layout == "channels_last", mode, impls, repeats,
                                    torch_side, peak["gflops"], 0.0 if scale == "quick" else 1.0)
                    rows.append(row)
                    print(markdown_table([row]).splitlines()[-1], flush=True)
    report = {"command": "jaxcnn bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": info, "matmul": peak, "scale": scale, "repeats": repeats,
              "load_average": {"start": load_start, "end": load_average()},
              "rows": rows, "skipped": skipped}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(rows) + "\n")
    print_rich_table(rows, sys.stdout)
    bad = [r["case"] for r in rows if r["failures"] or not r["agree"]]
    if bad:
        print(f"failures or disagreements in: {sorted(set(bad))}", file=sys.stderr)
    return 1 if bad else 0
