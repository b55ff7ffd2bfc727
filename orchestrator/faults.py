"""Test-only fault injection: make the ``lth run`` driver SIGKILL itself at a chosen point.

``LTH_TEST_KILL_AT=<point>`` (used by tests/test_faults.py and scripts/chaos.py); the driver
dies with a real SIGKILL (no cleanup, no ``finally``) the first time it reaches ``<point>``:

* ``before_first_trial`` -- Ray is up, the campaign registered, no trial started yet;
* ``after_stage:<stage>`` -- ``<stage>`` (dense | trajectory | branch) finished and its
  rows committed, the next stage not started;
* ``commit:intent`` / ``commit:table:<table>`` / ``commit:recorded`` -- inside a commit of the
  driver (orchestrator/committer.py): the batch's intent written / ``<table>`` committed /
  the batch recorded, its staging files and intent not yet deleted;
* ``compact:optimized:<table>`` / ``compact:vacuumed:<table>`` -- inside the compaction at
  the end of a run (orchestrator/tables.py);
* ``store_write:<text>`` -- half-way through writing a store file whose root-relative path
  contains ``<text>`` (half the bytes are in the temporary file, the rename never happens).

The variable is removed from the environment when this module is imported (the store
imports it, before Ray starts), so an embedded Ray and its workers never inherit it: only
the driver dies. Unset, every hook is a string comparison and nothing else.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_KILL_AT = os.environ.pop("LTH_TEST_KILL_AT", None)


def die() -> None:
    """SIGKILL this process now."""
    os.kill(os.getpid(), signal.SIGKILL)


def kill_point(point: str) -> None:
    """Die here if ``LTH_TEST_KILL_AT`` names ``point``."""
    if _KILL_AT == point:
        die()


def kill_in_write(path: str) -> bool:
    """True if the write of ``path`` should be interrupted (the caller writes half, then ``die()``)."""
    return _KILL_AT is not None and _KILL_AT.startswith("store_write:") and _KILL_AT[len("store_write:"):] in path


def session_pids(sid: int) -> list[int]:
    """Live pids of session ``sid`` (Linux /proc): a driver or a ``ray start`` node with its
    embedded Ray and the Ray workers, which get process groups of their own but stay in the
    session. Tests and scripts/chaos.py kill whole sessions they started, never by name."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def kill_session(sid: int) -> None:
    """SIGKILL every live process of session ``sid``."""
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
