"""The bodies of the three unit kinds, and the per-cell ``trials`` rows.

Each unit reads its inputs from the store (artifacts of the units it depends on), calls
``trainers.trajectory``, and writes rows under deterministic keys (``<unit_id>`` for the
dense run, ``<unit_id>-L<level>`` per level), so a retried or resumed unit overwrites its
own files and never duplicates rows. Its marker ``_units/campaign=<name>/<unit_id>.json``
is rewritten at the start ("running"), after every level (``levels_done``: where a
killed unit resumes) and last with the final status, so "done" means every row is in.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from orchestrator.plan import Plan, Unit
from orchestrator.schema import AXIS_COLUMNS
from orchestrator.store import Store
from trainers.records import LevelSummary, MaskLayerStats, Record

FINISHED = ("done", "diverged")  # a unit with such a marker is never run again
FINAL = ("done", "diverged", "failed")
_SEVERITY = {"done": 0, "diverged": 1, "failed": 2}


def marker_path(campaign: str, unit_id: str) -> str:
    return f"_units/campaign={campaign}/{unit_id}.json"


def artifact_path(unit_id: str, name: str) -> str:
    return f"_artifacts/{unit_id}/{name}.pt"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def read_marker(store: Store, campaign: str, unit_id: str) -> dict | None:
    return store.get_json(marker_path(campaign, unit_id))


def runnable(store: Store, campaign: str, unit: Unit) -> tuple[bool, str | None]:
    """(can run now, why not). A unit runs when its dense run is done and, for a branch,
    its trajectory produced at least one level (a trajectory that diverged at level j
    still gives masks 1..j)."""
    for dep in unit.depends:
        m = read_marker(store, campaign, dep) or {}
        status = m.get("status")
        if dep.startswith("t-") and status in FINISHED and m.get("levels_done", 0) > 0:
            continue
        if status != "done":
            return False, f"{dep} {status or 'pending'}" + (f": {m['reason']}" if m.get("reason") else "")
    return True, None


def run_unit(store: Store, campaign: str, unit: Unit, *, node: str | None = None, actor: str | None = None) -> dict:
    """Run one unit unless already finished; return its final marker. ``node`` / ``actor``: the
    Ray node and actor running it, kept in the marker (a unit whose actor Ray kills for want of
    memory is found by its actor id, see ``execution``)."""
    import torch

    from trainers.device import pick_device

    path = marker_path(campaign, unit.unit_id)
    old = store.get_json(path) or {}
    if old.get("status") in FINISHED:
        return old
    device = pick_device()
    marker = {
        "unit_id": unit.unit_id,
        "stage": unit.stage,
        "status": "running",
        "attempts": int(old.get("attempts", 0)) + 1,
        "host": socket.gethostname(),
        "node": node,
        "actor": actor,
        "device": str(device),
        "levels_done": int(old.get("levels_done", 0)),
        "started_at": old.get("started_at") or _now(),
        "seconds": float(old.get("seconds", 0.0)),  # compute seconds, summed over attempts
        "reason": None,
        "threads": torch.get_num_threads(),
        "pid": os.getpid(),  # the process running the unit (fault-injection tests kill it)
    }
    store.put_json(path, marker)
    t0 = time.perf_counter()

    def level_done(level: int, extra: dict | None = None) -> None:
        marker["levels_done"] = level
        marker["seconds"] = round(float(old.get("seconds", 0.0)) + time.perf_counter() - t0, 3)
        marker.update(extra or {})
        store.put_json(path, marker)

    try:
        body = {"dense": _run_dense, "trajectory": _run_trajectory, "branch": _run_branch}[unit.stage]
        status, reason = body(store, campaign, unit, device, marker["levels_done"], level_done)
    except BaseException as e:
        marker["reason"] = f"{type(e).__name__}: {e}"
        level_done(marker["levels_done"])
        raise
    marker.update(status=status, reason=reason, finished_at=_now())
    level_done(marker["levels_done"])  # the final marker, written last
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
    store.put_tensors(artifact_path(unit_id, "dense"), state)


def load_dense(store: Store, unit_id: str) -> Any:
    from trainers.trajectory import DenseState

    return DenseState.from_state(store.get_tensors(artifact_path(unit_id, "dense")))


def _cpu(w: dict) -> dict:
    return {k: v.detach().cpu() for k, v in w.items()}


def _run_dense(store: Store, campaign: str, unit: Unit, device, levels_done: int, level_done: Callable) -> tuple:
    from trainers.trajectory import train_dense

    records: list[Record] = []
    dense = train_dense(unit.setup, device=device, on_record=records.append, rewind_iterations=unit.rewind_iterations)
    _save_dense(store, unit.unit_id, dense)
    store.write_records(campaign, unit.unit_id, unit.unit_id, unit.serves, records)
    level_done(0)
    return _status_of(records)


def _level_source(setup, traj_id: str, level: int, dense, store: Store) -> dict:
    """Weights the level's mask and the finetune-style resets start from: the trained dense
    net for level 1 and for one-shot pruning, else the mask driver's weights of level-1."""
    if level == 1 or setup.prune.schedule == "oneshot":
        return dense.final
    return store.get_tensors(artifact_path(traj_id, f"L{level - 1}"))["driver"]


def _run_trajectory(store: Store, campaign: str, unit: Unit, device, levels_done: int, level_done: Callable) -> tuple:
    """trainers.trajectory.run_trajectory with the driver reset only; after each level its
    mask + driver weights become an artifact (the resume point) and its rows are written:
    training rows to the driver's own cells, mask statistics to every cell of the trajectory."""
    from trainers.trajectory import TrajectoryState, run_trajectory

    uid = unit.unit_id
    resume = None
    if levels_done:
        saved = store.get_tensors(artifact_path(uid, f"L{levels_done}"))
        resume = TrajectoryState(levels_done, saved["mask"], saved["driver"])
    pending: list[Record] = []
    outcome = ["done", None]

    def on_level(state: TrajectoryState) -> None:
        store.put_tensors(artifact_path(uid, f"L{state.level}"),
                          {"mask": _cpu(state.mask), "driver": _cpu(state.driver_weights)})
        key = f"{uid}-L{state.level}"
        stats = [r for r in pending if isinstance(r, MaskLayerStats)]
        training = [r for r in pending if not isinstance(r, MaskLayerStats)]
        if unit.serves:  # the driver's own cells (none when every cell of the trajectory is a branch)
            store.write_records(campaign, key, uid, unit.serves, training)
        store.write_records(campaign, key, uid, unit.mask_serves, stats)
        pending.clear()
        level_done(state.level)
        status, reason = _status_of(training)
        if status != "done" and outcome[0] == "done":
            outcome[:] = [status, reason]

    run_trajectory(unit.setup, [unit.reset], device=device, on_record=pending.append,
                   dense=load_dense(store, unit.depends[0]), resume=resume, on_level_done=on_level)
    return tuple(outcome)


def _run_branch(store: Store, campaign: str, unit: Unit, device, levels_done: int, level_done: Callable) -> tuple:
    from trainers.trajectory import retrain

    setup, uid = unit.setup, unit.unit_id
    dense_id, traj_id = unit.depends
    dense = load_dense(store, dense_id)
    available = int((read_marker(store, campaign, traj_id) or {}).get("levels_done", 0))
    status, reason = "done", None
    for level in range(levels_done + 1, available + 1):
        mask = store.get_tensors(artifact_path(traj_id, f"L{level}"))["mask"]
        source = _level_source(setup, traj_id, level, dense, store)
        records: list[Record] = []
        retrain(setup, level=level, mask=mask, reset=unit.reset, dense=dense, source=source,
                device=device, on_record=records.append)
        store.write_records(campaign, f"{uid}-L{level}", uid, unit.serves, records)
        level_done(level)
        status, reason = _status_of(records)
        if status != "done":
            break
    if status == "done" and available < setup.prune.levels:
        status, reason = "diverged", f"trajectory {traj_id} stopped at level {available}"
    return status, reason


# ----------------------------------------------------------------------------- trials rows


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def cell_state(plan: Plan, markers: dict[str, dict | None], trial_id: str) -> dict | None:
    """The cell's status from its units' markers, or None while it is still pending.

    Status is the worst of its units (failed > diverged > done); a unit that cannot run
    because an upstream unit failed or diverged finishes the cell with that upstream status.
    """
    unit_ids = plan.cell_units[trial_id]
    ms = [markers.get(u) or {} for u in unit_ids]
    worst, reason = "done", None
    for uid, m in zip(unit_ids, ms):
        status = m.get("status")
        if status not in FINAL:
            if worst != "done":
                break  # blocked by an upstream unit that failed / diverged
            return None
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst, reason = status, f"{uid}: {m.get('reason')}"
    return {"status": worst, "reason": reason, "markers": [m for m in ms if m]}


def trials_row(plan: Plan, trial_id: str, state: dict) -> dict:
    cell = plan.cell(trial_id)
    ms = state["markers"]
    last = max(ms, key=lambda m: m.get("finished_at") or "")
    row = {"trial_id": trial_id, **{col: cell.column(col) for col in AXIS_COLUMNS}}
    row.update(
        axes_json=json.dumps(cell.axes, sort_keys=True, default=str),
        config_json=json.dumps(cell.config, sort_keys=True, default=str),
        status=state["status"],
        reason=state["reason"],
        attempts=max(int(m.get("attempts", 0)) for m in ms),
        host=last.get("host"),
        device=last.get("device"),
        units_json=json.dumps(list(plan.cell_units[trial_id])),
        # a unit Tune gave up on before its body ran has a driver-written marker without started_at
        started_at=_ts(min((m["started_at"] for m in ms if m.get("started_at")), default=None)),
        finished_at=_ts(last.get("finished_at")),
        seconds=round(sum(float(m.get("seconds", 0.0)) for m in ms), 3),
    )
    return row


def write_trials(store: Store, plan: Plan, *, only: set[str] | None = None) -> dict[str, int]:
    """Write (or overwrite) a ``trials`` row for every finished cell, keyed by trial_id
    (``only``: just these trial ids; the counts still cover every cell).
    Returns counts per cell status, with "pending" for cells not finished yet."""
    markers = {uid: read_marker(store, plan.campaign, uid) for uid in plan.units}
    counts = {"done": 0, "diverged": 0, "failed": 0, "pending": 0}
    for cell in plan.cells:
        state = cell_state(plan, markers, cell.trial_id)
        if state is None:
            counts["pending"] += 1
            continue
        counts[state["status"]] += 1
        if only is None or cell.trial_id in only:
            store.write_table("trials", plan.campaign, cell.trial_id, [trials_row(plan, cell.trial_id, state)])
    return counts
