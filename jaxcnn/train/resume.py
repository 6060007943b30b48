"""What a ``jaxcnn train`` checkpoint holds and how a run starts from one (or from its seed).

``TrainState`` is what a step carries; ``save_checkpoint`` writes it with the PRNG key and the
data position through ``jaxcnn.train.checkpoint`` (one atomic ``.npz`` write) as host copies, so a
state replicated over any number of devices or processes is written once and restores onto
any other count. The checkpoint also stores the run's settings (``TrainConfig.remembered``):
``stored_config`` reads them back, so a resumed run needs no flag repeated.

A workdir holds one run: ``check_workdir`` refuses a fresh run into a folder that holds one
(unless ``overwrite``) and ``resume`` where there is no checkpoint. ``jaxcnn.train`` runs it;
its names are re-exported there.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcnn import distributed, models, nn
from jaxcnn._files import atomic_write
from jaxcnn.train import checkpoint
from jaxcnn.train.config import Plan, TrainConfig, make_optimizer

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
REPORT = "report.json"
RUN_FILES = (CHECKPOINT, METRICS, REPORT)  # a folder holding any of them holds a run
PLOTS = ("training_curves.png", "kernels.png", "feature_maps_*.png")  # jaxcnn.train.plots' files
_CHECKPOINT_ARRAYS = ("step", "key", "epoch", "position", "elapsed")


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array


def save_checkpoint(path: Path, state: TrainState, *, key: jax.Array, epoch: int, position: int,
                    elapsed: float, config: TrainConfig) -> None:
    """The ``(params, opt_state)`` leaves, the step, the PRNG key, the data position and the
    run's settings, by ``checkpoint.save`` (atomic)."""
    checkpoint.save(path, (state.params, state.opt_state), config.remembered(), step=state.step,
                    key=jax.random.key_data(key), epoch=epoch, position=position, elapsed=elapsed)


def stored_config(path: str | os.PathLike) -> TrainConfig:
    """The settings of the run whose checkpoint is ``path``, as it was started (``resolved``).

    Checkpoints from before the settings were stored hold the run's identity alone: the rest
    takes ``TrainConfig``'s defaults, and the schedule's length is the run's length then. One
    that stores no ``channels_last`` (from before the flag, or a channels-first run of a
    version that left it out) ran channels first: it resumes so, whatever the platform's
    default layout.
    """
    path = Path(path)
    stored = checkpoint.read_config(path, _CHECKPOINT_ARRAYS)
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(stored) - fields)
    if unknown:
        raise ValueError(f"{path}: stores settings this jaxcnn does not know ({', '.join(unknown)}): "
                         f"written by another version of jaxcnn?")
    return TrainConfig(**{**stored, "channels_last": stored.get("channels_last") or False}).resolved()


def load_checkpoint(path: Path, template: TrainState, config: TrainConfig) -> tuple[TrainState, dict]:
    """The state saved at ``path``, in ``template``'s tree structure (shapes and dtypes
    checked), and its ``key``, ``epoch``, ``position``, ``elapsed``. Refuses a checkpoint of
    another run (``check_same_run``)."""
    check_same_run(path, stored_config(path), config)
    (params, opt_state), saved = checkpoint.load(path, (template.params, template.opt_state), None,
                                                 _CHECKPOINT_ARRAYS)
    extra = {"key": jax.random.wrap_key_data(jnp.asarray(saved["key"])), "epoch": int(saved["epoch"]),
             "position": int(saved["position"]), "elapsed": float(saved["elapsed"])}
    return TrainState(params, opt_state, jnp.asarray(saved["step"])), extra


def check_same_run(path: Path, stored: TrainConfig, config: TrainConfig) -> None:
    """``config`` continues the run ``stored``: the same ``identity``, field by field (the
    schedule's length only where both know it: ``settle`` fills it in first)."""
    if stored.schedule_steps is None or config.schedule_steps is None:
        stored, config = (dataclasses.replace(c, schedule_steps=None) for c in (stored, config))
    as_stored = lambda identity: json.loads(json.dumps(identity, sort_keys=True))  # tuples become lists
    theirs, mine = as_stored(stored.identity()), as_stored(config.identity())
    for name in sorted(set(theirs) | set(mine)):
        if theirs.get(name) != mine.get(name):
            raise ValueError(f"{name}: the run in {path.parent} was made with {name}={getattr(stored, name)!r}; "
                             f"got {getattr(config, name)!r} (a resumed run keeps its settings; start a new run "
                             f"in another workdir, or overwrite this one)")


def settle(config: TrainConfig, stored: TrainConfig | None, plan: Plan, workdir: Path) -> TrainConfig:
    """``config`` with its schedule's length fixed: its own; else the resumed run's (fixed when
    it started; a checkpoint from before the field had a schedule as long as its run); else
    this run's length. Its layout likewise: its own; else the resumed run's (never the
    platform's default: a run keeps the layout its checkpoint was written in); else the
    platform's faster one (``models.default_channels_last``, which asks JAX's backend: call
    this after ``distributed.initialize``). A resumed run is checked to continue ``stored``
    (``check_same_run``)."""
    if stored is None:
        return dataclasses.replace(config, schedule_steps=config.schedule_steps or plan.total,
                                   channels_last=models.resolve_channels_last(config.model, config.channels_last))
    if config.channels_last is None:
        config = dataclasses.replace(config, channels_last=stored.channels_last)
    if stored.schedule_steps is None:
        length = stored.steps if stored.steps is not None else stored.epochs * plan.steps_per_epoch
        stored = dataclasses.replace(stored, schedule_steps=length)
    config = dataclasses.replace(config, schedule_steps=config.schedule_steps or stored.schedule_steps)
    check_same_run(workdir / CHECKPOINT, stored, config)
    if plan.total > config.schedule_steps and config.schedule != "constant" and distributed.is_writer():
        print(f"note: the {config.schedule} schedule ends at step {config.schedule_steps}; steps "
              f"{config.schedule_steps + 1}-{plan.total} run at its final learning rate")
    return config


def initial_state(config: TrainConfig, model: nn.Layer, optimizer: optax.GradientTransformation,
                  input_shape: tuple[int, ...]) -> TrainState:
    """Step 0: the params drawn from the seed's init key, the optimizer's initial state."""
    init_key, _, _ = jax.random.split(jax.random.key(config.seed), 3)
    params, _ = model.init(init_key, (config.batch_size, *input_shape))
    return TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))


def load_trained(workdir: str | os.PathLike) -> tuple[TrainConfig, nn.Layer, Any]:
    """``(config, model, params)`` of the run whose checkpoint is in ``workdir`` (a named
    model of ``jaxcnn.models``), e.g. to evaluate it again: ``model.apply(params, x)``."""
    path = Path(workdir) / CHECKPOINT
    config = stored_config(path)
    model = models.build(config.model, impl=config.impl, channels_last=config.channels_last)
    optimizer, _ = make_optimizer(config, 1)
    template = initial_state(config, model, optimizer, models.INPUT_SHAPES[config.model])
    return config, model, load_checkpoint(path, template, config)[0].params


def check_workdir(config: TrainConfig, workdir: Path) -> TrainConfig | None:
    """Before anything is loaded or written: with ``resume``, the stored settings of the
    workdir's checkpoint (``FileNotFoundError`` if it has none); else ``None``, after refusing
    a workdir that holds a run unless ``overwrite``."""
    path = workdir / CHECKPOINT
    if config.resume:
        if not path.is_file():
            raise FileNotFoundError(f"resume: no checkpoint in {workdir} (no {CHECKPOINT}): nothing to "
                                    f"resume; start a new run")
        return stored_config(path)
    held = held_run(workdir)
    if held and not config.overwrite:
        raise FileExistsError(f"workdir: {workdir} holds a run ({held}): resume continues it, overwrite "
                              f"replaces it (deleting its {', '.join(RUN_FILES)} and plots)")
    return None


def held_run(workdir: Path) -> str | None:
    """What run ``workdir`` holds, in words (``"checkpoint at step 40 of a run of 60 steps"``, or the
    run files there when none is a readable checkpoint); ``None`` when it holds none."""
    held = [name for name in RUN_FILES if (workdir / name).exists()]
    if not held:
        return None
    try:
        config, arrays = checkpoint.read(workdir / CHECKPOINT, ("step",))
    except (OSError, ValueError):
        return ", ".join(held)
    length = f"{config['steps']} steps" if config.get("steps") else f"{config.get('epochs')} epochs"
    return f"checkpoint at step {int(arrays['step'])} of a run of {length}"


def resume_or_start(config: TrainConfig, workdir: Path, state: TrainState,
                    plan: Plan | None = None) -> tuple[TrainState, jax.Array, float]:
    """``(state, root key, elapsed seconds)`` from the workdir's checkpoint with ``resume``
    (whose step must not be past ``plan.total``); else the fresh ``state``, and the files of
    the run the workdir held (``overwrite``) deleted by the writing process. Every process
    reads the checkpoint."""
    path, metrics_path = workdir / CHECKPOINT, workdir / METRICS
    if not config.resume:
        if config.overwrite and distributed.is_writer():
            for pattern in (*RUN_FILES, *PLOTS):
                for old in workdir.glob(pattern):
                    old.unlink()
        return state, jax.random.key(config.seed), 0.0
    state, extra = load_checkpoint(path, state, config)
    step = int(state.step)
    if plan is not None and step > plan.total:
        name, length = ("steps", "") if config.steps is not None else ("epochs", f" ({plan.total} steps)")
        raise ValueError(f"{name}: expected a run at least as long as its checkpoint in {workdir}, at step "
                         f"{step}; got {getattr(config, name)}{length}")
    if metrics_path.exists() and distributed.is_writer():  # keep the lines up to the checkpoint; the run rewrites the rest
        lines = [line for line in metrics_path.read_text().splitlines()
                 if line.strip() and json.loads(line)["step"] <= step]
        atomic_write(metrics_path, "".join(line + "\n" for line in lines))
    print(f"resuming from step {step} (epoch {extra['epoch']}, batch {extra['position']})")
    return state, extra["key"], extra["elapsed"]
