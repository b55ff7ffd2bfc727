"""One training per unit across campaigns: a global claim per unit id (``paths.unit_claim``).

Two drivers of two campaigns that plan the same unit at the same time both find it unfinished
before they start (``orchestrator/reuse.py`` serves only what is finished). So a worker trains
a unit only while it holds the unit's claim in the store: a lease (``orchestrator/lease.py``,
the same mechanism as the campaign's: flock-serialised changes, heartbeat, takeover of a dead
holder: at once on its host, after ``LTH_LEASE_STALE_S`` from another host). A worker that
finds the claim held waits, polling; when the holder finished the unit, its rows are served
to this campaign (``reuse.serve_one``) instead of trained; when the holder died or failed, the
worker takes the claim and trains.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator import paths
from orchestrator.lease import LeaseHeld, Site, take
from orchestrator.plan import Unit
from orchestrator.reuse import serve_one
from orchestrator.store import Store

POLL_S = 1.0  # a waiting worker looks for the holder's result this often


def unit_site(unit_id: str) -> Site:
    return Site(paths.unit_claim(unit_id), paths.unit_claim_lock(unit_id), f"unit {unit_id}")


def train_once(store: Store, campaign: str, unit: Unit, train: Callable[[], object]) -> str:
    """Run ``train`` (the unit's body for ``campaign``) under the unit's claim, unless another
    campaign has finished the unit: then its rows are served to ``campaign``. Returns "trained"
    or "reused" (the marker's ``extra["waited_s"]``: how long this worker waited for a holder)."""
    started = time.monotonic()
    while True:
        waited = {"waited_s": round(time.monotonic() - started, 1)}
        if serve_one(store, campaign, unit, extra=waited):
            return "reused"
        try:
            claim = take(store, unit_site(unit.unit_id))
        except LeaseHeld:
            time.sleep(POLL_S)  # another campaign's worker trains it: wait for its result
            continue
        try:
            # the holder we waited for may have finished between our look and the take
            if serve_one(store, campaign, unit, extra={"waited_s": round(time.monotonic() - started, 1)}):
                return "reused"
            train()
            return "trained"
        finally:
            claim.release()
