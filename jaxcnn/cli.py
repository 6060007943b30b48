"""``jaxcnn`` command line: ``jaxcnn {gradcheck,train,bench,fuzz,summary} [args]``, ``jaxcnn --version``.

Each subcommand lives with its module (``jaxcnn.<module>.main(argv) -> int``) and is imported
only when asked for, so ``jaxcnn gradcheck`` never loads the training stack. The commands that
need the ``train`` extra (``pip install 'jaxcnn[train]'``) are checked for it here, before
their module is imported: one line naming the extra and what is missing, not a traceback
(the plots come last in a run, after the training, and need it too).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

COMMANDS = {
    "gradcheck": ("jaxcnn.gradcheck.command", "verify every hand-written VJP against autodiff and finite differences"),
    "train": ("jaxcnn.train", "train a named model on MNIST-1D, Fashion-MNIST or 3D clips"),
    "bench": ("jaxcnn.bench.command", "time forward and forward+backward against jax.grad of lax and PyTorch"),
    "fuzz": ("jaxcnn.fuzz.command", "differential fuzzing of every op against PyTorch and the reference"),
    "summary": ("jaxcnn.models", "print a model's layers, output shapes and parameter counts"),
}

# pyproject.toml's `train` extra (tests/test_package.py checks they agree), and the commands
# that need it: the training run (its optimiser, progress, dataset and plots) and the benchmarks.
TRAIN_EXTRA = ("optax", "rich", "tqdm", "matplotlib", "mnist1d")
NEEDS_EXTRA = {"train": ("train", TRAIN_EXTRA), "bench": ("train", TRAIN_EXTRA)}
# Commands that run training steps: large host allocations on huge pages (jaxcnn._hugepages).
HUGEPAGE_COMMANDS = ("train", "bench")


def usage() -> str:
    lines = ["usage: jaxcnn COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "options:", "  --version   print jaxcnn's version", "  -h, --help  this help"]
    return "\n".join(lines)


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """The top-level modules of ``names`` that cannot be imported (found without importing them)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):   # a finder that refuses it; a module set to None
            found = False
        if not found:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from jaxcnn import __version__
        print(f"jaxcnn {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"jaxcnn: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if name in NEEDS_EXTRA:
        extra, modules = NEEDS_EXTRA[name]
        missing = missing_modules(modules)
        if missing:
            print(f"jaxcnn {name}: needs the '{extra}' extra, missing {', '.join(missing)}: "
                  f"pip install 'jaxcnn[{extra}]'", file=sys.stderr)
            return 1
    if from_command_line and name in HUGEPAGE_COMMANDS and not {"-h", "--help"} & set(rest):
        from jaxcnn._hugepages import use_hugepages
        use_hugepages()   # re-executes this process once where it helps (jaxcnn._hugepages)
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)
