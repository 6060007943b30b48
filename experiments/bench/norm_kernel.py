"""GroupNorm (and GroupNorm + ReLU) forward and VJP: the native kernels against the XLA forms.

At fashion-cnn's and fashion-resnet's shapes (channels last, float32, 8 groups), each op's
forward and VJP in one jit-compiled program, as in a training step: ``jaxcnn.group_norm`` and
``jax.nn.relu(jaxcnn.group_norm(...))`` (what the XLA forms compile; ``nn.serial`` ran this
before the fusion) against ``jaxcnn.norm.group_norm_relu`` (one kernel call each way), each
compiled with the kernels and without them (``normalising.uses_kernels`` patched to False:
``pool_kernels.kernels_off``).
With ``--steps``, also the fashion-cnn and fashion-resnet training steps (``jaxcnn.bench
.train_step.jax_step``, lax, channels last, batch 128: ``norm_dropout.step_rows``) compiled with
the GroupNorm kernels and without them. Medians of interleaved rounds after a warm-up
(``norm_dropout.interleaved``), so a shared machine's load falls on every contender alike; the
ratios are the result.

    python experiments/bench/norm_kernel.py [--rounds R] [--json PATH] [--markdown PATH] [--cpu-time]
                                             [--steps]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn._conv.native import normalising
from jaxcnn.norm import group_norm_relu

sys.path.insert(0, str(Path(__file__).parent))
import norm_dropout  # noqa: E402
from norm_dropout import forward_and_vjp, interleaved, step_rows  # noqa: E402
from pool_kernels import kernels_off  # noqa: E402

SHAPES = ((128, 28, 28, 32), (128, 14, 14, 64))
GROUPS = 8


def programs(shape):
    """The contenders at ``shape``: name → a call of a compiled forward+VJP program."""
    rng = np.random.default_rng(0)
    x, dy = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(2))
    scale, bias = (jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32) for _ in range(2))

    def plain(x, s, b):
        return jaxcnn.group_norm(x, GROUPS, s, b, channels_last=True)

    def separate(x, s, b):
        return jax.nn.relu(plain(x, s, b))

    def fused(x, s, b):
        return group_norm_relu(x, GROUPS, s, b, channels_last=True)

    def compiled(fn):
        program = forward_and_vjp(fn)
        program.lower(x, scale, bias, dy).compile()
        return lambda: program(x, scale, bias, dy)
    calls = {"gn kernel": compiled(plain), "gn+relu fused kernel": compiled(fused),
             "gn+relu kernel, relu apart": compiled(separate)}
    with kernels_off(normalising):
        calls.update({"gn XLA": compiled(plain), "gn+relu XLA": compiled(separate)})
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--cpu-time", action="store_true",
                        help="process CPU time (pin to one core, one XLA thread: norm_dropout.py's docstring)")
    parser.add_argument("--steps", action="store_true", help="also time the fashion-cnn and fashion-resnet steps")
    args = parser.parse_args()
    if args.cpu_time:
        norm_dropout.CLOCK = time.process_time
    results = {}
    for shape in SHAPES:
        name = "×".join(map(str, shape))
        results[name] = {k: v * 1e3 for k, v in interleaved(programs(shape), args.rounds).items()}
        print(name, json.dumps({k: round(v, 3) for k, v in results[name].items()}), flush=True)
    lines = ["| fwd+VJP, float32, channels last, 8 groups | kernel ms | XLA form ms | XLA / kernel |",
             "|---|---:|---:|---:|"]
    for name, ms in results.items():
        lines.append(f"| GroupNorm {name} | {ms['gn kernel']:.2f} | {ms['gn XLA']:.2f} | "
                     f"{ms['gn XLA'] / ms['gn kernel']:.2f} |")
        lines.append(f"| GroupNorm+ReLU {name}, fused | {ms['gn+relu fused kernel']:.2f} | {ms['gn+relu XLA']:.2f} | "
                     f"{ms['gn+relu XLA'] / ms['gn+relu fused kernel']:.2f} |")
        lines.append(f"| GroupNorm+ReLU {name}, ReLU apart | {ms['gn+relu kernel, relu apart']:.2f} | "
                     f"{ms['gn+relu XLA']:.2f} | {ms['gn+relu XLA'] / ms['gn+relu kernel, relu apart']:.2f} |")
    if args.steps:
        variants = {"kernels": normalising.uses_kernels, "XLA": lambda *a, **k: False}
        for model in ("fashion-cnn", "fashion-resnet"):
            ms = results[f"{model} step"] = step_rows(model, normalising, "uses_kernels", variants, args.rounds)
            lines.append(f"| {model} training step (batch 128) | {ms['kernels']:.1f} | {ms['XLA']:.1f} | "
                         f"{ms['XLA'] / ms['kernels']:.2f} |")
    table = "\n".join(lines)
    print(table)
    meta = dict(rounds=args.rounds, clock="process CPU time" if args.cpu_time else "wall", xla_flags=os.environ.get("XLA_FLAGS", ""), load=os.getloadavg(),
                jax=jax.__version__)
    if args.json:
        args.json.write_text(json.dumps(dict(meta=meta, ms=results), indent=1) + "\n")
    if args.markdown:
        command = (f"python experiments/bench/norm_kernel.py --rounds {args.rounds}{' --cpu-time' * args.cpu_time}"
                   f"{' --steps' * args.steps}")
        args.markdown.write_text(f"# GroupNorm kernels vs the XLA forms\n\n`{command}` (XLA_FLAGS={meta['xla_flags']!r}, "
                                 f"{meta['clock']}); load average at the end {meta['load']}.\n\n{table}\n")


if __name__ == "__main__":
    main()
