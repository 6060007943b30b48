"""``jaxcnn train``: an optax training run with exact resume, metrics and plots (the ``train`` extra).

The run reads as Flax's MNIST example, one module a topic:

- ``loop``: ``train_step`` and ``eval_step`` (pure, jit-compiled), ``train_epoch``, the one entry
  point ``train_and_evaluate(config, workdir)`` and the command itself (``main``);
- ``config``: what a run is: ``TrainConfig`` with the per-dataset ``DEFAULTS``, the command-line
  flags that fill it, its ``Plan``, the augmentation, optimizer and schedule it names;
- ``resume``: what a checkpoint holds (``TrainState``) and how a run starts from one;
- ``checkpoint``: the ``.npz`` checkpoint files (atomic writes, no pickles);
- ``plots``: the PNG plots of a finished run.

Their public names are re-exported here: ``from jaxcnn.train import TrainConfig,
train_and_evaluate``.
"""
from jaxcnn.train.config import (AUGMENTATIONS, DATASET_NAMES, DEFAULTS, DTYPES, OPTIMIZERS, SCHEDULES,
                                 Plan, TrainConfig, augmentation, make_optimizer, make_plan, parse_args)
from jaxcnn.train.resume import (CHECKPOINT, METRICS, TrainState, initial_state, load_checkpoint,
                                 load_trained, resume_or_start, save_checkpoint)
from jaxcnn.train.loop import (Monitor, NonFiniteLossError, cross_entropy, epochs, eval_step, evaluate,
                               load_dataset, main, make_eval_step, make_train_step, micro_batched,
                               train_and_evaluate, train_epoch, train_step)

__all__ = [
    # config
    "AUGMENTATIONS", "DATASET_NAMES", "DEFAULTS", "DTYPES", "OPTIMIZERS", "SCHEDULES", "Plan",
    "TrainConfig", "augmentation", "make_optimizer", "make_plan", "parse_args",
    # resume
    "CHECKPOINT", "METRICS", "TrainState", "initial_state", "load_checkpoint", "load_trained",
    "resume_or_start", "save_checkpoint",
    # loop
    "Monitor", "NonFiniteLossError", "cross_entropy", "epochs", "eval_step", "evaluate", "load_dataset",
    "main", "make_eval_step", "make_train_step", "micro_batched", "train_and_evaluate", "train_epoch",
    "train_step",
]
