"""Tests of ``jaxcnn train`` as a user runs it: the console script in a subprocess
(jaxcnn/train/command.py, interrupt.py, resume.py). References: the files a run leaves
(checkpoint, metrics, report) read back with numpy and json, runs compared with each other bit
for bit, the help text against the fields of ``TrainConfig``, and the published Fashion-MNIST
files.

The runs are tiny (mnist1d-cnn, batches of 20 from 200 examples, a few steps), on MNIST-1D
generated once per session into a shared ``--data-dir``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxcnn.train import CHECKPOINT, TrainConfig, checkpoint
from test_cli import JAXCNN, help_entries
from test_train import assert_same_run, train_records
from test_train import checkpoint_arrays as saved

# The command as a user runs it: JAX's defaults, one CPU device (not the suite's eight).
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
TINY = ["--model", "mnist1d-cnn", "--batch-size", "20", "--train-subset", "200", "--no-progress", "--no-plots"]


def jaxcnn(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300,
           script: str | None = None) -> subprocess.CompletedProcess:
    """``jaxcnn ARGS`` (or ``python -c script ARGS``), its output captured."""
    command = [sys.executable, "-c", script, *args] if script else [*JAXCNN, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env or ENV, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """MNIST-1D's cache, filled by the first run that uses it."""
    return str(tmp_path_factory.mktemp("mnist1d-cache"))


def files(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in workdir.iterdir()}


# ----------------------------------------------------------------------------- a finished run

@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir) -> Path:
    """An 8-step run (the onecycle schedule, logged every 2 steps, a checkpoint every 4)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    result = jaxcnn("train", *TINY, "--steps", "8", "--log-every", "2", "--checkpoint-every", "4",
                    "--data-dir", data_dir, "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.mark.slow   # a training run in a subprocess: the full tier
def test_a_new_run_into_a_folder_holding_one_is_refused_unless_overwrite(finished, tmp_path, data_dir):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    before = files(workdir)
    result = jaxcnn("train", *TINY, "--steps", "8", "--data-dir", data_dir, "--workdir", str(workdir))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"jaxcnn train: error: --workdir {workdir} holds a run (checkpoint at step 8 of "
                             f"a run of 8 steps): continue it with --resume, or start over with --overwrite "
                             f"(deletes its checkpoint, metrics, report and plots)\n")
    assert files(workdir) == before   # nothing touched
    result = jaxcnn("train", *TINY, "--steps", "4", "--overwrite", "--data-dir", data_dir, "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    assert [r["step"] for r in train_records(workdir)] == [1, 2, 3, 4]
    assert int(saved(workdir)["step"]) == 4 and json.loads((workdir / "report.json").read_text())["steps"] == 4


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    result = jaxcnn("train", "--resume", "--workdir", str(tmp_path / "typo"))
    assert result.returncode == 2
    assert result.stderr == (f"jaxcnn train: error: --resume: no checkpoint in {tmp_path / 'typo'} (no "
                             f"checkpoint.npz): nothing to continue; start a new run without --resume\n")
    assert not (tmp_path / "typo").exists()


@pytest.mark.slow   # a training run in a subprocess: the full tier
def test_resume_refuses_a_flag_that_changes_the_run(finished):
    before = files(finished)
    result = jaxcnn("train", "--resume", "--workdir", str(finished), "--lr", "0.5")
    assert result.returncode == 2
    assert result.stderr.startswith(f"jaxcnn train: error: --lr: the run in {finished} was made with --lr 0.003; "
                                    f"got --lr 0.5. A resumed run keeps its settings: drop --lr")
    result = jaxcnn("train", "--resume", "--workdir", str(finished), "--no-augment")
    assert result.returncode == 2 and "--augment: the run in" in result.stderr and "got --no-augment" in result.stderr
    assert files(finished) == before


@pytest.mark.slow   # a training run in a subprocess: the full tier
def test_resume_remembers_the_run_and_extends_it_exactly(finished, tmp_path, data_dir):
    """``--resume --workdir D --steps 12``, no other flag: the 8-step run continues with its own
    settings (batch, subset, model, intervals, data folder), bit for bit the run started with
    ``--steps 12 --schedule-steps 8``; a flag repeated with its run's value is accepted."""
    workdir = tmp_path / "resumed"
    shutil.copytree(finished, workdir)
    result = jaxcnn("train", "--resume", "--workdir", str(workdir), "--steps", "12", "--model", "mnist1d-cnn")
    assert result.returncode == 0, result.stderr
    assert "resuming from step 8" in result.stdout
    assert "note: the onecycle schedule ends at step 8; steps 9-12 run at its final learning rate" in result.stdout
    config = json.loads((workdir / "report.json").read_text())["config"]
    assert {k: config[k] for k in ("model", "batch_size", "train_subset", "log_every", "checkpoint_every",
                                   "data_dir", "plots", "schedule_steps", "steps")} == {
        "model": "mnist1d-cnn", "batch_size": 20, "train_subset": 200, "log_every": 2, "checkpoint_every": 4,
        "data_dir": data_dir, "plots": False, "schedule_steps": 8, "steps": 12}
    straight = tmp_path / "straight"
    result = jaxcnn("train", *TINY, "--steps", "12", "--schedule-steps", "8", "--log-every", "2",
                    "--checkpoint-every", "4", "--data-dir", data_dir, "--workdir", str(straight))
    assert result.returncode == 0, result.stderr
    assert_same_run(workdir, straight)
    assert [r["step"] for r in train_records(workdir)] == list(range(1, 13))


@pytest.mark.slow   # a training run in a subprocess: the full tier
def test_a_damaged_checkpoint_is_named(finished, tmp_path):
    workdir = tmp_path / "damaged"
    shutil.copytree(finished, workdir)
    path = workdir / CHECKPOINT
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF   # inside an entry's data
    path.write_bytes(bytes(raw))
    result = jaxcnn("train", "--resume", "--workdir", str(workdir))
    assert result.returncode == 2
    assert result.stderr.startswith(f"jaxcnn train: error: {path}: not a jaxcnn checkpoint: ")
    assert "damaged (CRC-32 mismatch)" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- bad values

def test_a_bad_value_is_refused_naming_the_flag(tmp_path):
    result = jaxcnn("train", "--batch-size", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "jaxcnn train: error: --batch-size: expected a positive int; got 0\n"
    assert list(tmp_path.iterdir()) == []   # refused before any folder was made


@pytest.mark.parametrize("flags, message", [
    (["--micro-batches", "3"], "--micro-batches: expected a divisor of the batch size 100; got 3"),
    (["--lr", "-1"], "--lr: expected a non-negative number; got -1.0"),
    (["--schedule-steps", "0"], "--schedule-steps: expected a positive int; got 0"),
    (["--eval-every", "0"], "--eval-every: expected a positive int; got 0"),
    (["--augment", "flip"], "--augment: expected one of ('shift',); got 'flip'"),
    (["--model", "fashion-cnn"], "--model: fashion-cnn is made for the fashion dataset"),
    (["--download"], "--download: MNIST-1D is generated locally"),
    (["--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
    (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
    (["--channels-last", "--channels-first"], "argument --channels-first: not allowed with argument --channels-last"),
], ids=["micro-batches", "lr", "schedule-steps", "eval-every", "augment", "model", "download", "resume-overwrite",
        "steps-not-a-number", "both-layouts"])
def test_each_bad_value_names_its_flag(flags, message, tmp_path, monkeypatch, capsys):
    """In process (``train.main``, what the console script calls): one line naming the flag."""
    from jaxcnn import train
    monkeypatch.chdir(tmp_path)
    assert train.main([*flags, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and re.search(r"error: (argument )?--[a-z-]+: ", err), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("written, given", [(True, "--channels-first"), (False, "--channels-last"),
                                            (None, "--channels-last")], ids=["last", "first", "first-no-key"])
def test_resume_refuses_the_other_layout_naming_the_flag_given(written, given, tmp_path, capsys):
    """A run's layout is stored (a checkpoint without it, from before the flag, ran channels
    first); resuming with the other layout's flag is refused naming that flag and the run's, before
    any array is read."""
    from jaxcnn import train
    remembered = TrainConfig(model="mnist1d-resnet", steps=8, channels_last=bool(written)).resolved().remembered()
    if written is None:
        del remembered["channels_last"]
    checkpoint.save(tmp_path / CHECKPOINT, {}, remembered, step=0, key=[0, 0], epoch=0, position=0, elapsed=0.0)
    assert train.main(["--resume", "--workdir", str(tmp_path), given, "--no-progress"]) == 2
    made = "--channels-last" if written else "--channels-first"
    assert (f"jaxcnn train: error: {given}: the run in {tmp_path} was made with {made}; got {given}. A resumed "
            f"run keeps its settings: drop {given}") in capsys.readouterr().err


# ----------------------------------------------------------------------------- help

def test_train_help_gives_every_flag_a_text_and_its_default():
    """Every ``TrainConfig`` field has its flag, each flag a text that says its default; the
    flags the issue found bare among them. docs/training.md shows this very text (100 columns)."""
    result = jaxcnn("train", "--help", env={**ENV, "COLUMNS": "100"})
    assert result.returncode == 0
    found = help_entries(result.stdout)
    switches = {"progress": "--no-progress", "plots": "--no-plots"}
    fields = {switches.get(f.name, "--" + f.name.replace("_", "-")) for f in dataclasses.fields(TrainConfig)}
    assert fields | {"--workdir", "--download", "--no-augment", "--channels-first", "--help"} == set(found)
    for flag in ("--steps", "--epochs", "--batch-size", "--seed", "--log-every", "--checkpoint-every",
                 "--eval-every", "--train-subset", "--no-plots"):
        assert "(default" in found[flag]
    for flag, text in found.items():
        if flag != "--help":
            assert "(default: " in text or "(default per dataset: " in text, text
    assert "(default: 50)" in found["--log-every"] and "(default per dataset: mnist1d 100, fashion 128, clips 64)" \
        in found["--batch-size"]
    assert "examples:" in result.stdout and "jaxcnn train --resume --workdir" in result.stdout
    assert '"batch_size":' not in result.stdout   # the defaults said in words, not a JSON blob
    docs = (Path(__file__).parent.parent / "docs" / "training.md").read_text()
    assert f"## `jaxcnn train --help`\n\n```text\n{result.stdout}```\n" in docs


# ----------------------------------------------------------------------------- interrupts

def start(workdir: Path, data_dir: str, *flags: str, script: str | None = None,
          env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", script, "train"] if script else [*JAXCNN, "train"]
    return subprocess.Popen([*command, *TINY, "--data-dir", data_dir, "--log-every", "1",
                             "--workdir", str(workdir), *flags], env=env or ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_step(process: subprocess.Popen, workdir: Path, step: int, timeout: float = 240) -> None:
    """Until the metrics hold ``step`` (the run logs every step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(r["step"] >= step for r in train_records(workdir)):
                return
        except (FileNotFoundError, json.JSONDecodeError):   # not yet written, or a line half written
            pass
        if process.poll() is not None:
            raise AssertionError(f"the run ended first: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"step {step} not logged in {timeout} s")


@pytest.mark.slow   # a training run in a subprocess: the full tier
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_after_the_step_with_its_checkpoint(sent, tmp_path, data_dir):
    """Sent once the first step is logged: exit 130, the line that says how to continue, a
    checkpoint of the step it stopped at (the run checkpoints every 500 steps otherwise), no
    traceback; ``--resume`` then continues from there."""
    workdir = tmp_path / "run"
    process = start(workdir, data_dir, "--steps", "100000")
    wait_for_step(process, workdir, 1)
    process.send_signal(sent)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    step = int(saved(workdir)["step"])
    assert err.splitlines()[-1] == f"stopped at step {step}; continue with: jaxcnn train --resume --workdir {workdir}"
    assert "Traceback" not in err and 1 <= step < 100000
    assert [r["step"] for r in train_records(workdir)] == list(range(1, step + 1))
    assert sorted(p.name for p in workdir.iterdir()) == ["checkpoint.npz", "metrics.jsonl"]  # no temporary file
    if sent == signal.SIGINT:
        result = jaxcnn("train", "--resume", "--workdir", str(workdir), "--steps", str(step + 2))
        assert result.returncode == 0, result.stderr
        assert f"resuming from step {step}" in result.stdout
        assert [r["step"] for r in train_records(workdir)] == list(range(1, step + 3))


# The command with two test models registered: "test-slow", whose every forward pass waits
# JAXCNN_TEST_WAIT seconds in a host callback (which XLA runs synchronously: the step's call
# returns when it is done), its output zeros added to the input (stop_gradient: no derivative
# asked of it); "test-wide", two 1024-wide dense layers (dispatched asynchronously, as a real
# model is). Arguments: the command's.
TEST_MODELS = """
import os, sys, time
import jax, numpy as np
from jaxcnn import cli, models, nn

def wait(x):
    time.sleep(float(os.environ["JAXCNN_TEST_WAIT"]))
    return np.zeros(x.shape, x.dtype)

def apply(params, x, **kwargs):
    return x + jax.pure_callback(wait, jax.ShapeDtypeStruct(x.shape, x.dtype), jax.lax.stop_gradient(x))

models.MODELS["test-slow"] = lambda num_classes, *, impl: nn.serial(
    nn.Layer(lambda key, shape: ((), shape), apply, "wait"), nn.Flatten(), nn.Dense(num_classes))
models.MODELS["test-wide"] = lambda num_classes, *, impl: nn.serial(
    nn.Flatten(), nn.Dense(1024), nn.ReLU(), nn.Dense(1024), nn.ReLU(), nn.Dense(num_classes))
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow   # a training run in a subprocess: the full tier
def test_a_second_signal_stops_at_once_keeping_the_last_checkpoint(tmp_path, data_dir):
    """Two signals within one 2-second step (a checkpoint after every step): the first asks for a
    stop after the step, the second stops at once, before the step's checkpoint: exit 130, the
    last complete checkpoint kept and readable, no temporary file left."""
    workdir = tmp_path / "run"
    process = start(workdir, data_dir, "--steps", "1000", "--model", "test-slow", "--checkpoint-every", "1",
                    script=TEST_MODELS, env={**ENV, "JAXCNN_TEST_WAIT": "2.0"})
    wait_for_step(process, workdir, 3)
    kept = int(saved(workdir)["step"])
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    # The last line is the command's (jax 0.4 logs the callback the signal interrupted before it).
    assert err.splitlines()[-1].startswith("jaxcnn train: interrupted: stopped at once. The last checkpoint "
                                           "is kept (checkpoint at step"), err
    assert "stopped at step" not in err
    _, arrays = checkpoint.read(workdir / CHECKPOINT, ("step",))
    assert int(arrays["step"]) >= kept >= 2
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(".")]


@pytest.mark.slow   # a training run in a subprocess: the full tier
def test_throughput_is_measured_when_the_steps_are_done(tmp_path, data_dir):
    """test-wide logged every 4 steps: each logged rate within 3x of the run's, where one taken
    when the steps were dispatched, not done, reads hundreds of times more (issue 27 saw 71,168
    examples/s)."""
    workdir = tmp_path / "run"
    result = jaxcnn("train", *TINY, "--model", "test-wide", "--steps", "12", "--log-every", "4",
                    "--data-dir", data_dir, "--workdir", str(workdir), script=TEST_MODELS)
    assert result.returncode == 0, result.stderr
    overall = json.loads((workdir / "report.json").read_text())["examples_per_s"]
    rates = [r["examples_per_s"] for r in train_records(workdir)]
    assert rates[0] == 0 and overall > 0   # the first step is startup: no rate
    assert all(rate <= 3 * overall for rate in rates), (rates, overall)


# ----------------------------------------------------------------------------- download

@pytest.mark.slow   # a training run in a subprocess: the full tier
def test_download_fetches_fashion_mnist_verified_into_data_dir(tmp_path):
    """``--download`` from a local mirror (file://, through $JAXCNN_FASHION_MNIST_MIRRORS):
    Debian's copy, whose .gz headers differ from the official files but whose data is theirs;
    then one step of fashion-cnn on it. A mirror serving other bytes is refused, nothing kept."""
    debian = Path("/usr/share/datasets/fashion-mnist")
    if not (debian / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    flags = ["--dataset", "fashion", "--download", "--train-subset", "64", "--batch-size", "32", "--steps", "2",
             "--halt-after", "1", "--no-progress", "--no-plots"]
    bad = tmp_path / "bad-mirror"
    bad.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (bad / f"{name}.gz").write_bytes(b"not fashion-mnist")
    env = {**ENV, "JAXCNN_FASHION_MNIST_MIRRORS": bad.as_uri()}
    result = jaxcnn("train", *flags, "--data-dir", str(tmp_path / "data"), "--workdir", str(tmp_path / "r0"), env=env)
    assert result.returncode == 2
    assert "jaxcnn train: error: train-images-idx3-ubyte.gz: no mirror gave a verified copy" in result.stderr
    assert "SHA-256" in result.stderr and list((tmp_path / "data").iterdir()) == []
    env = {**ENV, "JAXCNN_FASHION_MNIST_MIRRORS": debian.as_uri()}
    result = jaxcnn("train", *flags, "--data-dir", str(tmp_path / "data"), "--workdir", str(tmp_path / "r1"), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("SHA-256 verified") == 4
    assert files(tmp_path / "data") == files(debian)
    assert int(saved(tmp_path / "r1")["step"]) == 1
