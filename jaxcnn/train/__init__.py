"""``jaxcnn train``: an optax training run with exact resume, metrics and plots (the ``train`` extra).

The run reads as Flax's MNIST example, one module a topic:

- ``loop``: ``train_step`` and ``eval_step`` (pure, jit-compiled), ``train_epoch`` and the one
  entry point ``train_and_evaluate(config, workdir)``;
- ``command``: the command itself (``main``): the flags that fill the config, ``--resume`` from
  the settings a checkpoint stores, the exit statuses;
- ``config``: what a run is: ``TrainConfig`` with the per-dataset ``DEFAULTS``, its ``Plan``,
  the augmentation, optimizer and schedule it names;
- ``resume``: what a checkpoint holds (``TrainState``, the run's settings), how a run starts
  from one, and which workdir a run may use;
- ``interrupt``: SIGINT/SIGTERM stop a run after its current step (``TrainingInterrupted``);
- ``checkpoint``: the ``.npz`` checkpoint files (atomic writes, no pickles);
- ``plots``: the PNG plots of a finished run.

Their public names are re-exported here: ``from jaxcnn.train import TrainConfig,
train_and_evaluate``.
"""
from jaxcnn.train.config import (AUGMENTATIONS, DATASET_NAMES, DEFAULTS, DTYPES, OPTIMIZERS, SCHEDULES,
                                 Plan, TrainConfig, augmentation, make_optimizer, make_plan)
from jaxcnn.train.interrupt import TrainingInterrupted, stop_requests
from jaxcnn.train.resume import (CHECKPOINT, METRICS, REPORT, TrainState, check_workdir, held_run,
                                 initial_state, load_checkpoint, load_trained, resume_or_start,
                                 save_checkpoint, settle, stored_config)
from jaxcnn.train.loop import (Monitor, NonFiniteLossError, cross_entropy, epochs, eval_step, evaluate,
                               load_dataset, make_eval_step, make_train_step, micro_batched,
                               train_and_evaluate, train_epoch, train_step)
from jaxcnn.train.command import main, make_parser, parse_args, parse_command

__all__ = [
    # config
    "AUGMENTATIONS", "DATASET_NAMES", "DEFAULTS", "DTYPES", "OPTIMIZERS", "SCHEDULES", "Plan",
    "TrainConfig", "augmentation", "make_optimizer", "make_plan",
    # interrupt
    "TrainingInterrupted", "stop_requests",
    # resume
    "CHECKPOINT", "METRICS", "REPORT", "TrainState", "check_workdir", "held_run", "initial_state",
    "load_checkpoint", "load_trained", "resume_or_start", "save_checkpoint", "settle", "stored_config",
    # loop
    "Monitor", "NonFiniteLossError", "cross_entropy", "epochs", "eval_step", "evaluate", "load_dataset",
    "make_eval_step", "make_train_step", "micro_batched", "train_and_evaluate", "train_epoch", "train_step",
    # command
    "main", "make_parser", "parse_args", "parse_command",
]
