"""Tests for jaxcnn.train.interrupt: signals sent to this very process (``os.kill``), the
handlers compared with the ones installed before. The command's behaviour on them, in a
subprocess: test_train_command.py."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from jaxcnn.train.interrupt import TrainingInterrupted, stop_requests


@pytest.mark.parametrize("first, second", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGINT),
                                           (signal.SIGINT, signal.SIGTERM)], ids=["int-int", "term-int", "int-term"])
def test_the_first_signal_is_recorded_the_second_raises(first, second):
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt, match=f"{second.name} again"):
        with stop_requests() as stop_requested:
            assert stop_requested() is None
            os.kill(os.getpid(), first)
            assert stop_requested() == first.name   # recorded, nothing raised
            os.kill(os.getpid(), second)
            pytest.fail("the second signal did not stop the block")
    assert {number: signal.getsignal(number) for number in before} == before


def test_the_second_signal_wrapped_by_other_code_is_still_an_interrupt():
    """An XLA host callback turns the KeyboardInterrupt it was hit by into its own error."""
    with pytest.raises(KeyboardInterrupt, match="SIGINT again") as info:
        with stop_requests():
            os.kill(os.getpid(), signal.SIGTERM)
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt as err:
                raise RuntimeError("INTERNAL: CpuCallback error") from err
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(RuntimeError, match="not a signal"):  # without a second signal: as it was
        with stop_requests():
            os.kill(os.getpid(), signal.SIGTERM)
            raise RuntimeError("not a signal")


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def body():
        before = signal.getsignal(signal.SIGINT)
        with stop_requests() as stop_requested:
            seen.append((stop_requested(), signal.getsignal(signal.SIGINT) is before))
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [(None, True)]


def test_training_interrupted_is_a_keyboard_interrupt_naming_the_step(tmp_path):
    err = TrainingInterrupted(12, tmp_path, "SIGTERM")
    assert isinstance(err, KeyboardInterrupt) and (err.step, err.workdir, err.signal_name) == (12, tmp_path, "SIGTERM")
    assert str(err) == f"SIGTERM: stopped at step 12, checkpoint in {tmp_path}"
