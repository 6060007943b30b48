"""Tests of ``jaxcnn.train``'s training loop on a small synthetic 1D dataset: the loss goes
down, a non-finite loss stops the run and keeps the last good checkpoint, the train step compiles
once, ``impl="manual"`` and ``"lax"`` give the same loss curve, bfloat16 agrees with float32 to
its precision, a channels-last run is the channels-first run (on small synthetic images), a
micro-batched step and run are the one-batch ones.

The synthetic data and the helpers that run and read back a training run are here, shared with
test_train_resume.py (stopping, resuming, workdirs, the layout a run settles on),
test_train_config.py (the configuration and its flags), test_train_command.py and
test_distributed.py."""
from __future__ import annotations

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


def assert_same_run(workdir: Path, reference: Path) -> None:
    """The same checkpoint (every array but the wall time) and the same training records."""
    got, want = checkpoint_arrays(workdir), checkpoint_arrays(reference)
    assert got.keys() == want.keys()
    for name in want:
        if name not in ("elapsed", "config"):
            assert np.array_equal(got[name], want[name]), name
    without_timing = lambda records: [{k: v for k, v in r.items() if k != "examples_per_s"} for r in records]
    assert without_timing(train_records(workdir)) == without_timing(train_records(reference))


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
