"""Tests of ``jaxcnn.train`` on a small synthetic 1D dataset: the loss goes down, a run
stopped halfway and resumed is bit-identical to one run straight, a non-finite loss stops the
run and keeps the last good checkpoint, the train step compiles once, ``impl="manual"`` and
``"lax"`` give the same loss curve, bfloat16 agrees with float32 to its precision, a channels-last
run is the channels-first run (on small synthetic images)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import data, models, nn, train
from jaxcnn.train import loop
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


@pytest.mark.slow
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
    monkeypatch.setattr(loop, "load_dataset", lambda config: DATA)
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
    monkeypatch.setattr(loop, "load_dataset", lambda config: DATA)
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


@pytest.mark.slow   # several training runs: the full tier
def test_bfloat16_first_loss_agrees_with_float32(tmp_path, lax_run):
    run(tmp_path, steps=10, dtype="bfloat16", halt_after=3)
    bf16 = train_records(tmp_path)
    # The same params and batch at step 1: bfloat16 keeps 8 bits of mantissa (≈4e-3).
    assert relative_error(bf16[0]["loss"], lax_run[0]["loss"]) <= TOL["bfloat16"]
    assert all(np.isfinite(r["loss"]) for r in bf16)


def synthetic_images(n_train: int = 48, n_test: int = 16, seed: int = 0) -> data.Dataset:
    """Ten classes (as Fashion-MNIST) of 28x28 images: a bright bar in a class-specific pair
    of rows, on noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n_train + n_test).astype(np.int32)
    x = 0.5 * rng.standard_normal((n_train + n_test, 1, 28, 28))
    for i, label in enumerate(y):
        x[i, 0, 4 + 2 * label:6 + 2 * label] += 2.0
    x = x.astype(np.float32)
    return data.Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10, "synthetic-images")


IMAGES = synthetic_images()
# SGD, not Adam: Adam's first steps move each weight by about ±lr whatever its gradient's size,
# so a gradient entry near zero that rounds to another sign in the other layout would move
# its weight 2·lr apart; SGD's steps keep the layouts' rounding differences at their size.
LAYOUT_RUN = dict(dataset="fashion", model="fashion-cnn", steps=4, batch_size=16, augment=True, optimizer="sgd")


@pytest.fixture(scope="module")
def layout_runs(tmp_path_factory) -> dict[bool, Path]:
    """4 steps of fashion-cnn (dropout, crops and flips) channels first and channels last,
    from one seed: the workdir of each."""
    workdirs = {}
    for channels_last in (False, True):
        workdirs[channels_last] = tmp_path_factory.mktemp(f"channels_last_{channels_last}")
        train.train_and_evaluate(train.TrainConfig(**{**BASE, **LAYOUT_RUN, "channels_last": channels_last,
                                                      "plots": channels_last}),
                                 workdirs[channels_last], dataset=IMAGES)
    return workdirs


@pytest.mark.slow
def test_channels_last_run_is_the_channels_first_run(layout_runs):
    """Same seed: the same losses (to float32 rounding: the layouts sum in other orders), and
    trained parameters that are the channels-first ones with each kernel moved by hand
    ``(O, I, *K)`` → ``(*K, I, O)``; ``load_trained`` rebuilds the channels-last model."""
    first, last = (np.array([r["loss"] for r in train_records(layout_runs[cl])]) for cl in (False, True))
    assert len(first) == 4 and relative_error(last, first) <= TOL["float32"]
    config, model, params = train.load_trained(layout_runs[True])
    first_config, first_model, first_params = train.load_trained(layout_runs[False])
    assert config.channels_last and not first_config.channels_last
    moved = jax.tree_util.tree_map(
        lambda a: np.moveaxis(np.asarray(a), (0, 1), (-1, -2)) if a.ndim >= 3 else np.asarray(a), first_params)
    for got, want in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(moved)):
        assert got.shape == want.shape and relative_error(got, want) <= TOL["float32"]
    x = IMAGES.x_test
    assert relative_error(model.apply(params, x), first_model.apply(first_params, x)) <= TOL["float32"]
    plots = {p.name for p in layout_runs[True].glob("*.png")}  # drawn by the channels-first twin
    assert plots == {"training_curves.png", "kernels.png"} | {f"feature_maps_{i:02d}.png" for i in range(3)}


@pytest.mark.parametrize("written", [False, pytest.param(True, marks=pytest.mark.slow)],   # one way by default
                         ids=["first-resumed-last", "last-resumed-first"])
@pytest.mark.slow   # several training runs: the full tier
def test_resume_refuses_a_layout_change(tmp_path, written):
    config = {**BASE, **LAYOUT_RUN, "halt_after": 1}
    train.train_and_evaluate(train.TrainConfig(**config, channels_last=written), tmp_path, dataset=IMAGES)
    with pytest.raises(ValueError, match=f"channels_last: the run in .* was made with channels_last={written}; got {not written}"):
        train.train_and_evaluate(train.TrainConfig(**config, channels_last=not written, resume=True),
                                 tmp_path, dataset=IMAGES)


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


@pytest.mark.x64
@pytest.mark.parametrize("micro_batches", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_micro_batched_is_the_one_batch_step(micro_batches):
    """Loss, gradients and logits (in the batch's order) over slices of the batch equal the
    one-slice values (float64; the model normalises per example, no dropout), and slice ``i``
    is the examples ``i, i + k, ...`` with key ``fold_in(key, i)``."""
    model = models.build("mnist1d-resnet")
    params, _ = model.init(jax.random.key(0), (2, 1, 40))
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    x, y = jnp.asarray(DATA.x_train[:8], jnp.float64), jnp.asarray(DATA.y_train[:8])
    seen = []

    def loss_fn(params, x, y, key):
        logits = model.apply(params, x)
        return jnp.mean(train.cross_entropy(logits, y)), logits
    compiled = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))   # one program a slice shape

    def value_and_grad(params, x, y, key):
        seen.append((x.shape[0], key))
        return compiled(params, x, y, key)
    key = jax.random.key(3)
    (loss, logits), grads = train.micro_batched(value_and_grad, params, x, y, key, micro_batches)
    (want_loss, want_logits), want_grads = train.micro_batched(value_and_grad, params, x, y, key)
    assert relative_error(loss, want_loss) <= TOL["float64"]
    assert relative_error(logits, want_logits) <= TOL["float64"]
    for g, w in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want_grads), strict=True):
        assert relative_error(g, w) <= TOL["float64"]
    sliced = seen[:micro_batches]
    assert [n for n, _ in sliced] == [8 // micro_batches] * micro_batches
    for i, (_, k) in enumerate(sliced):
        assert jnp.array_equal(jax.random.key_data(k), jax.random.key_data(jax.random.fold_in(key, i)))
    (first, _), _ = value_and_grad(params, x[0::micro_batches], y[0::micro_batches], key)
    (second, _), _ = value_and_grad(params, x[1::micro_batches], y[1::micro_batches], key)
    assert relative_error(first, second) > 1e-3   # the slices differ, so the check above bites


@pytest.mark.slow
def test_micro_batched_run_is_the_one_batch_run(tmp_path, lax_run):
    """The same run over 4 slices of each batch (no dropout in this model; augmentation is
    drawn on the whole batch): the same loss curve to float32 resolution, as in the
    manual-vs-lax test."""
    run(tmp_path, steps=10, micro_batches=4)
    losses = np.array([r["loss"] for r in train_records(tmp_path)])
    assert relative_error(losses, np.array([r["loss"] for r in lax_run])) <= TOL["float32"]


# ----------------------------------------------------------------------------- resume and workdirs

def assert_same_run(workdir: Path, reference: Path) -> None:
    """The same checkpoint (every array but the wall time) and the same training records."""
    got, want = checkpoint_arrays(workdir), checkpoint_arrays(reference)
    assert got.keys() == want.keys()
    for name in want:
        if name not in ("elapsed", "config"):
            assert np.array_equal(got[name], want[name]), name
    without_timing = lambda records: [{k: v for k, v in r.items() if k != "examples_per_s"} for r in records]
    assert without_timing(train_records(workdir)) == without_timing(train_records(reference))


# onecycle in the full tier: the constant schedule already checks the resumed run bit for bit.
@pytest.mark.parametrize("schedule", ["constant", pytest.param("onecycle", marks=pytest.mark.slow)])
@pytest.mark.slow   # several training runs: the full tier
def test_a_run_extended_on_resume_is_the_longer_run(tmp_path, schedule):
    """16 steps, then resumed with steps=24: bit for bit the 24-step run whose schedule is 16
    steps long (for a constant rate, any length); the learning rates of the steps past 16 are
    the schedule's last."""
    short = dict(steps=16, schedule=schedule, train_subset=100, log_every=4, checkpoint_every=8)
    run(tmp_path / "extended", **short)
    report = run(tmp_path / "extended", **{**short, "steps": 24}, resume=True)
    assert report["steps"] == 24
    run(tmp_path / "straight", **{**short, "steps": 24}, **({} if schedule == "constant" else {"schedule_steps": 16}))
    assert_same_run(tmp_path / "extended", tmp_path / "straight")
    records = train_records(tmp_path / "extended")
    assert [r["step"] for r in records] == list(range(1, 25))
    assert len({r["lr"] for r in records[16:]}) == 1   # steps 17-24 (lr of steps 16-23): the schedule's end
    if schedule == "onecycle":  # the run planned for 24 from the start is another run
        run(tmp_path / "planned", **{**short, "steps": 24})
        assert train_records(tmp_path / "planned")[1]["lr"] != records[1]["lr"]


@pytest.mark.slow   # several training runs: the full tier
def test_resume_refuses_a_run_shorter_than_its_checkpoint(tmp_path):
    run(tmp_path, steps=6, train_subset=100)
    with pytest.raises(ValueError, match=r"steps: expected a run at least as long as its checkpoint in .*, at step 6; got 4"):
        run(tmp_path, steps=4, train_subset=100, resume=True)


@pytest.mark.slow   # several training runs: the full tier
def test_a_workdir_holding_a_run_is_refused_unless_overwrite(tmp_path):
    run(tmp_path, steps=4, train_subset=100, plots=True)   # 4: optax 0.2.5's onecycle needs a warm-up step
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"checkpoint.npz", "metrics.jsonl", "report.json", "kernels.png"} <= before.keys()
    with pytest.raises(FileExistsError, match=rf"workdir: {tmp_path} holds a run \(checkpoint at step 4 of a run of 4 steps\)"):
        run(tmp_path, steps=5, train_subset=100)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before   # nothing touched
    (tmp_path / "notes.txt").write_text("mine")
    report = run(tmp_path, steps=5, train_subset=100, overwrite=True)
    assert report["steps"] == 5 and [r["step"] for r in train_records(tmp_path)] == [1, 2, 3, 4, 5]
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.npz", "metrics.jsonl", "report.json", "notes.txt"}
    with pytest.raises(FileNotFoundError, match=f"resume: no checkpoint in {tmp_path / 'empty'}"):
        run(tmp_path / "empty", steps=3, resume=True)
    with pytest.raises(ValueError, match="resume, overwrite: expected at most one"):
        run(tmp_path, steps=3, resume=True, overwrite=True)


@pytest.mark.slow   # several training runs: the full tier
def test_a_checkpoint_from_before_the_stored_settings_resumes(tmp_path):
    """A checkpoint whose config is the old identity alone (steps, eval settings, no schedule
    length): it resumes, its schedule as long as its run, and extends as a new one would."""
    config = dict(steps=8, train_subset=100, log_every=4, checkpoint_every=4)
    run(tmp_path / "new", **config)
    run(tmp_path / "old", **config)
    saved = checkpoint_arrays(tmp_path / "old")
    old_identity = {k: v for k, v in json.loads(str(saved["config"])).items()
                    if k not in ("schedule_steps", "plots", "data_dir", "log_every", "checkpoint_every")}
    np.savez(tmp_path / "old" / train.CHECKPOINT, **{**saved, "config": np.asarray(json.dumps(old_identity))})
    assert "schedule_steps" not in train.checkpoint.read_config(tmp_path / "old" / train.CHECKPOINT)
    for workdir in ("new", "old"):
        run(tmp_path / workdir, **{**config, "steps": 12}, resume=True)
    assert_same_run(tmp_path / "old", tmp_path / "new")


# ----------------------------------------------------------------------------- the default layout

SMALL_RESNET = dict(model="mnist1d-resnet", steps=2, train_subset=40, eval_batch_size=40,
                    schedule="constant")   # optax 0.2.5's onecycle needs more than 2 steps


def report_layout(workdir: Path) -> tuple[str, bool]:
    """The layout a run's report names, and the one its checkpoint stores."""
    report = json.loads((workdir / "report.json").read_text())
    assert report["config"]["channels_last"] == (report["layout"] == "channels_last")
    return report["layout"], train.checkpoint.read_config(workdir / train.CHECKPOINT)["channels_last"]


@pytest.mark.parametrize("model, layout", [pytest.param("mnist1d-resnet", "channels_last", marks=pytest.mark.slow),
                                           ("mnist1d-cnn", "channels_first")])
def test_a_default_run_takes_the_platforms_layout_and_names_it(tmp_path, model, layout):
    """No ``channels_last``: on CPU a model with the layout runs channels last, one without it
    channels first; the report and the checkpoint say which, so a resume is unambiguous."""
    assert jax.default_backend() == "cpu"
    report = run(tmp_path, **{**SMALL_RESNET, "model": model})
    assert report["layout"] == layout
    assert report_layout(tmp_path) == (layout, layout == "channels_last")
    shapes = {a.shape for name, a in checkpoint_arrays(tmp_path).items() if name.startswith("leaf_")}
    stem = {"mnist1d-resnet": (64, 1, 5), "mnist1d-cnn": (25, 1, 5)}[model]   # its first kernel, channels first
    assert (stem[::-1] if layout == "channels_last" else stem) in shapes and \
        (stem if layout == "channels_last" else stem[::-1]) not in shapes


def test_the_layout_is_settled_when_the_run_starts(tmp_path):
    """``settle``: ``channels_last=None`` becomes the resumed run's layout, else the platform's
    (CPU: channels last for a model with the layout); an explicit value is kept, and one that
    differs from the resumed run's is refused."""
    plan = train.make_plan(train.TrainConfig(**BASE, steps=2).resolved(), 40)
    config = lambda model, **changes: train.TrainConfig(**{**BASE, "steps": 2, "model": model, **changes}).resolved()
    assert config("mnist1d-resnet").channels_last is None   # not settled before the backend is asked
    settled = lambda new, stored=None: train.settle(new, stored, plan, tmp_path).channels_last
    assert settled(config("mnist1d-resnet")) is True and settled(config("mnist1d-cnn")) is False
    assert settled(config("mnist1d-resnet", channels_last=False)) is False
    for written in (False, True):
        stored = dataclasses.replace(config("mnist1d-resnet", channels_last=written), schedule_steps=2)
        assert settled(config("mnist1d-resnet"), stored) is written
        assert settled(config("mnist1d-resnet", channels_last=written), stored) is written
        with pytest.raises(ValueError, match=f"channels_last: the run in .* was made with channels_last={written}"):
            settled(config("mnist1d-resnet", channels_last=not written), stored)


def test_a_stored_config_without_the_layout_is_channels_first(tmp_path):
    """A checkpoint from before ``channels_last`` was stored ran channels first: ``stored_config``
    says so (not ``None``, which would take the platform's layout on resume)."""
    remembered = train.TrainConfig(**{**BASE, "steps": 2, "model": "mnist1d-resnet"}).resolved().remembered()
    del remembered["channels_last"]
    train.checkpoint.save(tmp_path / train.CHECKPOINT, {}, remembered, step=0, key=np.zeros(2, np.uint32),
                          epoch=0, position=0, elapsed=0.0)
    assert train.stored_config(tmp_path / train.CHECKPOINT).channels_last is False


@pytest.mark.slow
@pytest.mark.parametrize("stored", ["no-key", "false"])
def test_a_checkpoint_from_before_the_default_resumes_channels_first(tmp_path, stored):
    """A channels-first mnist1d-resnet run whose checkpoint predates the default (its config
    without ``channels_last``, or with ``False``) resumes channels first when not told, never
    in the platform's layout; told channels last it is refused by name."""
    run(tmp_path, **SMALL_RESNET, channels_last=False, halt_after=1)
    saved = checkpoint_arrays(tmp_path)
    config = json.loads(str(saved["config"]))
    if stored == "no-key":
        del config["channels_last"]
    np.savez(tmp_path / train.CHECKPOINT, **{**saved, "config": np.asarray(json.dumps(config))})
    assert train.checkpoint.read_config(tmp_path / train.CHECKPOINT).get("channels_last", "absent") == \
        {"no-key": "absent", "false": False}[stored]
    with pytest.raises(ValueError, match="channels_last: the run in .* was made with channels_last=False; got True"):
        run(tmp_path, **SMALL_RESNET, channels_last=True, resume=True)
    report = run(tmp_path, **SMALL_RESNET, resume=True)   # channels_last=None
    assert report["layout"] == "channels_first" and report["steps"] == 2
    assert report_layout(tmp_path) == ("channels_first", False)
