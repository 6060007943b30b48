"""Stopping a ``jaxcnn train`` run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop).

The first signal is recorded, not raised: the loop asks after each step, finishes that step,
writes its checkpoint (atomically) and raises ``TrainingInterrupted``; ``jaxcnn train`` prints
``stopped at step N; continue with: jaxcnn train --resume --workdir D`` and exits 130 (128 +
SIGINT, the shell's convention). A second signal raises ``KeyboardInterrupt`` at once, as
Python's own Ctrl-C does (Python runs signal handlers between bytecodes: a step still inside an
XLA call finishes first). A checkpoint being written then is abandoned whole (the atomic write
removes its temporary file), so the last complete checkpoint stays as it was.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by a signal after ``step``, its checkpoint written in ``workdir``.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C keeps doing so.
    """

    def __init__(self, step: int, workdir: Path, signal_name: str) -> None:
        super().__init__(f"{signal_name}: stopped at step {step}, checkpoint in {workdir}")
        self.step, self.workdir, self.signal_name = step, workdir, signal_name


@contextlib.contextmanager
def stop_requests(signals: tuple[signal.Signals, ...] = SIGNALS) -> Iterator[Callable[[], str | None]]:
    """Inside the block, the first of ``signals`` is recorded: the yielded function returns its
    name (``"SIGINT"``), or ``None`` while none came. The handlers before are restored on exit.

    Signal handlers can only be set in the main thread; elsewhere nothing is installed and the
    function always returns ``None`` (the signals keep their usual effect).
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received: list[str] = []

    def again(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(f"{received[-1]} again")

    def first(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        for number in signals:
            signal.signal(number, again)

    previous = {number: signal.getsignal(number) for number in signals}
    for number in signals:
        signal.signal(number, first)
    try:
        yield lambda: received[0] if received else None
    except Exception as err:
        if len(received) > 1:  # the second signal's KeyboardInterrupt, wrapped by the code it hit
            raise KeyboardInterrupt(f"{received[-1]} again") from err  # (an XLA host callback: its error)
        raise
    finally:
        for number, handler in previous.items():  # None: a handler set outside Python
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
