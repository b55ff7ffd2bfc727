"""Graceful preemption inside Ray workers: a SIGTERM (what a spot node's notice becomes) makes
the running unit checkpoint its training at the end of the current batch before the worker ends.

Python runs signal handlers in a process's main thread only, and a Ray worker's main thread
installs Ray's own SIGTERM handler (which ends the worker) just before it enters its task loop,
while Tune runs a function trainable in another thread. So ``install`` runs as Ray's
``worker_process_setup_hook`` (in the main thread, before that loop) and puts
``checkpoint_first`` in front of the handler Ray installs: on SIGTERM, if a unit is running
(``trainers.preemption.checkpointing_training``), it requests preemption, waits up to
``GRACE_S`` for the training to write its checkpoint into the store, then calls Ray's handler.
Tune's retry of the trial (on any node) continues the training from that checkpoint. A second
SIGTERM while waiting ends the worker at once (Ray's handler). Without the hook (a Ray that no
longer has the function it wraps), a SIGTERM ends the worker as before and the retry continues
from the last periodic checkpoint.
"""

from __future__ import annotations

import logging

from trainers import preemption

GRACE_S = 60.0  # longest wait for the checkpoint; spot notices give 30 s (AWS: 2 min)
HOOK = "orchestrator.worker_signals.install"  # ray.init(runtime_env={"worker_process_setup_hook": HOOK})
log = logging.getLogger(__name__)


def checkpoint_first(handler):
    """A SIGTERM handler that lets the running unit checkpoint, then calls ``handler``."""

    def on_sigterm(signum, frame):
        if preemption.training_running() and not preemption.requested():
            preemption.request()
            if not preemption.wait_honoured(GRACE_S):
                log.warning("SIGTERM: no checkpoint within %.0f s; the worker ends anyway", GRACE_S)
        if callable(handler):
            handler(signum, frame)

    return on_sigterm


def install() -> None:
    """Ray's worker setup hook: wrap the SIGTERM handler Ray's worker loop is about to install."""
    import ray._private.utils as ray_utils

    original = getattr(ray_utils, "set_sigterm_handler", None)
    if original is None or getattr(original, "_lth_wrapped", False):
        return

    def set_sigterm_handler(handler):
        original(checkpoint_first(handler))

    set_sigterm_handler._lth_wrapped = True
    ray_utils.set_sigterm_handler = set_sigterm_handler
