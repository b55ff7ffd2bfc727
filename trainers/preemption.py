"""Graceful preemption: a SIGTERM (what a spot node's notice becomes) asks the running training to
checkpoint at its next safe point (the end of the current batch) and stop.

The signal handler only sets a flag; ``trainers.training.train`` polls it through its
``Checkpointer`` after every batch, saves a checkpoint and raises :class:`Preempted`, and the
process's entry point exits (``python -m trainers`` exits with 143 = 128 + SIGTERM). Nothing is
done inside the handler itself, so a signal can never land in the middle of a write.

A second SIGTERM while the first is being honoured kills the process the default way (a hung
write must not make the process unkillable).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM

_requested = threading.Event()
_honoured = threading.Event()  # the running training saved its checkpoint after a request
_running_count = 0
_count_lock = threading.Lock()


class Preempted(Exception):  # noqa: N818 - not an error: the run stopped on request, its checkpoint written
    """The training stopped on a preemption request after writing its checkpoint at ``iteration``."""

    def __init__(self, iteration: int):
        super().__init__(f"preempted: checkpoint written at iteration {iteration}")
        self.iteration = iteration


def requested() -> bool:
    return _requested.is_set()


def request() -> None:
    """Ask the running training to checkpoint and stop (what the SIGTERM handler does)."""
    _requested.set()


def clear() -> None:
    _requested.clear()
    _honoured.clear()


def honoured() -> None:
    """The running training wrote its checkpoint after a request (``train`` calls this)."""
    _honoured.set()


def wait_honoured(timeout: float) -> bool:
    """Wait up to ``timeout`` s for the running training to checkpoint after a request."""
    return _honoured.wait(timeout)


@contextlib.contextmanager
def checkpointing_training() -> Iterator[None]:
    """Marks work whose trainings honour preemption requests (they checkpoint into a slot) as
    running: a SIGTERM handler in another thread waits for a checkpoint only while some is."""
    global _running_count
    with _count_lock:
        _running_count += 1
    try:
        yield
    finally:
        with _count_lock:
            _running_count -= 1


def training_running() -> bool:
    return _running_count > 0


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    if _requested.is_set():  # the second one: die now
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    request()


@contextlib.contextmanager
def sigterm_checkpoints() -> Iterator[None]:
    """Within this block SIGTERM requests preemption instead of ending the process; the previous
    handler is restored on exit. Python runs signal handlers in the main thread only, so this is
    entered from the main thread (a ``ValueError`` from ``signal.signal`` otherwise)."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
