"""More levels continue a finished trajectory instead of starting over (issue 14).

Level k of a trajectory (its mask, and every reset's retraining on it) depends on the levels
before it and not on how many levels follow: the per-level rate is a setting, and the
training loop runs levels ``first..prune.levels``. So a trajectory or branch unit with L levels
and one with L' > L, equal in every other setting, share their first L levels. Their
``Unit.lineage`` (the unit's id settings without ``prune.levels``) is equal.

A unit of a lineage that finishes "done" with all its levels is listed in the store's lineage
index (``paths.lineage_entry``). Before a run, a planned unit with more levels than a listed
one of its lineage, and nothing done yet, is *continued*: the listed unit's artifacts of levels
1..L are copied under the new unit's id (the trajectory's masks and driver weights, which its
next level and its branches read), its rows are copied re-labelled to this campaign's cells and
to the new unit's id (the unit that commits them: a retried unit replaces them, never
duplicates them), and its marker here says ``levels_done = L`` with ``continued_from``. The
unit body then resumes at level L + 1, as after a kill.
"""

from __future__ import annotations

import pyarrow as pa

from orchestrator import paths
from orchestrator.ledger import UnitMarker
from orchestrator.plan import Unit
from orchestrator.reuse import TableCache, relabel, stage_rows, unit_rows
from orchestrator.store import Store

CONTINUED_FROM = "continued_from"  # marker extra: {"unit", "campaign", "levels"} the unit continued


def record(store: Store, campaign: str, unit: Unit, marker: UnitMarker) -> None:
    """List a finished unit in its lineage's index (done with every level only: a diverged
    trajectory's later levels do not exist, and continuing it would diverge the same way)."""
    if unit.lineage is None or marker.status != "done" or marker.levels_done < unit.setup.prune.levels:
        return
    store.put_json(paths.lineage_entry(unit.lineage, unit.unit_id),
                   {"unit_id": unit.unit_id, "campaign": campaign, "levels": marker.levels_done})


def _candidates(store: Store, unit: Unit) -> list[tuple[int, str, str]]:
    """(levels, unit id, campaign) of listed units of ``unit``'s lineage with fewer levels, most first."""
    out = []
    for path in store.list(paths.lineage_dir(unit.lineage)):
        entry = store.get_json(path)
        if isinstance(entry, dict) and 0 < int(entry.get("levels", 0)) < unit.setup.prune.levels:
            out.append((int(entry["levels"]), str(entry["unit_id"]), str(entry["campaign"])))
    return sorted(out, reverse=True)


def continue_from_shorter(store: Store, campaign: str, unit: Unit, old: UnitMarker,
                          cache: TableCache | None = None) -> dict | None:
    """Seed ``unit`` (not started in ``campaign``: ``old`` has no level done) from the longest
    finished unit of its lineage with fewer levels; returns the ``continued_from`` record, or None."""
    if unit.lineage is None or old.levels_done or old.finished:
        return None
    for levels, source_id, source_campaign in _candidates(store, unit):
        src = UnitMarker.load(store, source_campaign, source_id)
        if src.status != "done" or src.levels_done != levels:
            continue  # recomputed or failed since it was listed
        rows = relabel(unit, unit_rows(store, source_campaign, src, cache))
        if rows is None:
            continue
        if unit.stage == "trajectory":
            for level in range(1, levels + 1):
                data = store.get_bytes(paths.artifact(source_id, f"L{level}"))
                if data is None:
                    break
                store.put_bytes(paths.artifact(unit.unit_id, f"L{level}"), data)
            else:
                data = b""
            if data is None:
                continue  # an artifact is gone: train from level 1
        rows = {t: _with_unit_id(r, unit.unit_id) for t, r in rows.items()}
        stage_rows(store, campaign, unit.unit_id, rows)
        origin = {"unit": source_id, "campaign": source_campaign, "levels": levels}
        UnitMarker(unit.unit_id, stage=unit.stage, attempts=old.attempts, levels_done=levels,
                   extra={**old.extra, CONTINUED_FROM: origin}).save(store, campaign)
        return origin
    return None


def continue_all(store: Store, plan, markers: dict[str, UnitMarker]) -> dict[str, dict]:
    """``continue_from_shorter`` for every unit of ``plan`` (``orchestrator.plan.Plan``) not
    started here and not to be recomputed; unit id -> its ``continued_from`` record."""
    from orchestrator.reuse import RECOMPUTE

    out, cache = {}, TableCache()
    for uid, unit in plan.units.items():
        m = markers[uid]
        if not m.finished and RECOMPUTE not in m.extra:
            origin = continue_from_shorter(store, plan.campaign, unit, m, cache)
            if origin is not None:
                out[uid] = origin
    return out


def _with_unit_id(t: pa.Table, unit_id: str) -> pa.Table:
    idx = t.schema.get_field_index("unit_id")
    return t.set_column(idx, "unit_id", pa.array([unit_id] * t.num_rows, pa.string()))
