"""Tests of a ``jaxcnn.train`` run's configuration (jaxcnn/train/config.py): ``TrainConfig``
refuses a bad argument by name, the command-line flags fill it, ``--augment`` takes a policy by
name, a layout a model lacks is refused before anything is written."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxcnn import train
from jaxcnn.train import loop
from test_train import BASE, DATA, run


def test_channels_last_is_refused_for_a_model_without_the_layout(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="channels_last: expected False for 'mnist1d-cnn'"):
        train.TrainConfig(**{**BASE, "steps": 5, "channels_last": True}).resolved()
    with pytest.raises(TypeError, match="channels_last: expected a bool; got 1"):
        train.TrainConfig(**{**BASE, "steps": 5, "model": "mnist1d-resnet", "channels_last": 1}).resolved()
    monkeypatch.setattr(loop, "load_dataset", lambda config: DATA)
    code = train.main(["--model", "mnist1d-cnn", "--steps", "4", "--channels-last", "--no-progress",
                       "--no-plots", "--workdir", str(tmp_path)])
    assert code == 2 and "jaxcnn train: error: --channels-last: expected False" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("changes, argument", [
    (dict(optimizer="lion"), "optimizer"),
    (dict(schedule="step"), "schedule"),
    (dict(steps=5, epochs=2), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=-1.0), "lr"),
    (dict(model="lenet"), "model"),
    (dict(model="fashion-cnn"), "model"),
    (dict(dataset="cifar"), "dataset"),
    (dict(impl="fft"), "impl"),
    (dict(micro_batches=3), "micro_batches"),
    (dict(micro_batches=0), "micro_batches"),
    (dict(augment="flip"), "augment"),      # BASE is MNIST-1D: its one policy is "shift"
    (dict(augment=1), "augment"),
], ids=["optimizer", "schedule", "steps-and-epochs", "batch-size", "lr", "model", "model-of-another-dataset",
     "dataset", "impl", "micro-batches-not-a-divisor", "micro-batches-zero", "augment-policy-of-another-dataset",
     "augment-not-a-name"])
def test_bad_config_names_the_argument(changes, argument):
    with pytest.raises(ValueError, match=argument):
        train.TrainConfig(**{**BASE, "steps": 5, **changes}).resolved()


def test_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        run(tmp_path, steps=2, batch_size=500)


def test_command_line_flags_fill_the_config():
    config, workdir = train.parse_args(["--dataset", "fashion", "--epochs", "3", "--no-augment",
                                        "--impl", "manual", "--dtype", "bfloat16", "--lr", "0.01",
                                        "--channels-last", "--micro-batches", "4"])
    resolved = config.resolved()
    assert (resolved.dataset, resolved.model, resolved.epochs, resolved.steps) == ("fashion", "fashion-cnn", 3, None)
    assert (resolved.augment, resolved.impl, resolved.dtype, resolved.lr) == (False, "manual", "bfloat16", 0.01)
    assert resolved.channels_last is True and resolved.identity()["channels_last"] is True
    assert resolved.micro_batches == 4 and resolved.identity()["micro_batches"] == 4
    assert workdir is None
    defaults = train.TrainConfig().resolved()
    # The layout is settled when the run starts (the platform's, or the resumed run's).
    assert (defaults.model, defaults.steps, defaults.augment, defaults.channels_last) == ("mnist1d-resnet", 4000, True, None)
    assert "channels_last" not in defaults.identity()
    assert "channels_last" not in dataclasses.replace(defaults, channels_last=False).identity()  # checkpoints from before the flag still resume
    assert "micro_batches" not in defaults.identity()
    layout = lambda *flags: train.parse_args(["--model", "fashion-resnet", "--dataset", "fashion", *flags])[0].channels_last
    assert (layout(), layout("--channels-first"), layout("--channels-last")) == (None, False, True)


def test_augment_takes_a_policy_by_name():
    """``--augment flip``: each Fashion-MNIST example is itself or its mirror image, nothing
    else (no crop: every pixel is kept); ``--augment`` alone is the dataset's first policy,
    the padded crop and flip, which moves pixels off the image."""
    config, _ = train.parse_args(["--dataset", "fashion", "--augment", "FLIP", "--epochs", "1"])
    assert config.resolved().augment == "flip" and config.resolved().identity()["augment"] == "flip"
    assert train.parse_args(["--dataset", "fashion", "--augment", "--epochs", "1"])[0].augment is True
    x = np.random.default_rng(0).standard_normal((64, 1, 6, 6)).astype(np.float32)
    flipped = np.asarray(jax.jit(train.augmentation("fashion", "flip"))(jax.random.key(3), x))
    mirrored = np.all(flipped == x[..., ::-1], axis=(1, 2, 3))
    assert np.all(mirrored | np.all(flipped == x, axis=(1, 2, 3))) and 0 < mirrored.sum() < len(x)
    cropped = np.asarray(train.augmentation("fashion")(jax.random.key(3), x))
    assert not np.all(np.all(cropped == x, axis=(1, 2, 3)) | np.all(cropped == x[..., ::-1], axis=(1, 2, 3)))
    with pytest.raises(ValueError, match="policy: expected one of"):
        train.augmentation("clips", "flip")
