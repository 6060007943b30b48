"""``jaxcnn train``: the command line around ``train_and_evaluate``.

Every flag fills the ``TrainConfig`` field of its name (``--batch-size`` → ``batch_size``) and
says its default in ``--help``; an error names the flag as typed. ``--resume`` continues the
run in ``--workdir`` with the settings its checkpoint stores: only the flags given are
applied, and one that would change the run (``TrainConfig.identity``) is refused by name.
A new run into a folder holding one is refused unless ``--overwrite``. Ctrl-C or SIGTERM
stops after the current step with its checkpoint written: exit status 130 and the command
that continues.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, NamedTuple

from jaxcnn import _args, data, models
from jaxcnn.data import fashion
from jaxcnn.train.config import AUGMENTATIONS, DATASET_NAMES, DEFAULTS, DTYPES, OPTIMIZERS, SCHEDULES, TrainConfig
from jaxcnn.train.interrupt import TrainingInterrupted
from jaxcnn.train.loop import NonFiniteLossError, train_and_evaluate
from jaxcnn.train.resume import CHECKPOINT, RUN_FILES, held_run, stored_config

FIELDS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
# The flag that sets each field, for messages: the field's name with dashes, but for the
# switches that turn a default off.
FLAGS = {**{name: "--" + name.replace("_", "-") for name in FIELDS}, "progress": "--no-progress",
         "plots": "--no-plots", "workdir": "--workdir"}
# The fields set by either of two flags: the one for each value.
VALUE_FLAGS = {"channels_last": {True: "--channels-last", False: "--channels-first"}}
EPILOG = f"""\
examples:
  jaxcnn train                                    mnist1d-resnet on MNIST-1D, 4000 steps
  jaxcnn train --dataset fashion --download --data-dir data/fashion-mnist
  jaxcnn train --workdir runs/mine --steps 40     then Ctrl-C: "stopped at step N; continue with: ..."
  jaxcnn train --resume --workdir runs/mine       continue it with its own settings
  jaxcnn train --resume --workdir runs/mine --steps 60   extend it (the schedule keeps its length)

The run's folder (--workdir) holds {", ".join(RUN_FILES)} and the plots.
Ctrl-C or SIGTERM stops after the current step with its checkpoint written and prints the
command that continues; a second Ctrl-C stops at once (the last checkpoint is kept whole).
Exit status: 0 done, 2 bad usage, 3 non-finite loss, 130 interrupted."""


def _per_dataset(name: str, unit: str = "") -> str:
    return "default per dataset: " + ", ".join(f"{dataset} {DEFAULTS[dataset][name]}{unit}"
                                               for dataset in DATASET_NAMES)


def _length_default() -> str:
    return "default per dataset: " + ", ".join(
        f"{dataset} " + (f"{defaults['steps']} steps" if "steps" in defaults else f"{defaults['epochs']} epochs")
        for dataset, defaults in DEFAULTS.items())


def make_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxcnn train``. Nothing has a parsed default (``argparse.SUPPRESS``): the
    namespace holds the flags given, ``TrainConfig`` (or the resumed checkpoint) the rest; each
    help says the default."""
    parser = argparse.ArgumentParser(
        prog="jaxcnn train", argument_default=argparse.SUPPRESS, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a named model of jaxcnn.models on MNIST-1D, Fashion-MNIST or moving\n"
        "Fashion-MNIST clips: metrics, an atomic checkpoint that resumes bit for bit, a report, plots.")
    add = parser.add_argument
    add("--dataset", choices=DATASET_NAMES, help="the data: MNIST-1D (generated locally), Fashion-MNIST, "
        "or clips of Fashion-MNIST items moving (3D) (default: mnist1d)")
    add("--model", choices=tuple(models.MODELS), metavar="MODEL", help="a named model of jaxcnn.models "
        f"({', '.join(models.MODELS)}; jaxcnn summary MODEL shows one) ({_per_dataset('model')})")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, metavar="N", help="train this many steps. With --resume it may "
                        "change, to no less than the checkpoint's step; the learning-rate schedule keeps its "
                        "length (--schedule-steps), so a 40-step run resumed with --steps 60 is, bit for bit, "
                        f"the run started with --steps 60 --schedule-steps 40 ({_length_default()})")
    length.add_argument("--epochs", type=int, metavar="N", help="train this many passes over the training "
                        "set (each its size // --batch-size steps); as --steps with --resume "
                        f"({_length_default()})")
    add("--batch-size", type=int, metavar="N", help="examples per step, over all devices "
        f"({_per_dataset('batch_size')})")
    add("--optimizer", choices=OPTIMIZERS, help="adamw (decoupled weight decay), adam or sgd (Nesterov "
        "momentum 0.9), the last two with the decay added to the gradient (default: adamw)")
    add("--lr", type=float, metavar="LR", help=f"peak learning rate ({_per_dataset('lr')})")
    add("--schedule", choices=SCHEDULES, help="learning-rate schedule: onecycle warms up over the first "
        "25%% of --schedule-steps and anneals by cosine to lr/25000; cosine anneals from lr to 0; "
        "constant (default: onecycle)")
    add("--schedule-steps", type=int, metavar="N", help="the schedule's length in steps, fixed when the run "
        "starts: a resumed run keeps it whatever its --steps, and past its end the rate stays at its last "
        "value (onecycle lr/25000, cosine 0: extend with --schedule constant to train on at full rate) "
        "(default: the run's length when it starts)")
    add("--weight-decay", type=float, metavar="WD", help=f"weight decay ({_per_dataset('weight_decay')})")
    add("--seed", type=int, metavar="K", help="seeds the initial parameters, the batch order, the "
        f"augmentation and dropout (default: {FIELDS['seed']})")
    add("--impl", choices=_args.IMPLS, help="every convolution's implementation: lax (jax.lax) or manual "
        f"(no convolution primitive) (default: {FIELDS['impl']})")
    add("--dtype", choices=DTYPES, help=f"compute dtype; the parameters stay float32 (default: {FIELDS['dtype']})")
    add("--augment", nargs="?", const=True, metavar="POLICY", help="augment the training batches with the "
        "dataset's first policy, or one by name: " + "; ".join(f"{name} {', '.join(policies)}" for name, policies
                                                               in AUGMENTATIONS.items()) + " (default: on)")
    add("--no-augment", dest="augment", action="store_false", help="train on the batches as they are "
        "(default: augmented)")
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument("--channels-last", dest="channels_last", action="store_true", help="run every layer "
                        f"channels last (models {', '.join(models.LAYOUT_MODELS)}): the same init and losses "
                        "as channels first, faster on CPU and GPU (default: the faster layout for the platform: "
                        "channels last for these models on CPU and GPU, else channels first; a resumed run "
                        "keeps its own)")
    layout.add_argument("--channels-first", dest="channels_last", action="store_false", help="run every "
                        "layer channels first, the layout every model has (default: as --channels-last says)")
    add("--micro-batches", type=int, metavar="K", help="sum each step's gradient over K slices of the batch in "
        "one program (faster on CPU; dropout drawn per slice) (default: 1)")
    files = parser.add_argument_group("files")
    files.add_argument("--workdir", metavar="DIR", help="the run's folder: checkpoint, metrics, report, plots "
                       "(default: runs/DATASET-MODEL-seedK under the current folder)")
    files.add_argument("--data-dir", metavar="DIR", help="where the data is: Fashion-MNIST's four IDX files "
                       "(.gz or plain), MNIST-1D's cache (default: $JAXCNN_DATA, then "
                       f"{data.DEBIAN_FASHION_MNIST_DIR}; MNIST-1D generated, not cached)")
    files.add_argument("--download", action="store_true", help="fetch Fashion-MNIST (--dataset fashion or "
                       "clips) into --data-dir or $JAXCNN_DATA if it is not there: each file checked "
                       "against its published SHA-256, written atomically; from the mirrors in "
                       f"${fashion.FASHION_MNIST_MIRRORS_ENV} (comma-separated URL prefixes) or the official "
                       "ones (default: off: missing data is an error that says how to get it)")
    again = files.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --workdir from its "
                       "checkpoint with the settings it started with: no flag to repeat. --steps or --epochs "
                       "may change, and so may the intervals, --eval-batch-size, --data-dir, --no-plots and "
                       "where it runs; any other flag that differs from the run's is refused. An error "
                       "where there is no checkpoint (default: off)")
    again.add_argument("--overwrite", action="store_true", help="start a new run in a --workdir that holds "
                       "one, deleting its checkpoint, metrics, report and plots (default: off: such a folder "
                       "is refused)")
    files.add_argument("--log-every", type=int, metavar="N", help="write the training metrics every N steps "
                       f"(one device sync) (default: {FIELDS['log_every']})")
    files.add_argument("--checkpoint-every", type=int, metavar="N", help="write the checkpoint every N steps, "
                       f"and at the end and on Ctrl-C (default: {FIELDS['checkpoint_every']})")
    files.add_argument("--eval-every", type=int, metavar="N", help="evaluate the test set every N steps and "
                       "at the end (default: on about 20 epoch boundaries of the run)")
    files.add_argument("--eval-batch-size", type=int, metavar="N", help="test examples per evaluation batch "
                       f"(default: {FIELDS['eval_batch_size']})")
    files.add_argument("--train-subset", type=int, metavar="N", help="train on the first N training examples "
                       "(default: all)")
    files.add_argument("--halt-after", type=int, metavar="N", help="stop after step N with its checkpoint "
                       "written, as Ctrl-C would; --resume continues (default: run to the end)")
    files.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar "
                       "(default: one on stderr)")
    files.add_argument("--no-plots", dest="plots", action="store_false", help="no PNG plots at the end "
                       "(default: training curves, kernels and feature maps)")
    where = parser.add_argument_group("devices and processes (jaxcnn.distributed)")
    where.add_argument("--devices", metavar="N", help="N or 'all': data parallel over that many devices, "
                       "--batch-size the global batch (default: one; all in a multi-process run)")
    where.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, to join a "
                       "multi-process run (default: $JAX_COORDINATOR_ADDRESS, else none)")
    where.add_argument("--num-processes", type=int, metavar="N", help="processes of the run "
                       "(default: $JAXCNN_NUM_PROCESSES, else 1)")
    where.add_argument("--process-id", type=int, metavar="I", help="this process, 0 ... N-1 "
                       "(default: $JAXCNN_PROCESS_ID, else 0)")
    return parser


class Command(NamedTuple):
    """What ``jaxcnn train`` was asked: the ``TrainConfig`` fields given (by name), the
    workdir (``None``: the default), and ``--download``."""

    given: dict[str, Any]
    workdir: str | None
    download: bool


def parse_command(argv: list[str] | None) -> Command:
    given = vars(make_parser().parse_args(argv))
    return Command(given, given.pop("workdir", None), given.pop("download", False))


def parse_args(argv: list[str] | None) -> tuple[TrainConfig, str | None]:
    """``(config, workdir)`` from the flags, the rest ``TrainConfig``'s defaults (no checkpoint read)."""
    command = parse_command(argv)
    return TrainConfig(**command.given), command.workdir


def flag_message(message: str) -> str:
    """A config message names fields (``batch_size: expected ...``, ``made with lr=0.1``);
    the command's names the flags typed (``--batch-size: ...``, ``made with --lr 0.1``)."""
    head, colon, rest = message.partition(": ")
    names = head.split(", ")
    if colon and all(name in FLAGS for name in names):
        head = ", ".join(FLAGS[name] for name in names)
    rest = re.sub(r"\b([a-z_]+)=", lambda m: f"{FLAGS[m[1]]} " if m[1] in FLAGS else m[0], rest)
    return head + colon + rest


def _flag_given(name: str, value: Any) -> str:
    """The flag that gave field ``name`` its ``value``."""
    return VALUE_FLAGS[name][value] if name in VALUE_FLAGS else FLAGS[name]


def _as_flags(name: str, value: Any) -> str:
    flag = FLAGS[name]
    if name in VALUE_FLAGS and value in VALUE_FLAGS[name]:
        return VALUE_FLAGS[name][value]
    if name == "augment":
        return "--augment" if value is True else "--no-augment" if value is False else f"--augment {value}"
    if isinstance(value, bool) or value is None:
        return flag if value else f"no {flag}"
    return f"{flag} {value}"


def resumed_config(given: dict[str, Any], workdir: Path) -> TrainConfig:
    """The run in ``workdir`` as its checkpoint stores it, with the flags ``given`` applied:
    a new length, intervals, where it runs; a flag that would change its ``identity`` is
    refused by name."""
    path = workdir / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint in {workdir} (no {CHECKPOINT}): nothing to "
                                f"continue; start a new run without --resume")
    stored = stored_config(path)
    base = dataclasses.replace(stored, steps=None, epochs=None) if {"steps", "epochs"} & set(given) else stored
    config = dataclasses.replace(base, **given)
    as_stored = lambda value: json.loads(json.dumps(value.lower() if isinstance(value, str) else value))
    theirs, mine = stored.identity(), config.identity()
    for name in given:
        if as_stored(theirs.get(name)) != as_stored(mine.get(name)):
            flag = _flag_given(name, given[name])
            raise ValueError(f"{flag}: the run in {workdir} was made with "
                             f"{_as_flags(name, getattr(stored, name))}; got {_as_flags(name, given[name])}. "
                             f"A resumed run keeps its settings: drop {flag}, or start a new run "
                             f"(another --workdir, or --overwrite to replace this one)")
    return config.resolved()


def check_new_run(config: TrainConfig, workdir: Path) -> None:
    """A new run is refused where ``workdir`` holds one, unless ``--overwrite``."""
    held = held_run(workdir)
    if held and not config.overwrite:
        raise FileExistsError(f"--workdir {workdir} holds a run ({held}): continue it with --resume, or start "
                              f"over with --overwrite (deletes its checkpoint, metrics, report and plots)")


def download(config: TrainConfig) -> None:
    """``--download``: Fashion-MNIST into ``--data-dir`` or ``$JAXCNN_DATA``, where it is not
    already found."""
    if config.dataset == "mnist1d":
        raise ValueError("--download: MNIST-1D is generated locally; only Fashion-MNIST (--dataset fashion "
                         "or clips) is downloaded")
    dest = config.data_dir or os.environ.get("JAXCNN_DATA")
    if dest is None:
        try:
            data.find_fashion_mnist()
            return
        except FileNotFoundError:
            raise ValueError("--download: where to? Give --data-dir DIR or set JAXCNN_DATA=DIR") from None
    data.download_fashion_mnist(dest, log=print)


def main(argv: list[str] | None = None) -> int:
    """``jaxcnn train [flags]``: prints and writes the report. Exit status 0 when done, 2 on
    bad usage, 3 on a non-finite loss, 130 when interrupted (SIGINT or SIGTERM)."""
    try:
        command = parse_command(argv)
    except SystemExit as stop:  # --help, or a usage error (argparse printed it)
        return int(stop.code or 0)
    workdir = None
    try:
        given = command.given
        if given.get("resume"):  # the flags are checked once applied to the stored run
            workdir = Path(command.workdir or _default_workdir(TrainConfig(**given).resolved()))
            config = resumed_config(given, workdir)
        else:  # a bad value is refused before any file is read
            config = TrainConfig(**given).resolved()
            workdir = Path(command.workdir or _default_workdir(config))
            check_new_run(config, workdir)
        if command.download:
            download(config)
        train_and_evaluate(config, workdir)
    except NonFiniteLossError as err:
        print(f"jaxcnn train: {flag_message(str(err))}", file=sys.stderr)
        return 3
    except TrainingInterrupted as stop:
        print(f"stopped at step {stop.step}; continue with: jaxcnn train --resume --workdir "
              f"{shlex.quote(str(stop.workdir))}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"jaxcnn train: interrupted: stopped at once. {_what_is_kept(workdir)}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"jaxcnn train: error: {flag_message(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # a download that found no mirror, a folder that cannot be written
        print(f"jaxcnn train: error: {err}", file=sys.stderr)
        return 1
    return 0


def _default_workdir(config: TrainConfig) -> str:
    return f"runs/{config.dataset}-{config.model}-seed{config.seed}"


def _what_is_kept(workdir: Path | None) -> str:
    """Where a run stopped at once stands: its last checkpoint (written whole, or not at all)."""
    held = held_run(workdir) if workdir is not None else None
    if held is None or not (workdir / CHECKPOINT).is_file():
        return "No checkpoint was written: nothing to resume."
    return (f"The last checkpoint is kept ({held}); continue with: jaxcnn train --resume --workdir "
            f"{shlex.quote(str(workdir))}")
