"""The campaign's ledger: unit markers, cell states and ``trials`` rows.

A unit's marker (``paths.marker``) is a ``UnitMarker``: written by the worker running the unit
at its start ("running"), after every level (``levels_done``: where a killed unit resumes) and
last with the final status, so "done" means every row of the unit is written. The driver
writes a marker only for units Tune gave up on or Ray's memory monitor killed.

A cell's state is derived from its units' markers (``cell_state``) and becomes its ``trials``
row (``trials_row``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator import paths
from orchestrator.schema import AXIS_COLUMNS
from orchestrator.store import Store

if TYPE_CHECKING:  # the plan (and the spec behind it) is not needed to read markers: `lth status` stays light
    from orchestrator.plan import Plan

UNIT_STATUSES = ("running", "done", "diverged", "failed")
FINISHED = ("done", "diverged")  # a unit with such a marker is never run again
FINAL = ("done", "diverged", "failed")
_SEVERITY = {"done": 0, "diverged": 1, "failed": 2}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass
class UnitMarker:
    """One unit's marker. ``status`` None: no marker yet (the unit never started)."""

    unit_id: str
    stage: str | None = None  # dense | trajectory | branch
    status: str | None = None  # one of UNIT_STATUSES
    attempts: int = 0
    levels_done: int = 0  # the last level whose rows and artifacts are written
    host: str | None = None
    node: str | None = None  # Ray node id
    actor: str | None = None  # Ray actor id (a unit Ray's memory monitor kills is found by it)
    device: str | None = None
    pid: int | None = None  # the process running the unit (fault-injection tests kill it)
    threads: int | None = None
    started_at: str | None = None  # ISO timestamps (UTC)
    finished_at: str | None = None
    seconds: float = 0.0  # compute seconds, summed over attempts
    reason: str | None = None  # last error / failure / divergence reason
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer writer, kept on rewrite

    @property
    def exists(self) -> bool:
        return self.status is not None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, data: dict[str, Any], unit_id: str) -> UnitMarker:
        """A marker from its JSON (missing keys take their defaults; unknown keys go to ``extra``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("unit_id", unit_id)
        known["attempts"] = int(known.get("attempts") or 0)
        known["levels_done"] = int(known.get("levels_done") or 0)
        known["seconds"] = float(known.get("seconds") or 0.0)
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    @classmethod
    def load(cls, store: Store, campaign: str, unit_id: str) -> UnitMarker:
        """The unit's marker (an empty one, ``exists`` False, when there is none)."""
        data = store.get_json(paths.marker(campaign, unit_id))
        return cls.from_json(data, unit_id) if isinstance(data, dict) else cls(unit_id)

    def save(self, store: Store, campaign: str) -> None:
        store.put_json(paths.marker(campaign, self.unit_id), self.to_json())


def load_markers(store: Store, campaign: str, unit_ids: Iterable[str]) -> dict[str, UnitMarker]:
    return {uid: UnitMarker.load(store, campaign, uid) for uid in unit_ids}


# ----------------------------------------------------------------------------- cells


@dataclass
class CellState:
    """A finished cell: the worst status of its units, why, and the markers that exist."""

    status: str  # done | diverged | failed
    reason: str | None
    markers: list[UnitMarker]


def cell_state(plan: Plan, markers: dict[str, UnitMarker], trial_id: str) -> CellState | None:
    """The cell's state from its units' markers, or None while it is still pending.

    Status is the worst of its units (failed > diverged > done); a unit that cannot run
    because an upstream unit failed or diverged finishes the cell with that upstream status.
    """
    unit_ids = plan.cell_units[trial_id]
    ms = [markers.get(u) or UnitMarker(u) for u in unit_ids]
    worst, reason = "done", None
    for uid, m in zip(unit_ids, ms):
        if not m.final:
            if worst != "done":
                break  # blocked by an upstream unit that failed / diverged
            return None
        if _SEVERITY[m.status] > _SEVERITY[worst]:
            worst, reason = m.status, f"{uid}: {m.reason}"
    return CellState(worst, reason, [m for m in ms if m.exists])


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def trials_row(plan: Plan, cell, state: CellState) -> dict:
    """The ``trials`` row (schema.TRIALS) of ``cell`` (a ``plan.Cell``) in ``state``."""
    trial_id = cell.trial_id
    ms = state.markers
    last = max(ms, key=lambda m: m.finished_at or "")
    row = {"trial_id": trial_id, **{col: cell.column(col) for col in AXIS_COLUMNS}}
    row.update(
        axes_json=json.dumps(cell.axes, sort_keys=True, default=str),
        config_json=json.dumps(cell.config, sort_keys=True, default=str),
        status=state.status,
        reason=state.reason,
        attempts=max(m.attempts for m in ms),
        host=last.host,
        device=last.device,
        units_json=json.dumps(list(plan.cell_units[trial_id])),
        # a unit Tune gave up on before its body ran has a driver-written marker without started_at
        started_at=_ts(min((m.started_at for m in ms if m.started_at), default=None)),
        finished_at=_ts(last.finished_at),
        seconds=round(sum(m.seconds for m in ms), 3),
    )
    return row


def cell_counts(plan: Plan, markers: dict[str, UnitMarker]) -> tuple[dict[str, int], dict[str, CellState]]:
    """Counts per cell status ("pending" for unfinished cells) and the finished cells' states."""
    counts = {"done": 0, "diverged": 0, "failed": 0, "pending": 0}
    states: dict[str, CellState] = {}
    for cell in plan.cells:
        state = cell_state(plan, markers, cell.trial_id)
        if state is None:
            counts["pending"] += 1
            continue
        counts[state.status] += 1
        states[cell.trial_id] = state
    return counts, states


def write_trials(store: Store, plan: Plan, *, only: set[str] | None = None) -> dict[str, int]:
    """Write (or overwrite) a ``trials`` row for every finished cell, keyed by trial_id
    (``only``: just these trial ids; the counts still cover every cell).
    Returns counts per cell status, with "pending" for cells not finished yet."""
    markers = load_markers(store, plan.campaign, plan.units)
    counts, states = cell_counts(plan, markers)
    for cell in plan.cells:
        if cell.trial_id in states and (only is None or cell.trial_id in only):
            store.write_table("trials", plan.campaign, cell.trial_id, [trials_row(plan, cell, states[cell.trial_id])])
    return counts
