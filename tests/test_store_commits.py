"""The driver's commits (orchestrator/committer.py) and compaction (orchestrator/tables.py) on
real Delta tables, with a reader querying the views (DuckDB) in a loop all the while.

The units' work is simulated (no training, no Ray): each unit stages rows through the real
writer (``Store.stage_records``) and writes its real marker, as ``orchestrator.units`` does;
the expected row counts are computed here from what was staged, independently of the store.
Checked: every count the reader ever sees for a table is the count after some committed batch
(never half a batch, never a row twice); every cell it sees in ``trials`` has all its rows in
``cell_levels`` (trials are committed last); a failed unit run again replaces its rows; a
batch re-applied after a crash lands once; compaction leaves one file per table and changes
no row, including for a reader whose snapshot's files the vacuum deleted.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import types
import typing

import pyarrow as pa
import pytest

from analysis.views import connect, read_consistent
from orchestrator import paths, tables
from orchestrator.committer import COMMIT_ORDER, MEASUREMENTS, Batch, Committer
from orchestrator.ledger import UnitMarker, now
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign
from orchestrator.store import Store
from trainers.records import EpochMetrics, LevelSummary, MaskLayerStats

SPEC = """
name: rc
data: {dataset: digits}
model: {arch: mlp}
train: {lr: 0.1, epochs: 1}
prune: {rate: 0.5, levels: 2}
resets: [rewind, reinit]
seeds: [0, 1, 2]
grid:
  lr: [0.1, 0.01]
"""
EPOCHS = 3  # metrics rows per training and split
LAYERS = 2  # mask rows per level


def record(rtype, **values):
    """A record with every field without a default filled in by type (fields added to the
    record types later keep this test valid)."""
    hints = typing.get_type_hints(rtype)
    for f in dataclasses.fields(rtype):
        if f.name in values or f.default is not dataclasses.MISSING:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            values[f.name] = None
        else:
            values[f.name] = {int: 1, float: 0.5, str: "x", bool: False}[hint]
    return rtype(**values)


def unit_levels(unit) -> list[int]:
    return [0] if unit.stage == "dense" else list(range(1, unit.setup.prune.levels + 1))


def stage_unit(store: Store, plan, unit, accuracy: float) -> dict[str, int]:
    """Stage one unit's rows as ``orchestrator.units`` does; return the rows per table."""
    rows = dict.fromkeys(MEASUREMENTS, 0)
    reset = "dense" if unit.stage == "dense" else unit.reset
    for level in unit_levels(unit):
        key = f"{unit.unit_id}-L{level}"
        if unit.serves:
            training = [record(EpochMetrics, level=level, reset=reset, epoch=e, split=s, accuracy=accuracy)
                        for e in range(EPOCHS) for s in ("train", "test")]
            training.append(record(LevelSummary, level=level, reset=reset, status="done",
                                   best_test_accuracy=accuracy))
            store.stage_records(plan.campaign, key, unit.unit_id, unit.serves, training)
            rows["metrics"] += 2 * EPOCHS * len(unit.serves)
            rows["levels"] += len(unit.serves)
        if unit.mask_serves:
            stats = [record(MaskLayerStats, level=level, layer=f"l{i}", kind="weight") for i in range(LAYERS)]
            store.stage_records(plan.campaign, key, unit.unit_id, unit.mask_serves, stats)
            rows["masks"] += LAYERS * len(unit.mask_serves)
    return rows


def finish(store: Store, plan, uid: str, status: str = "done", attempts: int = 1) -> None:
    UnitMarker(uid, stage=plan.units[uid].stage, status=status, attempts=attempts, host="h", device="cpu",
               levels_done=max(unit_levels(plan.units[uid])), started_at=now(), finished_at=now(),
               seconds=1.0, reason=None if status == "done" else "boom").save(store, plan.campaign)


def cell_rows(plan) -> dict[str, int]:
    """``cell_levels`` rows each finished cell has: one per training of its units."""
    return {c.trial_id: sum(len(unit_levels(plan.units[u])) for u in plan.cell_units[c.trial_id]
                            if c.trial_id in plan.units[u].serves) for c in plan.cells}


class Reader(threading.Thread):
    """Queries the views in a loop (each iteration one snapshot) and keeps what it saw."""

    def __init__(self, store: Store):
        super().__init__(daemon=True)
        self.store, self.stop, self.seen, self.errors = store, threading.Event(), [], []

    def wait_reads(self, n: int, timeout: float = 120) -> None:
        """Block until the reader has finished ``n`` more reads."""
        target, deadline = len(self.seen) + len(self.errors) + n + 1, time.monotonic() + timeout
        while len(self.seen) + len(self.errors) < target:
            assert time.monotonic() < deadline, "the reader made no progress"
            time.sleep(0.005)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.seen.append(read_consistent(self.store, observe, warn=False))
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))


def observe(con) -> dict:
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COMMIT_ORDER}
    counts["dupes"] = con.execute("SELECT count(*) - count(DISTINCT (trial_id, unit_id, level, reset, epoch, split)) "
                                  "FROM metrics").fetchone()[0]
    counts["cells"] = dict(con.execute("SELECT t.trial_id, count(c.trial_id) FROM trials t "
                                       "LEFT JOIN cell_levels c USING (campaign, trial_id) GROUP BY ALL").fetchall())
    return counts


@pytest.fixture
def setup(tmp_path):
    store = Store(str(tmp_path / "store"))
    plan = make_plan(parse_campaign(SPEC))
    return store, plan


def totals(staged: dict[str, dict[str, int]], uids) -> dict[str, int]:
    return {t: sum(staged[u][t] for u in uids) for t in MEASUREMENTS}


def test_reader_never_sees_half_a_batch_or_a_row_twice(setup):
    store, plan = setup
    order = [u.unit_id for stage in ("dense", "trajectory", "branch") for u in plan.stage(stage)]
    failing = plan.stage("branch")[0].unit_id
    committer = Committer(store, plan)
    reader = Reader(store)
    reader.start()
    staged: dict[str, dict[str, int]] = {}
    allowed = {t: {0} for t in COMMIT_ORDER}  # counts after each committed batch

    def commit_and_expect(done: list[str]) -> None:
        assert committer.commit() is not None
        for table, n in totals(staged, done).items():
            allowed[table].add(n)
        allowed["trials"].add(committer.counts()["done"] + committer.counts()["failed"])
        reader.wait_reads(2)  # the reader sees every state between commits (not only by luck)

    committed: list[str] = []
    for i in range(0, len(order), 3):  # three units finish between two commits
        for uid in order[i:i + 3]:
            # the failing branch first fails with half its rows staged ... (re-run below)
            staged[uid] = stage_unit(store, plan, plan.units[uid], accuracy=0.1 if uid == failing else 0.9)
            finish(store, plan, uid, "failed" if uid == failing else "done")
            committed.append(uid)
        commit_and_expect(committed)
    # ... and is run again: it stages the same keys and is done; its rows are replaced, not added
    staged[failing] = stage_unit(store, plan, plan.units[failing], accuracy=0.9)
    finish(store, plan, failing, "done", attempts=2)
    commit_and_expect(committed)
    assert committer.commit() is None  # nothing left

    final = {t: sum(staged[u][t] for u in staged) for t in MEASUREMENTS} | {"trials": len(plan.cells)}
    files_before = {t: len(tables.live_files(store, t)) for t in COMMIT_ORDER}
    reads_before = len(reader.seen)
    for table in ("trials", "metrics", "levels", "masks"):  # tables.compact, step by step
        tables.optimize(store, table, plan.campaign)
        reader.wait_reads(2)  # the replaced files are still on disk here
        tables.vacuum(store, table)
        reader.wait_reads(1)
    reader.stop.set()
    reader.join()

    assert not reader.errors, reader.errors[:3]
    assert reads_before >= 3, reads_before  # the reader read while batches were committed
    expected_cell_rows = cell_rows(plan)
    for seen in reader.seen:
        for table in COMMIT_ORDER:
            assert seen[table] in allowed[table], (table, seen[table], sorted(allowed[table]))
        assert seen["dupes"] == 0
        for trial_id, n in seen["cells"].items():  # a cell in trials has all its rows
            assert n == expected_cell_rows[trial_id], (trial_id, n)
    last = reader.seen[-1]
    assert {t: last[t] for t in COMMIT_ORDER} == final
    # one file per table after the compaction (several before), and nothing else on disk
    assert all(files_before[t] > 1 for t in ("metrics", "levels", "trials")), files_before
    for table in ("trials", "metrics", "levels", "masks"):  # (nodes, supermasks: no rows, no table)
        assert len(tables.live_files(store, table)) == 1
        on_disk = [p for p in store.list(paths.table_partition(table, plan.campaign)) if p.endswith(".parquet")]
        assert len(on_disk) == 1, on_disk  # vacuumed: a plain *.parquet glob reads the current version
    con = connect(store)
    assert con.execute("SELECT count(*) FROM levels WHERE unit_id = ? AND best_test_accuracy < 0.5",
                   [failing]).fetchone()[0] == 0  # the failed attempt's rows are gone
    assert not list(store.list(paths.staging_dir(plan.campaign)))  # every unit's staging deleted


def test_a_snapshot_whose_files_were_vacuumed_is_read_again(setup):
    """A connection opened before a compaction reads files the vacuum deletes: the consistent
    reader re-reads the new version instead of failing or missing rows."""
    store, plan = setup
    committer = Committer(store, plan)
    expected = 0
    for u in plan.stage("dense"):  # one commit per unit: several files per table
        expected += stage_unit(store, plan, u, 0.9)["metrics"]
        finish(store, plan, u.unit_id)
        committer.commit()
    calls = []

    def read(con):
        if not calls:  # the first snapshot: compact under it, as a driver ending its run would
            tables.compact(store, "metrics", plan.campaign)
        calls.append(1)
        return con.execute("SELECT count(*) FROM metrics").fetchone()[0]

    assert read_consistent(store, read) == expected
    assert len(calls) == 2  # the stale snapshot failed once, the new one read every row


def test_batch_reapplied_after_a_crash_lands_once(setup):
    """A driver killed after committing some tables of a batch leaves its intent; the next
    committer re-applies it, and the tables that already have it are skipped (app
    transactions), the others committed: every row once."""
    store, plan = setup
    units = plan.stage("dense")
    staged = {u.unit_id: stage_unit(store, plan, u, 0.9) for u in units}
    for u in units:
        finish(store, plan, u.unit_id)
    first = Committer(store, plan)
    batch = first._next_batch()
    store.put_json(paths.pending_batch(plan.campaign), dataclasses.asdict(batch))
    # what the killed driver got done: the metrics commit of the batch, nothing else
    data = first._staged(batch.units)["metrics"]
    tables.commit(store, "metrics", pa.concat_tables(data), app_id=first.app_id, version=batch.batch)
    second = Committer(store, plan)  # recovers in its constructor
    assert not store.exists(paths.pending_batch(plan.campaign))
    assert second.log.batch == batch.batch and isinstance(batch, Batch)
    con = connect(store)
    for table, n in totals(staged, staged).items():
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == n, table
    assert con.execute("SELECT count(*) FROM trials").fetchone()[0] == 0  # dense units finish no cell
    assert second.commit() is None  # recorded: nothing committed twice


def test_refuses_a_per_file_store_and_another_schema_version(setup, tmp_path):
    store, plan = setup
    from orchestrator.store import StoreError

    old = Store(str(tmp_path / "old"))
    old.write_table("trials", "rc", "k", [])  # an empty per-file table is still a per-file table
    with pytest.raises(StoreError, match=r"per-file layout .*trials/campaign=rc/k.parquet.*new store"):
        tables.check_writable(old)
    u = plan.stage("dense")[0]
    stage_unit(store, plan, u, 0.9)
    finish(store, plan, u.unit_id)
    Committer(store, plan).commit()
    tables.check_writable(store)  # ours: fine
    from deltalake import DeltaTable

    DeltaTable(tables.table_uri(store, "metrics")).alter.set_table_description("lth-sweep metrics, schema version 1")
    with pytest.raises(StoreError, match=r"'metrics' is a Delta table of schema version 1 \(expected"):
        tables.check_writable(store)


def test_a_first_commit_killed_after_its_data_files_leaves_a_writable_store(setup, tmp_path):
    """``lth run`` creates the tables (empty, with their log) before any commit. A first commit
    that a SIGKILL stops after delta-rs wrote its data files and before its log entry leaves
    those files in the table directory (this failed CI: the rerun took them for a per-file
    store and refused it). With the log in place they are unreferenced leftovers: the store
    stays writable, readers never see their rows, and the compaction's vacuum deletes them."""
    store, plan = setup
    assert sorted(tables.create_tables(store)) == sorted(COMMIT_ORDER)
    assert tables.create_tables(store) == []  # idempotent: a rerun creates nothing
    con = connect(store)
    for table in COMMIT_ORDER:
        dt = tables.open_table(store, table)
        assert dt.version() == 0 and tables.version_problem(table, dt) is None, table
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    # what the killed commit left: the data file delta-rs wrote, without its log entry
    units = plan.stage("dense")
    staged = {u.unit_id: stage_unit(store, plan, u, 0.9) for u in units}
    for u in units:
        finish(store, plan, u.unit_id)
    scratch = Store(str(tmp_path / "scratch"))
    rows = pa.concat_tables(Committer(store, plan)._staged([u.unit_id for u in units])["metrics"])
    tables.commit(scratch, "metrics", rows, app_id="killed", version=1)
    orphans = tables.live_files(scratch, "metrics")
    for rel in orphans:
        store.put_bytes(rel, scratch.get_bytes(rel))
    tables.check_writable(store)  # not mistaken for a per-file store
    Committer(store, plan).commit()
    con = connect(store)
    for table, n in totals(staged, staged).items():
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == n, table  # orphans unseen
    assert all(store.exists(rel) for rel in orphans)
    tables.compact(store, "metrics", plan.campaign)
    assert all(store.exists(rel) for rel in orphans)  # young: could be another driver's commit in flight
    hours_ago = time.time() - 3600 * (tables.ORPHAN_RETENTION_HOURS + 1)
    for rel in orphans:
        os.utime(store.full(rel), (hours_ago, hours_ago))
    tables.compact(store, "metrics", plan.campaign)
    assert not any(store.exists(rel) for rel in orphans)  # vacuumed once older than the retention
    assert connect(store).execute("SELECT count(*) FROM metrics").fetchone()[0] == totals(staged, staged)["metrics"]
