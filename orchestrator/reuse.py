"""Serve finished units instead of training them again (issue 14).

A unit id names its result exactly: a hash of the unit's settings and of the version stamps of
the trainer code it runs (``orchestrator/plan.py``, ``trainers/versions.py``). A unit's rows are
the same for every cell it serves except ``trial_id`` (and the ``campaign`` partition), so one
served cell's rows, re-labelled, are the rows of any other cell the unit serves. Artifacts
(dense weights, masks) are global per unit (``paths.artifacts_dir``) and need no copy.

Before the driver schedules anything (``execution.run_plan``), ``serve_finished`` looks at every
unit of the plan:

- not finished in this campaign but finished in another campaign of the store: its rows are
  copied from there (committed tables, else that campaign's staging), re-labelled to the cells
  it serves here, staged in this campaign, and its marker here is written finished with
  ``extra["reused_from"]`` naming the campaign that computed it. Nothing is trained.
- finished in this campaign, but its rows were written for other cells than it serves now (the
  campaign grew and a new cell shares the unit; ``extra["served"]`` differs from
  ``Unit.served_key``): its rows are staged again for every cell it serves now, and the marker's
  new ``served`` key makes the committer replace the unit's rows in one commit.

The committer then commits these staged rows like any unit's, exactly once.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from orchestrator import paths, schema, tables
from orchestrator.ledger import FINISHED, UnitMarker, now
from orchestrator.plan import Plan, Unit
from orchestrator.store import TMP_PREFIX, Store, StoreError

MEASUREMENTS = tuple(t for t in schema.TABLES if t != "trials")  # the tables a unit's rows go to
SERVED_KEY = "served"  # marker extra: Unit.served_key of the cells the unit's rows were written for
REUSED_FROM = "reused_from"  # marker extra: the campaign whose run computed the unit
RECOMPUTE = "recompute"  # marker extra (orchestrator/recompute.py): train it here, never serve it
FEW = 8  # find_finished reads this many markers per campaign directly instead of listing its markers
_KEY = "served"  # staging file key of re-labelled rows (a unit's own keys are its id / id-L<level>)


@dataclass
class Served:
    """What ``serve_finished`` did, by unit id."""

    reused: dict[str, str] = field(default_factory=dict)  # unit -> campaign that computed it
    extended: list[str] = field(default_factory=list)  # units of this campaign re-served to more cells
    saved_seconds: float = 0.0  # compute seconds the reused units took where they were computed


def marker_campaigns(store: Store) -> list[str]:
    """Campaigns with unit markers in the store (``_units/campaign=<name>``), sorted."""
    sel = pafs.FileSelector(store.full(paths.UNITS), recursive=False, allow_not_found=True)
    prefix = f"{paths.PARTITION}="
    return sorted(posixpath.basename(i.path)[len(prefix):] for i in store.fs.get_file_info(sel)
                  if i.type == pafs.FileType.Directory and posixpath.basename(i.path).startswith(prefix))


def find_finished(store: Store, unit_ids, exclude: str) -> dict[str, tuple[str, UnitMarker]]:
    """unit id -> (campaign, marker) of a finished marker of the unit in a campaign other than
    ``exclude`` (the first such campaign by name). One listing per campaign, a read per hit."""
    wanted = set(unit_ids)
    found: dict[str, tuple[str, UnitMarker]] = {}
    for campaign in marker_campaigns(store):
        if campaign == exclude or not wanted:
            continue
        if len(wanted) <= FEW:  # a worker's look for one unit: a read per campaign, not a listing
            names = wanted
        else:
            names = {posixpath.basename(p)[: -len(".json")] for p in store.list(paths.units_dir(campaign))
                     if p.endswith(".json") and not posixpath.basename(p).startswith(TMP_PREFIX)}
        for uid in sorted(wanted & names):
            m = UnitMarker.load(store, campaign, uid)
            if m.status in FINISHED and artifacts_kept(store, m):
                found[uid] = (campaign, m)
                wanted.discard(uid)
    return found


def artifacts_kept(store: Store, marker: UnitMarker) -> bool:
    """Whether a finished unit's artifacts are still in the store: a dense run's weights and a
    trajectory's per-level masks are what the units after it load, and ``lth gc`` removes them
    once no unfinished unit needs them. A unit without them is trained again, not served
    (branch units save none)."""
    return marker.stage == "branch" or store.exists(paths.artifacts_dir(marker.unit_id))


class TableCache(dict):
    """(campaign, table) -> that campaign's committed rows of the table, read once: serving many
    units from one campaign reads each table once, not once per unit."""

    def rows(self, store: Store, campaign: str, table: str) -> pa.Table:
        if (campaign, table) not in self:
            self[campaign, table] = tables.dataset(store, table, campaign).to_table()
        return self[campaign, table]


def unit_rows(store: Store, campaign: str, marker: UnitMarker, cache: TableCache | None = None) -> dict[str, pa.Table]:
    """The rows of a finished unit in ``campaign`` per table: from the tables if its final state
    is committed there, else from the campaign's staging (its driver has not committed them
    yet). A commit that deletes the staging files between the two looks is retried."""
    from orchestrator.committer import CommitLog, unit_signature

    def committed() -> bool:
        return CommitLog.load(store, campaign).units.get(marker.unit_id) == unit_signature(marker)

    for _ in range(3):
        if committed():
            return _committed_rows(store, campaign, marker.unit_id, cache)
        try:
            staged = _staged_rows(store, campaign, marker.unit_id)
        except FileNotFoundError:
            continue  # committed (and cleaned up) while being read: the tables have them now
        # the committer records a batch before it deletes its staging files: if the unit is
        # committed now, the listing may have missed files being deleted, so the tables it is
        if committed():
            return _committed_rows(store, campaign, marker.unit_id, cache)
        if staged is not None:
            return staged
    raise StoreError(f"unit {marker.unit_id} of campaign {campaign!r}: finished, but its rows are neither "
                     "committed nor staged")


def _committed_rows(store: Store, campaign: str, unit_id: str, cache: TableCache | None) -> dict[str, pa.Table]:
    import pyarrow.dataset as ds

    out = {}
    for table in MEASUREMENTS:
        if not tables.is_delta(store, table):
            continue
        if cache is None:
            t = tables.dataset(store, table, campaign).to_table(filter=ds.field("unit_id") == unit_id)
        else:
            whole = cache.rows(store, campaign, table)
            t = whole.filter(pc.equal(whole.column("unit_id"), unit_id))
        if t.num_rows:
            out[table] = t.drop_columns([schema.PARTITION_COLUMN])
    return out


def _staged_rows(store: Store, campaign: str, unit_id: str) -> dict[str, pa.Table] | None:
    import pyarrow.parquet as pq

    files = [p for p in store.list(paths.staging_unit_dir(campaign, unit_id))
             if p.endswith(paths.PARQUET) and not posixpath.basename(p).startswith(TMP_PREFIX)]
    if not files:
        return None
    parts: dict[str, list[pa.Table]] = {}
    for path in files:
        table = path.split("/")[-2]
        with store.fs.open_input_file(store.full(path)) as f:
            parts.setdefault(table, []).append(pq.ParquetFile(f).read())
    return {t: pa.concat_tables(ps) for t, ps in parts.items() if t in MEASUREMENTS}


def relabel(unit: Unit, rows: dict[str, pa.Table]) -> dict[str, pa.Table] | None:
    """The unit's rows for the cells it serves in ``unit``'s plan, built from ``rows`` (its rows
    for any cells): one served cell's rows repeated per target trial id. None when ``rows``
    cannot give them (a trajectory computed where no cell took its driver's training rows)."""
    out = {}
    for table in MEASUREMENTS:
        mask_rows = unit.stage == "trajectory" and table == "masks"
        targets = unit.mask_serves if mask_rows else unit.serves
        have = rows.get(table)
        if not targets or have is None or not have.num_rows:
            continue
        exemplar = min(have.column("trial_id").to_pylist()) if mask_rows else _training_exemplar(rows)
        one = have.filter(pc.equal(have.column("trial_id"), exemplar))
        idx = one.schema.get_field_index("trial_id")
        out[table] = pa.concat_tables(
            [one.set_column(idx, "trial_id", pa.array([tid] * one.num_rows, pa.string())) for tid in targets])
    needed = {"levels"} if unit.serves else set()  # every training writes a levels row
    if unit.stage == "trajectory" and unit.mask_serves:
        needed.add("masks")
    return out if needed <= set(out) else None


def _training_exemplar(rows: dict[str, pa.Table]) -> str | None:
    levels = rows.get("levels")
    return min(levels.column("trial_id").to_pylist()) if levels is not None and levels.num_rows else None


def stage_rows(store: Store, campaign: str, unit_id: str, rows: dict[str, pa.Table]) -> None:
    """Replace whatever the unit has staged in ``campaign`` by ``rows``."""
    store.delete_dir(paths.staging_unit_dir(campaign, unit_id))
    for table, data in rows.items():
        store.stage_table(campaign, unit_id, table, f"{unit_id}-{_KEY}", data)


def serve_finished(store: Store, plan: Plan, markers: dict[str, UnitMarker]) -> Served:
    """Serve the plan's units that are finished in the store (see the module docstring);
    ``markers``: this campaign's markers as the driver read them. Driver-side, under the
    campaign's lease and before any unit of the campaign runs."""
    campaign, done, cache = plan.campaign, Served(), TableCache()
    # this campaign's finished units whose rows went to other cells than they serve now
    for uid, unit in plan.units.items():
        m = markers[uid]
        if m.finished and m.extra.get(SERVED_KEY, unit.served_key) != unit.served_key:
            rows = relabel(unit, unit_rows(store, campaign, m, cache))
            if rows is None:
                continue  # cannot be derived: left as it is (its old cells keep their rows)
            stage_rows(store, campaign, uid, rows)
            m.extra[SERVED_KEY] = unit.served_key  # changes its commit signature: rows replaced
            m.save(store, campaign)
            done.extended.append(uid)
    # units finished elsewhere
    todo = [uid for uid, m in markers.items() if not m.finished and RECOMPUTE not in m.extra]
    for uid, (source, src) in find_finished(store, todo, exclude=campaign).items():
        origin = _adopt(store, campaign, plan.units[uid], source, src, markers[uid], cache=cache)
        if origin is not None:
            done.reused[uid] = origin
            done.saved_seconds += _computed_seconds(src)
    return done


def serve_one(store: Store, campaign: str, unit: Unit, *, extra: dict | None = None) -> str | None:
    """Serve ``unit`` to ``campaign`` if another campaign finished it (a worker's last look
    before training, ``orchestrator/claims.py``; never a unit the user asked to recompute).
    Returns the computing campaign, or None."""
    old = UnitMarker.load(store, campaign, unit.unit_id)
    if RECOMPUTE in old.extra:
        return None
    found = find_finished(store, [unit.unit_id], exclude=campaign).get(unit.unit_id)
    if found is None:
        return None
    return _adopt(store, campaign, unit, *found, old, extra)


def _computed_seconds(src: UnitMarker) -> float:
    return float(src.extra.get("reused_seconds", src.seconds) or 0.0)


def _adopt(store: Store, campaign: str, unit: Unit, source: str, src: UnitMarker, old: UnitMarker,
           extra: dict | None = None, cache: TableCache | None = None) -> str | None:
    """Stage the rows ``source`` holds for ``unit``, re-labelled to ``campaign``'s cells, and mark
    the unit there finished as in ``source`` (marker written last: "finished" means the rows are
    staged). Returns the campaign that computed it, or None when its rows cannot serve these cells."""
    rows = relabel(unit, unit_rows(store, source, src, cache))
    if rows is None:
        return None  # trained here instead
    stage_rows(store, campaign, unit.unit_id, rows)
    origin = src.extra.get(REUSED_FROM, source)
    stamp = now()
    UnitMarker(
        unit_id=unit.unit_id, stage=unit.stage, status=src.status, attempts=old.attempts,
        levels_done=src.levels_done, host=src.host, device=src.device, started_at=stamp, finished_at=stamp,
        seconds=0.0, reason=src.reason,
        extra={**old.extra, **(extra or {}), REUSED_FROM: origin, "reused_seconds": _computed_seconds(src),
               SERVED_KEY: unit.served_key},
    ).save(store, campaign)
    return origin
