"""Tests of ``jaxcnn.train`` on a small synthetic 1D dataset: the loss goes down, a run
stopped halfway and resumed is bit-identical to one run straight, a non-finite loss stops the
run and keeps the last good checkpoint, the train step compiles once, ``impl="manual"`` and
``"lax"`` give the same loss curve, bfloat16 agrees with float32 to its precision."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import data, models, nn, train
from jaxcnn._compat import jit_cache_size
from helpers import TOL, relative_error


def synthetic(n_train: int = 160, n_test: int = 80, seed: int = 0) -> data.Dataset:
    """Four classes of length-40 signals: a class-specific sine burst at a random place, noise."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, 4, n).astype(np.int32)
    t = np.arange(40)[None, :]
    start = rng.integers(0, 20, n)[:, None]
    inside = (t >= start) & (t < start + 20)
    x = np.where(inside, np.sin((y[:, None] + 1) * np.pi * (t - start) / 20), 0.0)
    x = (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)[:, None, :]
    return data.Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 4, "synthetic")


DATA = synthetic()
BASE = dict(dataset="mnist1d", model="mnist1d-cnn", batch_size=20, lr=1e-2, weight_decay=1e-4,
            progress=False, plots=False, log_every=2, checkpoint_every=2, eval_batch_size=80)


def run(tmp: Path, **changes) -> dict:
    return train.train_and_evaluate(train.TrainConfig(**{**BASE, **changes}), tmp, dataset=DATA)


def train_records(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def checkpoint_arrays(workdir: Path) -> dict[str, np.ndarray]:
    with np.load(workdir / train.CHECKPOINT) as saved:
        return {k: saved[k] for k in saved.files}


def test_short_run_lowers_the_loss_and_writes_report_and_plots(tmp_path):
    report = run(tmp_path, steps=40, plots=True, augment=True)
    losses = [r["loss"] for r in train_records(tmp_path)]
    assert len(losses) == 40
    # Chance level is log 4 = 1.386; the first steps sit near it, the last well below.
    assert np.mean(losses[:5]) > 1.2 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert report["test_accuracy"] > 0.5  # chance is 0.25
    assert report["train_step_compilations"] == 1
    assert json.loads((tmp_path / "report.json").read_text())["test_accuracy"] == report["test_accuracy"]
    conv_layers = 3
    expected = {"training_curves.png", "kernels.png"} | {f"feature_maps_{i:02d}.png" for i in range(conv_layers)}
    assert set(report["plots"]) == expected
    for name in expected:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def dropout_cnn(num_classes: int = 4, *, impl: str = "lax") -> nn.Layer:
    return nn.serial(nn.Conv1d(8, 5, stride=2, impl=impl), nn.ReLU(), nn.Dropout(0.2),
                     nn.Flatten(), nn.Dense(num_classes))


def test_kill_and_resume_is_bit_identical(tmp_path, monkeypatch):
    """12 steps straight vs 6 steps, stop, resume, 6 more: the same params, optimizer state,
    and loss at every step (augmentation and dropout draw their keys from the step)."""
    monkeypatch.setitem(models.MODELS, "test-dropout-cnn", dropout_cnn)
    config = dict(steps=12, model="test-dropout-cnn", augment=True, train_subset=100)
    run(tmp_path / "straight", **config)
    assert run(tmp_path / "resumed", **config, halt_after=6)["halted_at"] == 6
    assert int(checkpoint_arrays(tmp_path / "resumed")["step"]) == 6
    report = run(tmp_path / "resumed", **config, resume=True)
    again = run(tmp_path / "resumed", **config, resume=True)  # finished: only re-evaluates
    assert again["test_accuracy"] == report["test_accuracy"] and again["examples_per_s"] is None
    straight, resumed = checkpoint_arrays(tmp_path / "straight"), checkpoint_arrays(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        if name != "elapsed":
            assert np.array_equal(straight[name], resumed[name]), name
    without_timing = lambda records: [{k: v for k, v in r.items() if k != "examples_per_s"} for r in records]
    assert without_timing(train_records(tmp_path / "straight")) == without_timing(train_records(tmp_path / "resumed"))
    assert [r["step"] for r in train_records(tmp_path / "resumed")] == list(range(1, 13))


def test_resume_refuses_a_different_run(tmp_path):
    run(tmp_path, steps=4, halt_after=1)
    with pytest.raises(ValueError, match="lr"):
        run(tmp_path, steps=4, lr=5e-2, resume=True)


def test_resume_from_a_file_that_is_not_a_checkpoint_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "load_dataset", lambda config: DATA)
    garbage = tmp_path / train.CHECKPOINT
    garbage.write_bytes(b"this is not a checkpoint" * 8)
    code = train.main(["--model", "mnist1d-cnn", "--steps", "4", "--batch-size", "20", "--resume",
                       "--no-progress", "--no-plots", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"jaxcnn train: error: {garbage}: not a jaxcnn checkpoint: expected an .npz archive" in err
    assert "pickled" not in err
    assert garbage.read_bytes() == b"this is not a checkpoint" * 8  # left as it was
    with pytest.raises(ValueError, match=f"{garbage}: not a jaxcnn checkpoint"):
        train.load_trained(tmp_path)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "load_dataset", lambda config: DATA)
    code = train.main(["--model", "mnist1d-cnn", "--steps", "20", "--batch-size", "20", "--lr", "1e30",
                       "--schedule", "constant", "--log-every", "1", "--checkpoint-every", "1",
                       "--no-progress", "--no-plots", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 3 and "non-finite loss" in err and "last good checkpoint" in err
    saved = checkpoint_arrays(tmp_path)
    failed_at = int(err.split("at step ")[1].split(";")[0])
    assert 1 <= int(saved["step"]) == failed_at - 1
    leaves = [v for k, v in saved.items() if k.startswith("leaf_")]
    assert leaves and all(np.all(np.isfinite(v)) for v in leaves)
    assert max(r["step"] for r in train_records(tmp_path)) < failed_at


def test_train_step_is_traced_and_compiled_once():
    model = models.build("mnist1d-cnn", 4)
    params, _ = model.init(jax.random.key(0), (20, 1, 40))
    optimizer = optax.adamw(1e-3)
    traces = []

    def augment(key, x):
        traces.append(1)  # Python side effect: runs once per trace
        return data.random_shift_1d(key, x, 2)
    step = train.make_train_step(model, optimizer, jax.random.key(1), augment, jnp.float32)
    state = train.TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))
    for i in range(5):
        state, metrics = step(state, DATA.x_train[20 * i:20 * i + 20], DATA.y_train[20 * i:20 * i + 20])
    assert int(state.step) == 5 and bool(metrics["finite"])
    assert len(traces) == 1 and jit_cache_size(step) == 1


@pytest.fixture(scope="module")
def lax_run(tmp_path_factory) -> list[dict]:
    """10 steps of the float32, impl="lax" run that the next two tests compare against."""
    workdir = tmp_path_factory.mktemp("lax")
    run(workdir, steps=10, impl="lax")
    return train_records(workdir)


def test_manual_and_lax_give_the_same_loss_curve(tmp_path, lax_run):
    """Same init, same batches: the two conv implementations round differently in float32
    (≈1e-7 per operation); Adam's first steps normalise gradients, so differences stay near
    float32 resolution over 10 steps."""
    run(tmp_path, steps=10, impl="manual")
    lax_losses = np.array([r["loss"] for r in lax_run])
    manual_losses = np.array([r["loss"] for r in train_records(tmp_path)])
    assert relative_error(manual_losses, lax_losses) <= TOL["float32"]


def test_bfloat16_first_loss_agrees_with_float32(tmp_path, lax_run):
    run(tmp_path, steps=10, dtype="bfloat16", halt_after=3)
    bf16 = train_records(tmp_path)
    # The same params and batch at step 1: bfloat16 keeps 8 bits of mantissa (≈4e-3).
    assert relative_error(bf16[0]["loss"], lax_run[0]["loss"]) <= TOL["bfloat16"]
    assert all(np.isfinite(r["loss"]) for r in bf16)


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
], ids=["optimizer", "schedule", "steps-and-epochs", "batch-size", "lr", "model", "model-of-another-dataset",
     "dataset", "impl"])
def test_bad_config_names_the_argument(changes, argument):
    with pytest.raises(ValueError, match=argument):
        train.TrainConfig(**{**BASE, "steps": 5, **changes}).resolved()


def test_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        run(tmp_path, steps=2, batch_size=500)


def test_command_line_flags_fill_the_config():
    config, workdir = train.parse_args(["--dataset", "fashion", "--epochs", "3", "--no-augment",
                                        "--impl", "manual", "--dtype", "bfloat16", "--lr", "0.01"])
    resolved = config.resolved()
    assert (resolved.dataset, resolved.model, resolved.epochs, resolved.steps) == ("fashion", "fashion-cnn", 3, None)
    assert (resolved.augment, resolved.impl, resolved.dtype, resolved.lr) == (False, "manual", "bfloat16", 0.01)
    assert workdir is None
    defaults = train.TrainConfig().resolved()
    assert (defaults.model, defaults.steps, defaults.augment) == ("mnist1d-resnet", 4000, True)
