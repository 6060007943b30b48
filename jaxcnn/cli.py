"""``jaxcnn`` command line: ``jaxcnn {gradcheck,train,bench,fuzz,summary} [args]``.

Each subcommand lives with its module (``jaxcnn.<module>.main(argv) -> int``) and is imported
only when asked for, so ``jaxcnn gradcheck`` never loads the training stack.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "gradcheck": ("jaxcnn.gradcheck.command", "verify every hand-written VJP against autodiff and finite differences"),
    "train": ("jaxcnn.train", "train a named model on MNIST-1D, Fashion-MNIST or 3D clips"),
    "bench": ("jaxcnn.bench.command", "time forward and forward+backward against jax.grad of lax and PyTorch"),
    "fuzz": ("jaxcnn.fuzz.command", "differential fuzzing of every op against PyTorch and the reference"),
    "summary": ("jaxcnn.models", "print a model's layers, output shapes and parameter counts"),
}


def usage() -> str:
    lines = ["usage: jaxcnn COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"jaxcnn: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)
