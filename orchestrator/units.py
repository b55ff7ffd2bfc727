"""The bodies of the three unit kinds.

Each unit reads its inputs from the store (artifacts of the units it depends on), calls
``trainers.trajectory``, and writes rows under deterministic keys (``<unit_id>`` for the
dense run, ``<unit_id>-L<level>`` per level), so a retried or resumed unit overwrites its
own files and never duplicates rows. Its marker (``ledger.UnitMarker``) is rewritten at the
start ("running"), after every level (``levels_done``: where a killed unit resumes) and
last with the final status, so "done" means every row is in. A training inside a unit
checkpoints into the store (``orchestrator.checkpoints``) and a retried unit continues it
there, on any node; the marker's ``extra["resumes"]`` records where each retry started.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from orchestrator import continuation, paths
from orchestrator.checkpoints import UnitCheckpoints
from orchestrator.ledger import UnitMarker, now
from orchestrator.plan import Unit
from orchestrator.store import Store
from trainers import preemption
from trainers.checkpoint import CheckpointSlot
from trainers.config import CheckpointConfig
from trainers.records import LevelSummary, MaskLayerStats, Record


def runnable(store: Store, campaign: str, unit: Unit) -> tuple[bool, str | None]:
    """(can run now, why not). A unit runs when its dense run is done and, for a branch,
    its trajectory produced at least one level (a trajectory that diverged at level j
    still gives masks 1..j)."""
    for dep in unit.depends:
        m = UnitMarker.load(store, campaign, dep)
        if dep.startswith("t-") and m.finished and m.levels_done > 0:
            continue
        if m.status != "done":
            return False, f"{dep} {m.status or 'pending'}" + (f": {m.reason}" if m.reason else "")
    return True, None


def run_unit(store: Store, campaign: str, unit: Unit, *, node: str | None = None,
             actor: str | None = None, checkpoint: CheckpointConfig | None = None) -> UnitMarker:
    """Run one unit unless already finished; return its final marker. ``node`` / ``actor``: the
    Ray node and actor running it, kept in the marker (a unit whose actor Ray kills for want of
    memory is found by its actor id, see ``execution``). ``checkpoint``: how often its trainings
    checkpoint (the campaign's ``checkpoint`` block; its defaults when None)."""
    import torch

    from trainers.device import pick_device

    old = UnitMarker.load(store, campaign, unit.unit_id)
    if old.finished:
        return old
    device = pick_device()
    marker = UnitMarker(
        unit_id=unit.unit_id,
        stage=unit.stage,
        status="running",
        attempts=old.attempts + 1,
        host=socket.gethostname(),
        node=node,
        actor=actor,
        device=str(device),
        levels_done=old.levels_done,
        started_at=old.started_at or now(),
        seconds=old.seconds,
        reason=None,
        threads=torch.get_num_threads(),
        pid=os.getpid(),
        extra=old.extra,
    )
    marker.save(store, campaign)
    t0 = time.perf_counter()
    ckpts = UnitCheckpoints(store, campaign, marker, checkpoint or CheckpointConfig())

    def level_done(level: int) -> None:
        marker.levels_done = level
        marker.seconds = round(old.seconds + time.perf_counter() - t0, 3)
        marker.save(store, campaign)

    def level_written(level: int) -> None:  # the level's rows are staged: its checkpoint is spent
        level_done(level)
        ckpts.clear()

    try:
        body = {"dense": _run_dense, "trajectory": _run_trajectory, "branch": _run_branch}[unit.stage]
        with preemption.checkpointing_training():  # a SIGTERM waits for its checkpoint (worker_signals)
            status, reason = body(store, campaign, unit, device, marker.levels_done, level_written, ckpts.slot())
    except BaseException as e:
        marker.reason = f"{type(e).__name__}: {e}"
        level_done(marker.levels_done)  # the checkpoint stays: the retry continues from it
        raise
    ckpts.clear()
    marker.status, marker.reason, marker.finished_at = status, reason, now()
    marker.extra["served"] = unit.served_key  # the cells its rows went to (orchestrator/reuse.py)
    level_done(marker.levels_done)  # the final marker, written last
    continuation.record(store, campaign, unit, marker)  # a longer schedule can continue it
    return marker


# ----------------------------------------------------------------------------- bodies


def _status_of(records: list[Record]) -> tuple[str, str | None]:
    for r in records:
        if isinstance(r, LevelSummary) and r.status != "done":
            return r.status, r.reason or f"level {r.level} {r.reset} {r.status}"
    return "done", None


def _save_dense(store: Store, unit_id: str, dense: Any) -> None:
    state = dense.to_state()
    state["init"], state["final"] = _cpu(dense.init), _cpu(dense.final)
    state["rewind_points"] = {int(k): _cpu(w) for k, w in dense.rewind_points.items()}
    store.put_tensors(paths.artifact(unit_id, "dense"), state)


def load_dense(store: Store, unit_id: str) -> Any:
    from trainers.trajectory import DenseState

    return DenseState.from_state(store.get_tensors(paths.artifact(unit_id, "dense")))


def _cpu(w: dict) -> dict:
    return {k: v.detach().cpu() for k, v in w.items()}


def _run_dense(store: Store, campaign: str, unit: Unit, device, levels_done: int, level_done: Callable,
               checkpoints: CheckpointSlot) -> tuple:
    from trainers.trajectory import train_dense

    records: list[Record] = []
    dense = train_dense(unit.setup, device=device, on_record=records.append, rewind_iterations=unit.rewind_iterations,
                        checkpoints=checkpoints)
    _save_dense(store, unit.unit_id, dense)
    store.stage_records(campaign, unit.unit_id, unit.unit_id, unit.serves, records)
    level_done(0)
    return _status_of(records)


def _level_source(setup, traj_id: str, level: int, dense, store: Store) -> dict:
    """Weights the level's mask and the finetune-style resets start from: the trained dense
    net for level 1 and for one-shot pruning, else the mask driver's weights of level-1."""
    if level == 1 or setup.prune.schedule == "oneshot":
        return dense.final
    return store.get_tensors(paths.artifact(traj_id, f"L{level - 1}"))["driver"]


def _run_trajectory(store: Store, campaign: str, unit: Unit, device, levels_done: int, level_done: Callable,
                    checkpoints: CheckpointSlot) -> tuple:
    """trainers.trajectory.run_trajectory with the driver reset only; after each level its
    mask + driver weights become an artifact (the resume point) and its rows are written:
    training rows to the driver's own cells, mask statistics to every cell of the trajectory."""
    from trainers.trajectory import TrajectoryState, run_trajectory

    uid = unit.unit_id
    resume = None
    if levels_done:
        saved = store.get_tensors(paths.artifact(uid, f"L{levels_done}"))
        resume = TrajectoryState(levels_done, saved["mask"], saved["driver"])
    pending: list[Record] = []
    outcome = ["done", None]

    def on_level(state: TrajectoryState) -> None:
        store.put_tensors(paths.artifact(uid, f"L{state.level}"),
                          {"mask": _cpu(state.mask), "driver": _cpu(state.driver_weights)})
        key = f"{uid}-L{state.level}"
        stats = [r for r in pending if isinstance(r, MaskLayerStats)]
        training = [r for r in pending if not isinstance(r, MaskLayerStats)]
        if unit.serves:  # the driver's own cells (none when every cell of the trajectory is a branch)
            store.stage_records(campaign, key, uid, unit.serves, training)
        store.stage_records(campaign, key, uid, unit.mask_serves, stats)
        pending.clear()
        level_done(state.level)
        status, reason = _status_of(training)
        if status != "done" and outcome[0] == "done":
            outcome[:] = [status, reason]

    run_trajectory(unit.setup, [unit.reset], device=device, on_record=pending.append,
                   dense=load_dense(store, unit.depends[0]), resume=resume, on_level_done=on_level,
                   checkpoints=checkpoints)
    return tuple(outcome)


def _run_branch(store: Store, campaign: str, unit: Unit, device, levels_done: int, level_done: Callable,
                checkpoints: CheckpointSlot) -> tuple:
    from trainers.trajectory import retrain

    setup, uid = unit.setup, unit.unit_id
    dense_id, traj_id = unit.depends
    dense = load_dense(store, dense_id)
    available = UnitMarker.load(store, campaign, traj_id).levels_done
    status, reason = "done", None
    for level in range(levels_done + 1, available + 1):
        mask = store.get_tensors(paths.artifact(traj_id, f"L{level}"))["mask"]
        source = _level_source(setup, traj_id, level, dense, store)
        records: list[Record] = []
        retrain(setup, level=level, mask=mask, reset=unit.reset, dense=dense, source=source,
                device=device, on_record=records.append, checkpoints=checkpoints)
        store.stage_records(campaign, f"{uid}-L{level}", uid, unit.serves, records)
        level_done(level)
        status, reason = _status_of(records)
        if status != "done":
            break
    if status == "done" and available < setup.prune.levels:
        status, reason = "diverged", f"trajectory {traj_id} stopped at level {available}"
    return status, reason
