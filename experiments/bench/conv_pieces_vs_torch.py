"""Each convolution of three training models, piece by piece, jaxcnn against PyTorch (issue 28).

For every conv layer of fashion-resnet, clips-cnn3d and fashion-cnn (channels last, float32,
CPU) and each piece of its training step (the forward ``conv``, the input gradient and the
weight gradient) this times jaxcnn's piece, jit-compiled as the lowering runs it
(``jaxcnn.conv``, ``conv_input_grad``, ``conv_weight_grad`` with ``impl="lax"``), against
PyTorch's: ``torch.nn.functional.conv2d/3d`` on channels_last tensors for the forward and
``torch.ops.aten.convolution_backward`` with an ``output_mask`` that picks one piece for each
gradient. Rounds interleave the two sides (each round one call of each, in turn), after a
warm-up; the table gives the medians and the median of the per-round ratios jaxcnn / PyTorch.
A first layer's input gradient (one input channel: the data) is never computed in training, so
it is left out. The form column says whether the piece ran the native kernels (``native``) or
one of XLA's forms (``xla``), read from the lowered program.

    OMP_WAIT_POLICY=PASSIVE python experiments/bench/conv_pieces_vs_torch.py \
        --json experiments/bench/issue28/pieces.json --markdown experiments/bench/issue28/pieces.md

``JAXCNN_NATIVE_ISA=avx2`` measures the 8-float build of the kernels on an AVX-512 CPU;
``--compare BEFORE.json AFTER.json`` prints two runs' ratios side by side. Besides wall-clock
time each call's CPU time (every thread of the process) is kept: on a machine other jobs load,
a call's wall-clock time counts the time its threads waited for a core, its CPU time only the
work it did.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxcnn
from jaxcnn._conv import native
from jaxcnn.bench.timing import matmul_peak

# (model, layer, batch, spatial sizes of x, C, O, kernel, stride, pad, how often in one step)
LAYERS = [
    ("fashion-resnet", "stem 1→32", 128, (28, 28), 1, 32, 3, 1, 1, 1),
    ("fashion-resnet", "32→32", 128, (28, 28), 32, 32, 3, 1, 1, 2),
    ("fashion-resnet", "32→64 s2", 128, (28, 28), 32, 64, 3, 2, 1, 1),
    ("fashion-resnet", "32→64 1x1 s2", 128, (28, 28), 32, 64, 1, 2, 0, 1),
    ("fashion-resnet", "64→64", 128, (14, 14), 64, 64, 3, 1, 1, 1),
    ("fashion-resnet", "64→128 s2", 128, (14, 14), 64, 128, 3, 2, 1, 1),
    ("fashion-resnet", "64→128 1x1 s2", 128, (14, 14), 64, 128, 1, 2, 0, 1),
    ("fashion-resnet", "128→128", 128, (7, 7), 128, 128, 3, 1, 1, 1),
    ("clips-cnn3d", "1→16", 64, (8, 16, 16), 1, 16, 3, 1, 1, 1),
    ("clips-cnn3d", "16→32", 64, (8, 8, 8), 16, 32, 3, 1, 1, 1),
    ("clips-cnn3d", "32→64", 64, (4, 4, 4), 32, 64, 3, 1, 1, 1),
    ("fashion-cnn", "1→32", 128, (28, 28), 1, 32, 3, 1, 1, 1),
    ("fashion-cnn", "32→64", 128, (14, 14), 32, 64, 3, 1, 1, 1),
    ("fashion-cnn", "64→128", 128, (7, 7), 64, 128, 3, 1, 1, 1),
]
PIECES = ("conv", "input_grad", "weight_grad")


def pieces(batch, sizes, c, o, k, stride, pad):
    """Per piece: (jaxcnn's jitted call, its operands, PyTorch's call)."""
    n = len(sizes)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *sizes, c)).astype(np.float32)
    w = (rng.standard_normal((*(k,) * n, c, o)) / np.sqrt(c * k ** n)).astype(np.float32)
    opts = dict(stride=stride, padding=pad, channels_last=True, impl="lax")
    y_shape = jax.eval_shape(lambda x, w: jaxcnn.conv(x, w, **opts), x, w).shape
    dy = rng.standard_normal(y_shape).astype(np.float32)
    jx, jw, jdy = (jax.device_put(a) for a in (x, w, dy))

    fmt = torch.channels_last if n == 2 else torch.channels_last_3d
    tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).contiguous(memory_format=fmt)
    tw = torch.from_numpy(np.moveaxis(w, (-1, -2), (0, 1)).copy()).contiguous(memory_format=fmt)
    tdy = torch.from_numpy(np.moveaxis(dy, -1, 1).copy()).contiguous(memory_format=fmt)
    tconv = torch.nn.functional.conv2d if n == 2 else torch.nn.functional.conv3d
    strides, pads = [stride] * n, [pad] * n

    def torch_backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            tdy, tx, tw, None, strides, pads, [1] * n, False, [0] * n, 1, mask)
    return {
        "conv": (jax.jit(lambda x, w: jaxcnn.conv(x, w, **opts)), (jx, jw),
                 lambda: tconv(tx, tw, stride=stride, padding=pad)),
        "input_grad": (jax.jit(lambda dy, w: jaxcnn.conv_input_grad(dy, w, x.shape, **opts)), (jdy, jw),
                       torch_backward([True, False, False])),
        "weight_grad": (jax.jit(lambda x, dy: jaxcnn.conv_weight_grad(x, dy, w.shape, **opts)), (jx, jdy),
                        torch_backward([False, True, False])),
    }


def form(fn, operands) -> str:
    text = fn.lower(*operands).as_text()
    return "native" if "jaxcnn_conv" in text or "jaxcnn_weight_grad" in text else "xla"


def timed(call) -> tuple[float, float]:
    """Wall-clock and CPU seconds (every thread of the process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(jax_call, torch_call, rounds: int, warmup: int = 3):
    """Per side, the (wall, CPU) seconds of each round; the sides alternate which goes first."""
    calls = {"jaxcnn": lambda: jax.block_until_ready(jax_call()), "torch": torch_call}
    for _ in range(warmup):
        for call in calls.values():
            call()
    times = {side: [] for side in calls}
    with torch.no_grad():
        for r in range(rounds):
            for side in (("jaxcnn", "torch") if r % 2 else ("torch", "jaxcnn")):
                times[side].append(timed(calls[side]))
    return times["jaxcnn"], times["torch"]


def measure(rounds: int) -> list[dict]:
    rows = []
    for model, layer, batch, sizes, c, o, k, stride, pad, count in LAYERS:
        for piece, (fn, operands, torch_call) in pieces(batch, sizes, c, o, k, stride, pad).items():
            if piece == "input_grad" and c == 1:
                continue   # the data's gradient: never computed in training
            jt, tt = interleaved(lambda: fn(*operands), torch_call, rounds)
            row = dict(model=model, layer=layer, piece=piece, count=count, form=form(fn, operands))
            for kind, at in (("", 0), ("cpu_", 1)):
                row[f"jaxcnn_{kind}ms"] = 1e3 * statistics.median(j[at] for j in jt)
                row[f"torch_{kind}ms"] = 1e3 * statistics.median(t[at] for t in tt)
                row[f"{kind}ratio"] = statistics.median(j[at] / t[at] for j, t in zip(jt, tt))
            rows.append(row)
            print(f"{model:15s} {layer:14s} {piece:12s} {row['form']:6s} jaxcnn {row['jaxcnn_ms']:7.2f} ms"
                  f"  torch {row['torch_ms']:7.2f} ms  ratio {row['ratio']:.2f}  CPU time ratio "
                  f"{row['cpu_ratio']:.2f}", flush=True)
    return rows


def compare(before: dict, after: dict) -> str:
    """Two runs' ratios side by side (``--compare BEFORE.json AFTER.json``): jaxcnn / PyTorch in
    wall-clock and in CPU time, before and after, per layer and piece."""
    old = {(r["model"], r["layer"], r["piece"]): r for r in before["rows"]}
    lines = ["| model | layer | ×/step | piece | form before → after | jaxcnn / PyTorch before | after "
             "| CPU time jaxcnn / PyTorch before | after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in after["rows"]:
        b = old.get((r["model"], r["layer"], r["piece"]))
        if b is None:
            continue
        forms = r["form"] if b["form"] == r["form"] else f"{b['form']} → {r['form']}"
        lines.append(f"| {r['model']} | {r['layer']} | {r['count']} | {r['piece']} | {forms} | {b['ratio']:.2f} | "
                     f"{r['ratio']:.2f} | {b['cpu_ratio']:.2f} | {r['cpu_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], info: dict) -> str:
    lines = [f"{info['cpu']}, ISA {info['isa']} ({info['vector_width']} floats a vector), matmul "
             f"{info['matmul_gflops']:.0f} GFLOP/s, torch {info['torch_threads']} threads, {info['rounds']} rounds; "
             "jaxcnn / PyTorch: median of the per-round ratios of wall-clock time, and of CPU time "
             "(every thread of the process: the work done, less sensitive to other jobs' load)", "",
             "| model | layer | ×/step | piece | jaxcnn form | jaxcnn ms | PyTorch ms | jaxcnn / PyTorch "
             "| CPU time jaxcnn / PyTorch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['layer']} | {r['count']} | {r['piece']} | {r['form']} | "
                     f"{r['jaxcnn_ms']:.2f} | {r['torch_ms']:.2f} | {r['ratio']:.2f} | {r['cpu_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="print two runs' JSON side by side instead of measuring")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.load(open(path)) for path in args.compare)
        print(compare(before, after), end="")
        return
    torch.set_num_threads(2)
    peak = matmul_peak(2048, 5)
    info = dict(cpu=platform.processor() or platform.machine(), isa=os.environ.get(native.ISA_ENV, "native"),
                vector_width=native.vector_width(), matmul_gflops=peak["gflops"], torch_threads=2,
                rounds=args.rounds, jax=jax.__version__, torch=torch.__version__,
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{info['cpu']}, ISA {info['isa']}, matmul {peak['gflops']:.0f} GFLOP/s", flush=True)
    rows = measure(args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info=info, rows=rows), f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, info))


if __name__ == "__main__":
    main()
