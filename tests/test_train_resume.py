"""Tests of stopping and resuming a ``jaxcnn.train`` run (jaxcnn/train/resume.py) on the
synthetic data of test_train.py: a run stopped halfway and resumed is bit-identical to one run
straight, one extended on resume is the longer run, a resume that is not the same run is refused
by name, a workdir holding a run is kept unless told to overwrite it, checkpoints from before
the stored settings and before the default layout still resume, and the layout a run takes is
settled when it starts and named in its report and checkpoint."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn import models, train
from jaxcnn.train import loop
from test_train import (BASE, DATA, IMAGES, LAYOUT_RUN, assert_same_run, checkpoint_arrays,
                        dropout_cnn, run, train_records)


# ----------------------------------------------------------------------------- stop and resume

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


@pytest.mark.parametrize("written", [False, pytest.param(True, marks=pytest.mark.slow)],   # one way by default
                         ids=["first-resumed-last", "last-resumed-first"])
@pytest.mark.slow   # several training runs: the full tier
def test_resume_refuses_a_layout_change(tmp_path, written):
    config = {**BASE, **LAYOUT_RUN, "halt_after": 1}
    train.train_and_evaluate(train.TrainConfig(**config, channels_last=written), tmp_path, dataset=IMAGES)
    with pytest.raises(ValueError, match=f"channels_last: the run in .* was made with channels_last={written}; got {not written}"):
        train.train_and_evaluate(train.TrainConfig(**config, channels_last=not written, resume=True),
                                 tmp_path, dataset=IMAGES)


# ----------------------------------------------------------------------------- resume and workdirs

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
