"""What a ``jaxcnn train`` run is: ``TrainConfig`` with the per-dataset ``DEFAULTS``, its
``Plan`` (epochs, steps, when to evaluate) and the recipe pieces it names (augmentation,
optimizer and learning-rate schedule). ``jaxcnn.train`` runs it (the command-line flags that
fill it: ``jaxcnn.train.command``); its names are re-exported there.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import optax

from jaxcnn import _args, data, models

DATASET_NAMES = ("mnist1d", "fashion", "clips")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
DTYPES = ("float32", "bfloat16")


def _crop_flip(key: jax.Array, x: jax.Array) -> jax.Array:
    crop_key, flip_key = jax.random.split(key)
    return data.random_flip(flip_key, data.random_crop(crop_key, x, 2), -1)


# Augmentation policies per dataset, ``augment(key, x) -> x``; ``augment=True`` takes the first.
# MNIST-1D: circular shifts of up to 4 samples. Fashion-MNIST: a 2-pixel padded crop and a
# horizontal flip, or the flip alone. Clips: a common spatial shift of all frames on their torus
# (flips would swap the directions, time shifts break motion).
_POLICIES: dict[str, dict[str, Callable[[jax.Array, jax.Array], jax.Array]]] = {
    "mnist1d": {"shift": lambda key, x: data.random_shift_1d(key, x, 4)},
    "fashion": {"crop-flip": _crop_flip, "flip": lambda key, x: data.random_flip(key, x, -1)},
    "clips": {"shift": lambda key, x: data.random_shift(key, x, (0, 4, 4), mode="circular")},
}
AUGMENTATIONS: dict[str, tuple[str, ...]] = {name: tuple(policies) for name, policies in _POLICIES.items()}

# Per-dataset defaults: the recipes behind experiments/train/RESULTS.md.
DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist1d": dict(model="mnist1d-resnet", steps=4000, batch_size=100, lr=3e-3, weight_decay=5e-2, augment=True),
    "fashion": dict(model="fashion-cnn", epochs=8, batch_size=128, lr=3e-3, weight_decay=5e-2, augment=True),
    "clips": dict(model="clips-cnn3d", epochs=10, batch_size=64, lr=3e-3, weight_decay=5e-2, augment=True),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One run. ``None`` fields take the dataset's ``DEFAULTS``; give ``steps`` or ``epochs``.

    ``halt_after`` stops the loop after that many steps (as a kill would, after the
    checkpoint of that step): the resume tests use it. ``train_subset`` keeps the first n
    training examples. ``channels_last`` runs a model of ``models.LAYOUT_MODELS`` channels
    last (the same init and losses as channels first); ``None`` takes the layout of the run it
    resumes, else the platform's faster one (``models.default_channels_last``), settled when
    the run starts (``jaxcnn.train.resume.settle``, after joining the processes: that asks
    JAX's backend) and stored so. ``micro_batches`` sums each step's gradient over that many
    slices of the batch in one program (``train.micro_batched``).
    ``augment`` is a bool (``True``: the dataset's first policy in ``AUGMENTATIONS``) or a
    policy's name (Fashion-MNIST: ``"crop-flip"`` or ``"flip"``).

    ``schedule_steps`` is the learning-rate schedule's length (``None``: the run's length when
    it starts); it is fixed then, so that a run extended on resume (more ``steps`` or
    ``epochs``) is exactly the run that was that long from the start with the same schedule:
    past its end the rate stays at the schedule's last value. A resumed run must match its
    checkpoint in every field of ``identity`` (not its length, the intervals, the plots, the
    data folder or where it runs). A fresh run refuses a ``workdir`` that holds one unless
    ``overwrite`` (which deletes that run's files); ``resume`` with no checkpoint is an error.

    Where it runs (``jaxcnn.distributed``): ``devices`` is a count, ``"all"``, or ``None``
    (one device; every device of a multi-process run); ``batch_size`` is the global batch,
    split evenly over them. ``coordinator`` (``host:port`` of process 0), ``num_processes``
    and ``process_id`` join a multi-process run (``jax.distributed.initialize``); ``None``
    takes them from the environment, if set there.
    """

    dataset: str = "mnist1d"
    model: str | None = None
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str = "adamw"
    lr: float | None = None
    schedule: str = "onecycle"
    schedule_steps: int | None = None
    weight_decay: float | None = None
    seed: int = 0
    impl: str = "lax"
    dtype: str = "float32"
    channels_last: bool | None = None
    micro_batches: int = 1
    augment: bool | str | None = None
    data_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    log_every: int = 50
    checkpoint_every: int = 500
    eval_every: int | None = None
    eval_batch_size: int = 500
    train_subset: int | None = None
    halt_after: int | None = None
    progress: bool = True
    plots: bool = True
    devices: int | str | None = None
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def resolved(self) -> "TrainConfig":
        """Validated, with the dataset's defaults filled in."""
        dataset = _args.choice(self.dataset, DATASET_NAMES, "dataset")
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        defaults = dict(DEFAULTS[dataset])
        if "steps" in given or "epochs" in given:
            defaults.pop("steps", None), defaults.pop("epochs", None)
        config = dataclasses.replace(self, **{**defaults, **given, "dataset": dataset})
        if config.model not in models.MODELS:
            raise ValueError(f"model: expected one of {tuple(models.MODELS)}; got {config.model!r}")
        if models.DATASETS.get(config.model, dataset) != dataset:
            raise ValueError(f"model: {config.model} is made for the {models.DATASETS[config.model]} "
                             f"dataset; expected a model for {dataset}; got {config.model!r}")
        if (config.steps is None) == (config.epochs is None):
            raise ValueError(f"steps, epochs: expected exactly one; got steps={config.steps}, epochs={config.epochs}")
        for name in ("batch_size", "log_every", "checkpoint_every", "eval_batch_size", "micro_batches"):
            _args.positive_int(getattr(config, name), name)
        for name in ("steps", "epochs", "schedule_steps", "eval_every", "train_subset", "halt_after"):
            if getattr(config, name) is not None:
                _args.positive_int(getattr(config, name), name)
        if config.batch_size % config.micro_batches:
            raise ValueError(f"micro_batches: expected a divisor of the batch size {config.batch_size}; "
                             f"got {config.micro_batches}")
        for name in ("resume", "overwrite", "progress", "plots"):
            _args.check_bool(getattr(config, name), name)
        if config.resume and config.overwrite:
            raise ValueError("resume, overwrite: expected at most one (continue the run, or replace it)")
        if not isinstance(config.augment, bool):
            config = dataclasses.replace(config, augment=_args.choice(config.augment, AUGMENTATIONS[dataset], "augment"))
        _args.choice(config.optimizer, OPTIMIZERS, "optimizer")
        _args.choice(config.schedule, SCHEDULES, "schedule")
        _args.choice(config.impl, _args.IMPLS, "impl")
        _args.choice(config.dtype, DTYPES, "dtype")
        if config.channels_last is not None:
            config = dataclasses.replace(config, channels_last=_args.check_bool(config.channels_last, "channels_last"))
        models.check_layout(config.model, config.channels_last)
        config = dataclasses.replace(config, devices=_args.device_request(config.devices))  # "8" -> 8
        _args.optional_index(config.num_processes, "num_processes", 1)
        _args.optional_index(config.process_id, "process_id", 0)
        for name in ("lr", "weight_decay"):
            value = getattr(config, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name}: expected a non-negative number; got {value!r}")
        return config

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with its checkpoint: what changes the updates
        (not the run's length: ``schedule_steps`` fixes the schedule). ``channels_last`` is one
        (the kernels' layout), kept out when false (channels first: checkpoints from before the
        flag, all channels first, still resume and load) or ``None`` (a config not yet settled);
        so is ``micro_batches`` when 1."""
        skip = {*_NOT_REMEMBERED, "steps", "epochs", "plots", "data_dir", "log_every", "checkpoint_every",
                "eval_every", "eval_batch_size"}
        if not self.channels_last:
            skip.add("channels_last")
        if self.micro_batches == 1:
            skip.add("micro_batches")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}

    def remembered(self) -> dict[str, Any]:
        """What a checkpoint stores of the run, so that ``--resume`` needs no flag repeated:
        every field but the one-off requests (``resume``, ``overwrite``, ``halt_after``), the
        terminal's (``progress``) and where it runs (devices and processes)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_REMEMBERED}


_NOT_REMEMBERED = frozenset({"resume", "overwrite", "halt_after", "progress", "devices", "coordinator",
                             "num_processes", "process_id"})


class Plan(NamedTuple):
    """How long a run is, in steps of ``batch_size`` examples out of ``n``."""

    n: int
    batch_size: int
    steps_per_epoch: int
    total: int
    stop: int
    eval_every: int


def make_plan(config: TrainConfig, n: int) -> Plan:
    """The plan of ``config`` on ``n`` training examples; an epoch is ``n // batch_size`` steps."""
    if config.batch_size > n:
        raise ValueError(f"batch_size: expected at most the {n} training examples; got {config.batch_size}")
    steps_per_epoch = n // config.batch_size
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    stop = total if config.halt_after is None else min(total, config.halt_after)
    eval_every = config.eval_every or steps_per_epoch * max(1, round(total / steps_per_epoch / 20))
    return Plan(n, config.batch_size, steps_per_epoch, total, stop, eval_every)


def augmentation(dataset_name: str, policy: bool | str = True) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``augment(key, x) -> x``, jit-able: the dataset's ``policy`` by name (``AUGMENTATIONS``;
    ``True``: its first)."""
    policies = _POLICIES[_args.choice(dataset_name, DATASET_NAMES, "dataset_name")]
    return policies[next(iter(policies)) if policy is True else _args.choice(policy, tuple(policies), "policy")]


def make_optimizer(config: TrainConfig, total_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """The optax optimizer and its learning-rate schedule, from the config: a schedule of
    ``total_steps`` (the run's ``schedule_steps``), after which the rate stays at its last value
    (``onecycle``: ``lr / 25000``; ``cosine``: 0)."""
    if config.schedule == "onecycle":  # Smith & Topor (2017): warm up 25%, cosine down
        schedule = optax.cosine_onecycle_schedule(total_steps, config.lr, pct_start=0.25,
                                                  div_factor=25.0, final_div_factor=1e3)
    elif config.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(config.lr, total_steps)
    else:
        schedule = optax.constant_schedule(config.lr)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay), schedule
    decay = optax.add_decayed_weights(config.weight_decay)
    if config.optimizer == "adam":
        return optax.chain(decay, optax.adam(schedule)), schedule
    return optax.chain(decay, optax.sgd(schedule, momentum=0.9, nesterov=True)), schedule
