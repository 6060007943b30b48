"""What a ``jaxcnn train`` checkpoint holds and how a run starts from one (or from its seed).

``TrainState`` is what a step carries; ``save_checkpoint`` writes it with the PRNG key and the
data position through ``jaxcnn.train.checkpoint`` (one atomic ``.npz`` write) as host copies, so a
state replicated over any number of devices or processes is written once and restores onto
any other count. ``jaxcnn.train`` runs it; its names are re-exported there.
"""
from __future__ import annotations

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
from jaxcnn.train.config import TrainConfig, make_optimizer

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
_CHECKPOINT_ARRAYS = ("step", "key", "epoch", "position", "elapsed")


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array


def save_checkpoint(path: Path, state: TrainState, *, key: jax.Array, epoch: int, position: int,
                    elapsed: float, config: TrainConfig) -> None:
    """The ``(params, opt_state)`` leaves, the step, the PRNG key and the data position, by
    ``checkpoint.save`` (atomic)."""
    checkpoint.save(path, (state.params, state.opt_state), config.identity(), step=state.step,
                    key=jax.random.key_data(key), epoch=epoch, position=position, elapsed=elapsed)


def load_checkpoint(path: Path, template: TrainState, config: TrainConfig) -> tuple[TrainState, dict]:
    """The state saved at ``path``, in ``template``'s tree structure (shapes and dtypes
    checked), and its ``key``, ``epoch``, ``position``, ``elapsed``."""
    (params, opt_state), saved = checkpoint.load(path, (template.params, template.opt_state),
                                                 config.identity(), _CHECKPOINT_ARRAYS)
    extra = {"key": jax.random.wrap_key_data(jnp.asarray(saved["key"])), "epoch": int(saved["epoch"]),
             "position": int(saved["position"]), "elapsed": float(saved["elapsed"])}
    return TrainState(params, opt_state, jnp.asarray(saved["step"])), extra


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
    config = TrainConfig(**checkpoint.read_config(path, _CHECKPOINT_ARRAYS)).resolved()
    model = models.build(config.model, impl=config.impl, channels_last=config.channels_last)
    optimizer, _ = make_optimizer(config, 1)
    template = initial_state(config, model, optimizer, models.INPUT_SHAPES[config.model])
    return config, model, load_checkpoint(path, template, config)[0].params


def resume_or_start(config: TrainConfig, workdir: Path, state: TrainState) -> tuple[TrainState, jax.Array, float]:
    """``(state, root key, elapsed seconds)`` from the workdir's checkpoint with ``--resume``;
    else the fresh ``state``, and the workdir's old checkpoint and metrics removed (by the
    writing process; every process reads the checkpoint)."""
    path, metrics_path = workdir / CHECKPOINT, workdir / METRICS
    if not (config.resume and path.exists()):
        if distributed.is_writer():
            metrics_path.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        return state, jax.random.key(config.seed), 0.0
    state, extra = load_checkpoint(path, state, config)
    if metrics_path.exists() and distributed.is_writer():  # keep the lines up to the checkpoint; the run rewrites the rest
        lines = [line for line in metrics_path.read_text().splitlines()
                 if line.strip() and json.loads(line)["step"] <= int(state.step)]
        atomic_write(metrics_path, "".join(line + "\n" for line in lines))
    print(f"resuming from step {int(state.step)} (epoch {extra['epoch']}, batch {extra['position']})")
    return state, extra["key"], extra["elapsed"]
