"""The driver's commits: staged worker output -> the Delta result tables, exactly once.

Workers never write a table. A unit writes its rows as staging files
(``paths.staging_file``: one per table and deterministic key, replaced when a retried unit
writes the key again) and its marker. The driver (the single committer; one per campaign,
``orchestrator/lease.py``) commits in batches:

1. It lists the campaign's markers (only changed ones are re-read) and takes the units whose
   marker is final (done / diverged / failed) and not yet committed in that state, and the
   cells they finish (their ``trials`` rows, ``ledger.trials_row``).
2. It writes the batch (number N, units, cells) as ``paths.pending_batch``: the intent.
3. It commits ``metrics``, ``levels``, ``masks`` and then ``trials``, one atomic Delta commit
   each, tagged with the application transaction ``(lth-sweep:<campaign>, N)``. A unit or cell
   committed before (a failed unit run again) is replaced in the same commit. ``trials``
   comes last, so a cell is in ``trials`` (and in the ``cell_*`` views, which join on it)
   only when all its rows are in.
4. It records the batch in ``paths.committed`` (what the tables hold), deletes the staging
   files of the batch's finished units (a failed unit keeps its files: a rerun resumes it and
   re-commits all its rows) and then the intent.

A driver killed anywhere in 2-4 leaves the intent; the next driver re-applies it before
anything else, and step 3 skips every table whose log already has version N of the app id:
each batch lands exactly once (an intent already recorded is only cleaned up). Killed before 2, nothing happened; the units are committed
by the next batch. The staging files stay until their batch is recorded.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator import faults, paths, schema, tables
from orchestrator.lease import Lease
from orchestrator.ledger import CellState, UnitMarker, cell_counts, cell_state, trials_row
from orchestrator.plan import Plan
from orchestrator.store import TMP_PREFIX, Store, conform

MEASUREMENTS = tuple(t for t in schema.TABLES if t != "trials")  # every record table (schema.RECORD_TABLE)
COMMIT_ORDER = (*MEASUREMENTS, "trials")  # trials last: a cell appears when all its rows are in
MIN_INTERVAL_S = 5.0  # at most one commit per this many seconds during a run ...
COST_FACTOR = 10.0  # ... and at most 1/COST_FACTOR of the driver's time spent committing


def app_id(campaign: str) -> str:
    return f"lth-sweep:{campaign}"


def unit_signature(m: UnitMarker) -> str:
    """What a commit of the unit's rows depends on: a rerun changes it, and so do rows written
    again for other cells (``served``, orchestrator/reuse.py; absent from older markers)."""
    served = m.extra.get("served")
    return f"{m.status}|{m.attempts}|{m.levels_done}|{m.finished_at}" + (f"|{served}" if served else "")


def _row_signature(row: dict) -> str:
    return hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CommitLog:
    """What the campaign's tables hold (``paths.committed``): the last batch number, and the
    signature of every committed unit and cell."""

    batch: int = 0
    units: dict[str, str] = field(default_factory=dict)
    cells: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Store, campaign: str) -> CommitLog:
        data = store.get_json(paths.committed(campaign))
        return cls(**data) if isinstance(data, dict) else cls()

    def save(self, store: Store, campaign: str) -> None:
        store.put_bytes(paths.committed(campaign), json.dumps(asdict(self), sort_keys=True).encode())


@dataclass
class Batch:
    """One batch being committed (``paths.pending_batch``)."""

    batch: int
    units: dict[str, str]  # unit id -> signature
    cells: dict[str, str]  # trial id -> signature of its row
    replace_units: list[str]  # committed before: their rows are replaced
    replace_cells: list[str]
    drop_cells: list[str] = field(default_factory=list)  # a batch of its own: delete these cells' rows


@dataclass
class CommitStats:
    batches: int = 0
    units: int = 0
    cells: int = 0
    rows: int = 0
    seconds: float = 0.0


class Committer:
    """Commits one campaign's staged rows (see the module docstring). Driver-side only."""

    def __init__(self, store: Store, plan: Plan, *, lease: Lease | None = None):
        self.store, self.plan, self.campaign = store, plan, plan.campaign
        self.lease = lease  # checked before every commit: a driver whose lease was taken over stops
        self.app_id = app_id(plan.campaign)
        self.log = CommitLog.load(store, plan.campaign)
        self.markers: dict[str, UnitMarker] = {uid: UnitMarker(uid) for uid in plan.units}
        self._seen: dict[str, tuple[int | None, int | None]] = {}
        self._cells = {c.trial_id: c for c in plan.cells}
        self._unit_cells: dict[str, list[str]] = {}
        for tid, uids in plan.cell_units.items():
            for uid in uids:
                self._unit_cells.setdefault(uid, []).append(tid)
        self.stats = CommitStats()
        self._last = 0.0
        self._last_cost = 0.0
        self.recover()

    # ----- markers ---------------------------------------------------------------------
    def refresh(self, *, full: bool = False) -> dict[str, UnitMarker]:
        """Re-read the markers that changed since the last listing (one listing, a read per
        changed marker; ``full``: re-read every marker, e.g. at the end of a run, where an
        object store's one-second modification times could hide a rewrite of the same size)."""
        if full:
            self._seen.clear()
        base = self.store.full(paths.units_dir(self.campaign))
        infos = self.store.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        for info in infos:
            name = posixpath.basename(info.path)
            if info.type != pafs.FileType.File or name.startswith(TMP_PREFIX) or not name.endswith(".json"):
                continue
            uid = name[: -len(".json")]
            stamp = (info.size, info.mtime_ns)
            if uid in self.markers and self._seen.get(uid) != stamp:
                self.markers[uid] = UnitMarker.load(self.store, self.campaign, uid)
                self._seen[uid] = stamp
        return self.markers

    def counts(self) -> dict[str, int]:
        """Cells per status (with "pending") from the markers as last read."""
        return cell_counts(self.plan, self.markers)[0]

    # ----- batches -----------------------------------------------------------------------
    def maybe_commit(self) -> None:
        """Commit if the last commit is long enough ago (``MIN_INTERVAL_S``, ``COST_FACTOR``)."""
        if time.monotonic() - self._last >= max(MIN_INTERVAL_S, COST_FACTOR * self._last_cost):
            self.commit()

    def commit(self) -> Batch | None:
        """Commit every final, not yet committed unit and the cells it finishes; None if nothing to do."""
        t0 = time.monotonic()
        try:
            batch = self._next_batch()
            if batch is None:
                return None
            if self.lease is not None:
                self.lease.check()  # never two committers (LeaseLost ends the run)
            self.store.put_json(paths.pending_batch(self.campaign), asdict(batch))
            faults.kill_point("commit:intent")  # test hook: intent written, no table committed
            self._apply(batch)
            return batch
        finally:
            self._last, self._last_cost = time.monotonic(), time.monotonic() - t0
            self.stats.seconds += self._last_cost

    def drop_cells(self, trial_ids: list[str]) -> Batch | None:
        """Delete every row of these cells (superseded by a longer schedule, ``campaigns.py``)
        from every table, as one batch (exactly once, like any batch)."""
        if not trial_ids:
            return None
        if self.lease is not None:
            self.lease.check()
        batch = Batch(self.log.batch + 1, {}, {}, [], [], drop_cells=sorted(trial_ids))
        self.store.put_json(paths.pending_batch(self.campaign), asdict(batch))
        self._apply(batch)
        return batch

    def _next_batch(self) -> Batch | None:
        self.refresh()
        units = {uid: unit_signature(m) for uid, m in self.markers.items()
                 if m.final and self.log.units.get(uid) != unit_signature(m)}
        touched = sorted({tid for uid in units for tid in self._unit_cells.get(uid, ())})
        cells = {}
        for tid in touched:
            state = cell_state(self.plan, self.markers, tid)
            if state is not None:
                sig = _row_signature(self._row(tid, state))
                if self.log.cells.get(tid) != sig:
                    cells[tid] = sig
        if not units and not cells:
            return None
        return Batch(self.log.batch + 1, units, cells,
                     sorted(u for u in units if u in self.log.units), sorted(t for t in cells if t in self.log.cells))

    def _row(self, trial_id: str, state: CellState) -> dict:
        return trials_row(self.plan, self._cells[trial_id], state)

    def recover(self) -> None:
        """Re-apply a batch a killed driver left half committed (before anything else runs)."""
        # A write of the ledger killed half-way leaves a temporary file; only this driver (the
        # lease holder) writes there.
        for path in self.store.list(paths.ledger_dir(self.campaign)):
            name = posixpath.basename(path)
            if name.startswith(TMP_PREFIX) and name.endswith(("-pending.json.part", "-committed.json.part")):
                self.store.delete(path)
        if self.lease is not None:
            self.lease.check()
        data = self.store.get_json(paths.pending_batch(self.campaign))
        if not isinstance(data, dict):
            return
        batch = Batch(**data)
        self.refresh()
        if batch.batch <= self.log.batch:  # recorded; only the clean-up was missed
            self._clean_up(batch)
            return
        self._apply(batch)

    def _apply(self, batch: Batch) -> None:
        staged = self._staged(batch.units)
        for table in COMMIT_ORDER:
            if batch.drop_cells:
                data, replace = None, _in_predicate(self.campaign, "trial_id", batch.drop_cells)
            elif table == "trials":
                rows = [self._row(t, cell_state(self.plan, self.markers, t)) for t in sorted(batch.cells)]
                data = _with_campaign(conform("trials", rows), self.campaign) if rows else None
                # the predicate names every cell of the batch: delta-rs requires the new rows to match it
                replace = _in_predicate(self.campaign, "trial_id", sorted(batch.cells) if batch.replace_cells else [])
            else:
                data = pa.concat_tables(staged[table]) if staged[table] else None
                replace = _in_predicate(self.campaign, "unit_id", sorted(batch.units) if batch.replace_units else [])
            if data is None and not replace:
                continue
            if data is None:
                data = tables.view_schema(table).empty_table()
            result = tables.commit(self.store, table, data, app_id=self.app_id, version=batch.batch, replace=replace)
            self.stats.rows += result.rows if result.committed else 0
            faults.kill_point(f"commit:table:{table}")  # test hook: this table committed, the next not
        self.log.batch = batch.batch
        self.log.units.update(batch.units)
        self.log.cells.update(batch.cells)
        for tid in batch.drop_cells:
            self.log.cells.pop(tid, None)
        self.log.save(self.store, self.campaign)
        faults.kill_point("commit:recorded")  # test hook: recorded, intent and staging still there
        self._clean_up(batch)
        self.stats.batches += 1
        self.stats.units += len(batch.units)
        self.stats.cells += len(batch.cells)

    def _clean_up(self, batch: Batch) -> None:
        """After a batch is recorded: delete its finished units' staging files, then the intent
        (in this order, so a driver killed in between still finds the intent and finishes)."""
        for uid in batch.units:
            if self.markers[uid].finished:  # failed units keep their files for a rerun
                self.store.delete_dir(paths.staging_unit_dir(self.campaign, uid))  # (with any temporary file)
        self.store.delete(paths.pending_batch(self.campaign))

    # ----- staging -------------------------------------------------------------------------
    def _staged_files(self, unit_id: str) -> list[str]:
        return [p for p in self.store.list(paths.staging_unit_dir(self.campaign, unit_id))
                if p.endswith(paths.PARQUET) and not posixpath.basename(p).startswith(TMP_PREFIX)]

    def _staged(self, units) -> dict[str, list[pa.Table]]:
        """The staged rows of ``units`` per table, with the ``campaign`` column."""
        out: dict[str, list[pa.Table]] = {t: [] for t in MEASUREMENTS}
        for uid in sorted(units):
            for path in self._staged_files(uid):
                table = path.split("/")[-2]
                if table not in out:
                    continue
                # One GET of the whole (small) file: a random-access open costs a HEAD and a GET per
                # footer and column chunk on an object store. ParquetFile.read, not pq.read_table
                # (which builds a dataset per file: 10x slower).
                data = self.store.get_bytes(path)
                if data is None:  # never expected: only this driver deletes staging files
                    raise FileNotFoundError(f"staged file {self.store.full(path)} vanished while committing")
                t = pq.ParquetFile(pa.BufferReader(data)).read()
                if not t.schema.equals(schema.TABLES[table].schema, check_metadata=False):
                    t = conform(table, t)  # staged by another version of the writer: cast, or say why not
                out[table].append(_with_campaign(t, self.campaign))
        return out


def _with_campaign(t: pa.Table, campaign: str) -> pa.Table:
    return t.append_column(schema.PARTITION_COLUMN, pa.array([campaign] * t.num_rows, pa.string()))


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in_predicate(campaign: str, column: str, values: list[str]) -> str | None:
    if not values:
        return None
    return (f"{schema.PARTITION_COLUMN} = {_sql_str(campaign)} AND "
            f"{column} IN ({', '.join(_sql_str(v) for v in values)})")
