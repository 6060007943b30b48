"""Tests of ``jaxcnn.distributed`` and data-parallel ``jaxcnn train``, against the unsharded
computation: batches placed on a mesh hold the rows of the global batch, sharded evaluation
sums what one device sums, and a run on 8 devices, its checkpoint resumed on 2, and a run of
two processes (4 CPU devices each, gloo collectives) follow the loss curve of one device.

The curves are compared in float32 (x64 off, as ``jaxcnn train`` runs) to ``RTOL["float32"]``:
the sharded step computes the same per-example values and differs only in the order in which
XLA sums the loss and the gradient (per device, then across devices), a few float32 roundings
per sum, about 1e-7 relative; on this small model 50 steps of AdamW did not amplify it past
4e-7 when measured. (The default ``mnist1d-resnet`` carries such differences into a drift past
1e-5 within 20 steps, sharded or not: ``experiments/distributed/step_agreement.py`` compares it
step by step instead.)
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import data, distributed, models, train
from jaxcnn._compat import MULTIPROCESS_CPU_COLLECTIVES, enable_x64
from jaxcnn.tolerances import RTOL
import helpers
from test_train import BASE, DATA, dropout_cnn, train_records

pytestmark = pytest.mark.multidevice

# The acceptance run: 50 steps of batch 40 (divisible by 1, 2, 4 and 8 devices), augmentation
# on (its keys follow the step, so it must not depend on the device count), a checkpoint at 25.
RUN = dict(BASE, steps=50, batch_size=40, augment=True, log_every=25, checkpoint_every=25, eval_every=25)


def run(workdir: Path, **changes) -> dict:
    with enable_x64(False):
        return train.train_and_evaluate(train.TrainConfig(**{**RUN, **changes}), workdir, dataset=DATA)


def losses(workdir: Path) -> np.ndarray:
    return np.array([r["loss"] for r in train_records(workdir)])


def params(workdir: Path) -> list[np.ndarray]:
    with np.load(workdir / train.CHECKPOINT) as saved:
        return [saved[f"leaf_{i}"] for i in range(sum(k.startswith("leaf_") for k in saved.files))]


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """``max|actual − expected| / max|expected|`` (the suite's relative error) within float32's."""
    helpers.assert_close(actual, expected, RTOL["float32"], what)


# ----------------------------------------------------------------------------- the pieces

def test_batch_shards_hold_the_rows_of_the_global_batch(rng):
    parallel = distributed.data_parallel(4)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    assert parallel.process_rows(8) == slice(0, 8)  # one process holds every row
    placed = parallel.batch(x, 8)
    assert placed.sharding == parallel.batch_sharding
    shards = sorted(placed.addressable_shards, key=lambda s: s.index[0].start)
    assert [s.device for s in shards] == list(jax.devices()[:4])
    for i, shard in enumerate(shards):
        np.testing.assert_array_equal(np.asarray(shard.data), x[2 * i:2 * i + 2])


def test_replicate_puts_every_leaf_whole_on_every_device(rng):
    parallel = distributed.data_parallel("all")
    tree = {"w": rng.standard_normal((3, 2)).astype(np.float32), "key": jax.random.key(3)}
    placed = parallel.replicate(tree)
    assert parallel.size == jax.device_count()
    assert placed["w"].sharding.is_fully_replicated and len(placed["w"].addressable_shards) == parallel.size
    for shard in placed["w"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), tree["w"])
    np.testing.assert_array_equal(jax.random.key_data(placed["key"]), jax.random.key_data(tree["key"]))


def test_process_rows_of_batches_are_the_global_batches_rows(rng):
    x, y = rng.standard_normal((12, 2)), np.arange(12)
    whole = list(data.batches(5, x, y, 6, epoch=1))
    part = list(data.batches(5, x, y, 6, epoch=1, rows=slice(3, 6)))
    assert len(whole) == len(part) == 2
    for (xw, yw), (xp, yp) in zip(whole, part):
        np.testing.assert_array_equal(xp, xw[3:6])
        np.testing.assert_array_equal(yp, yw[3:6])


def test_sharded_evaluation_equals_one_device(rng):
    """30 test rows, eval batch 12: 8 devices pad it to 16 (masked), one device keeps 12."""
    model = models.build("mnist1d-cnn", 4)
    params, _ = model.init(jax.random.key(0), (2, 1, 40))
    x, y = DATA.x_test[:30], DATA.y_test[:30]
    one = train.evaluate(train.make_eval_step(model, np.float32), params, x, y, 12)
    parallel = distributed.data_parallel(8)
    sharded = train.evaluate(train.make_eval_step(model, np.float32, parallel), parallel.replicate(params),
                             x, y, 12, parallel)
    assert sharded["test_accuracy"] == one["test_accuracy"]
    np.testing.assert_allclose(sharded["test_loss"], one["test_loss"], rtol=RTOL["float32"])  # float32 sums


@pytest.mark.parametrize("devices, message", [
    (0, "devices: expected a positive number of devices or 'all'; got 0"),
    ("some", "devices: expected a positive number of devices or 'all'; got 'some'"),
    (16, "devices: expected at most the 8 devices JAX sees"),
], ids=["zero", "word", "too-many"])
def test_bad_device_count_names_the_argument(devices, message):
    with pytest.raises(ValueError, match=message):
        distributed.data_parallel(devices)


def test_batch_that_does_not_split_names_batch_size_and_the_count(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\): expected a multiple of the 8 "
                                         r"devices \(--devices 8\).*; got 20"):
        run(tmp_path, batch_size=20, devices=8)
    assert not (tmp_path / train.CHECKPOINT).exists()


@pytest.mark.parametrize("variable, value, message", [
    (distributed.ENV_PROCESS_ID, "first", "process_id: expected an int >= 0; got 'first'"),
    (distributed.ENV_NUM_PROCESSES, "0", "num_processes: expected an int >= 1; got 0"),
], ids=["process-id", "num-processes"])
def test_bad_environment_names_the_variable_s_argument(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        distributed.initialize()


def test_initialize_refuses_a_process_id_outside_the_run():
    with pytest.raises(ValueError, match=r"process_id: expected 0 \.\.\. 1 \(--num-processes 2\); got 2"):
        distributed.initialize("localhost:1", 2, 2)


def test_initialize_does_nothing_without_a_run_to_join(monkeypatch):
    for variable in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(variable, raising=False)
    assert distributed.initialize() is False and jax.process_count() == 1


def test_command_line_flags_fill_the_devices_and_processes():
    config, _ = train.parse_args(["--devices", "all", "--coordinator", "host:1234", "--num-processes", "2",
                                  "--process-id", "1"])
    assert (config.devices, config.coordinator, config.num_processes, config.process_id) == ("all", "host:1234", 2, 1)
    assert train.parse_args(["--devices", "4"])[0].resolved().devices == 4
    assert "devices" not in config.resolved().identity()  # a checkpoint resumes on any count


def test_bad_devices_flag_is_an_error_naming_it(capsys):
    assert train.main(["--devices", "0", "--steps", "1", "--no-progress", "--no-plots"]) == 2
    assert "jaxcnn train: error: --devices: expected a positive number of devices or 'all'; got 0" in capsys.readouterr().err


def test_one_step_on_eight_devices_with_dropout_and_augmentation_equals_one_device():
    """The dropout masks and the shifts are drawn for the global batch from the step's key, so
    8 devices draw the same ones as 1: the same loss and update, to float32 rounding."""
    model = dropout_cnn()
    optimizer = optax.adamw(1e-2)
    with enable_x64(False):
        params, _ = model.init(jax.random.key(0), (40, 1, 40))
        state = train.TrainState(params, optimizer.init(params), jnp.asarray(3, jnp.int32))
        x, y = DATA.x_train[:40], DATA.y_train[:40]
        results = {}
        for devices in (1, 8):
            parallel = distributed.data_parallel(devices)
            step = train.make_train_step(model, optimizer, jax.random.key(1), train.augmentation("mnist1d"),
                                         jnp.float32, parallel)
            new, metrics = step(parallel.replicate(state), parallel.batch(x, 40), parallel.batch(y, 40))
            results[devices] = distributed.host((new.params, metrics["loss"]))
    (params_8, loss_8), (params_1, loss_1) = results[8], results[1]
    assert_close(loss_8, loss_1, "loss")
    for i, (p8, p1) in enumerate(zip(jax.tree_util.tree_leaves(params_8), jax.tree_util.tree_leaves(params_1))):
        assert_close(p8, p1, f"leaf {i}")


# ----------------------------------------------------------------------------- the acceptance

@pytest.fixture(scope="module")
def curves(tmp_path_factory) -> dict[str, Path]:
    """One device straight; 8 devices halted at 25 (kept as ``eight-at-25``), resumed on 8
    and (a copy) on 2. Computed once per session: pytest-xdist's workers share the folder
    above their own and take turns through a lock (the pattern of xdist's documentation)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "data-parallel-curves"
    root.mkdir(exist_ok=True)
    names = ("one", "eight", "eight-at-25", "two")
    with (root.parent / "data-parallel-curves.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            run(root / "one", devices=1)
            run(root / "eight", devices=8, halt_after=25)
            shutil.copytree(root / "eight", root / "eight-at-25")
            shutil.copytree(root / "eight", root / "two")
            run(root / "eight", devices=8, resume=True)
            run(root / "two", devices=2, resume=True)
            (root / "done").touch()
    return {name: root / name for name in names}


@pytest.mark.slow
def test_eight_devices_follow_one_device(curves):
    one, eight = losses(curves["one"]), losses(curves["eight"])
    assert len(one) == len(eight) == 50
    assert one[-1] < 0.5 * one[0]  # it trains: the comparison is not of constants
    assert_close(eight, one, "8-device losses vs 1 device")
    for i, (p8, p1) in enumerate(zip(params(curves["eight"]), params(curves["one"]))):
        assert_close(p8, p1, f"leaf {i} after 50 steps")
    report = json.loads((curves["eight"] / "report.json").read_text())
    assert (report["devices"], report["processes"], report["train_step_compilations"]) == (8, 1, 1)


@pytest.mark.slow   # four runs of 50 steps; the default tier: one step on 8 devices equals 1 (above)
def test_eight_device_checkpoint_resumed_on_two_continues_the_curve(curves):
    one, two = losses(curves["one"]), losses(curves["two"])
    assert [r["step"] for r in train_records(curves["two"])] == list(range(1, 51))
    assert_close(two, one, "8 devices, then 2 from its checkpoint, vs 1 device")
    for i, (p2, p1) in enumerate(zip(params(curves["two"]), params(curves["one"]))):
        assert_close(p2, p1, f"leaf {i} after 50 steps")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not MULTIPROCESS_CPU_COLLECTIVES, reason="jax 0.4.30's gloo CPU collectives time out "
                    "across processes (jaxcnn._compat.MULTIPROCESS_CPU_COLLECTIVES)")
def test_two_processes_resume_the_eight_device_checkpoint_and_follow_the_curve(curves, tmp_path):
    """Two processes of 4 CPU devices each, in one shared workdir holding the 8-device run's
    step-25 checkpoint: they run steps 26-50, process 0 alone writing metrics and checkpoint."""
    workdir = tmp_path / "run"
    shutil.copytree(curves["eight-at-25"], workdir)
    flags = ["--model", "mnist1d-cnn", "--steps", "50", "--batch-size", "40", "--lr", "1e-2",
             "--weight-decay", "1e-4", "--augment", "--log-every", "25", "--checkpoint-every", "25", "--eval-every", "25",
             "--eval-batch-size", "80", "--no-progress", "--no-plots", "--resume", "--workdir", str(workdir),
             "--devices", "all", "--coordinator", f"localhost:{free_port()}", "--num-processes", "2"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": str(Path(__file__).parent.parent)}
    script = Path(__file__).parent / "multiprocess_train.py"
    processes = [subprocess.Popen([sys.executable, str(script), *flags, "--process-id", str(i)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    for i, (p, out) in enumerate(zip(processes, outputs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
    assert "resuming from step 25" in outputs[0]
    assert [r["step"] for r in train_records(workdir)] == list(range(1, 51))  # each step once
    assert_close(losses(workdir), losses(curves["one"]), "two processes vs 1 device")
    for i, (pp, p1) in enumerate(zip(params(workdir), params(curves["one"]))):
        assert_close(pp, p1, f"leaf {i} after 50 steps")
    report = json.loads((workdir / "report.json").read_text())
    assert (report["devices"], report["processes"]) == (8, 2)
