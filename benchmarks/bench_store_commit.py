"""What the store's write path costs and what it leaves for the readers, per layout, side by side.

The same units' rows (a campaign of ``--seeds`` seeds x 2 lrs of the digits MLP: per seed and
lr a dense, a trajectory and a branch unit, ``--levels`` levels, 2 cells) are written twice,
unit by unit as ``lth run`` writes them:

* ``delta``: each unit stages its rows (``Store.stage_records``) and finishes its marker; the
  driver's ``Committer`` commits every ``--batch`` units (``lth run`` commits every >= 5 s),
  then the tables are compacted (optimize + vacuum) as at the end of a run;
* ``per-file``: the layout before the Delta tables -- every unit level writes its own Parquet
  file per table (``Store.write_records``), never compacted.

Printed: write and commit seconds per 1,000 units, data files, and query times (our views:
``connect`` + query; plain clients over the table's current files: DuckDB over a pyarrow
dataset, and DuckDB's ``read_parquet`` on local disk) for
``count(*)`` over metrics and the README's rewind-minus-reinit join, before and after
compaction. No training: the rows are synthetic, the writers and readers are the real ones.

    .venv/bin/python benchmarks/bench_store_commit.py [--seeds 100] [--levels 3] [--batch 25] [--s3]

``--s3`` runs the same measurement on an ``s3://`` store served by moto on loopback (in this
process, configured by the README's AWS_* variables) and prints it beside the local disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import types
import typing
from pathlib import Path

import duckdb
import pyarrow.dataset as pads
import pyarrow.fs as pafs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from timing import best_of  # noqa: E402 - benchmarks/timing.py, beside this script

from analysis.views import connect  # noqa: E402
from orchestrator import tables  # noqa: E402
from orchestrator.committer import COMMIT_ORDER, Committer  # noqa: E402
from orchestrator.ledger import UnitMarker, now  # noqa: E402
from orchestrator.plan import make_plan  # noqa: E402
from orchestrator.spec import parse_campaign  # noqa: E402
from orchestrator.store import Store  # noqa: E402
from trainers.records import EpochMetrics, LevelSummary, MaskLayerStats  # noqa: E402

SPEC = """
name: bench
data: {{dataset: digits}}
model: {{arch: mlp}}
train: {{lr: 0.1, epochs: {epochs}}}
prune: {{rate: 0.5, levels: {levels}}}
resets: [rewind, reinit]
seeds: {seeds}
grid:
  lr: [0.1, 0.01]
"""
JOIN = """SELECT r.lr, r.level, avg(r.best_test_accuracy - c.best_test_accuracy) AS gain
FROM cell_levels r JOIN cell_levels c USING (campaign, arch, structure, schedule, lr, seed, level)
WHERE r.trial_reset = 'rewind' AND c.trial_reset = 'reinit' AND r.level > 0 GROUP BY ALL"""


def record(rtype, **values):
    hints = typing.get_type_hints(rtype)
    for f in dataclasses.fields(rtype):
        if f.name not in values and f.default is dataclasses.MISSING:
            hint = hints[f.name]
            optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
            values[f.name] = None if optional else {int: 1, float: 0.5, str: "x", bool: False}[hint]
    return rtype(**values)


def unit_rows(unit, epochs: int, layers: int = 3) -> list[tuple[str, tuple[str, ...], list]]:
    """(key, trial ids, records) per level of ``unit``, as orchestrator/units.py writes them."""
    out = []
    levels = [0] if unit.stage == "dense" else range(1, unit.setup.prune.levels + 1)
    reset = "dense" if unit.stage == "dense" else unit.reset
    for level in levels:
        key = f"{unit.unit_id}-L{level}"
        if unit.serves:
            recs = [record(EpochMetrics, level=level, reset=reset, epoch=e, split=s)
                    for e in range(epochs + 1) for s in ("train", "test")]
            recs.append(record(LevelSummary, level=level, reset=reset, status="done", best_test_accuracy=0.5))
            out.append((key, unit.serves, recs))
        if unit.mask_serves:
            out.append((key, unit.mask_serves, [record(MaskLayerStats, level=level, layer=f"l{i}", kind="weight")
                                                for i in range(layers)]))
    return out


def queries(store: Store) -> dict[str, float | None]:
    def views(q):
        return lambda: connect(store, warn=False).execute(q).fetchall()

    out = {"views count(metrics)": best_of(views("SELECT count(*) FROM metrics")),
           "views rewind-reinit join": best_of(views(JOIN))}
    found = tables.scan(store, "metrics").files
    # A plain client without our code: DuckDB over a pyarrow dataset of the table's files (any filesystem) ...
    out["plain pyarrow dataset + DuckDB count"] = best_of(
        lambda: duckdb.from_arrow(pads.dataset(found, filesystem=store.fs, format="parquet")).aggregate(
            "count(*)").fetchall())
    # ... and DuckDB's own reader, local files only (s3:// needs DuckDB's httpfs extension, not installed offline)
    listed = ", ".join(f"'{f}'" for f in found)
    out["duckdb read_parquet count(metrics)"] = (
        best_of(lambda: duckdb.sql(f"SELECT count(*) FROM read_parquet([{listed}])").fetchall())
        if isinstance(store.fs, pafs.LocalFileSystem) else None)
    return out


def files(store: Store) -> int:
    return sum(len(tables.scan(store, t).files) for t in COMMIT_ORDER)


def make_units(seeds: int, levels: int, epochs: int):
    """The benchmark campaign's plan, its units in the order ``lth run`` runs them, and each
    unit's rows (``unit_rows``). Shared with ``bench_table_formats.py``."""
    plan = make_plan(parse_campaign(SPEC.format(seeds=list(range(seeds)), levels=levels, epochs=epochs)))
    units = [u for stage in ("dense", "trajectory", "branch") for u in plan.stage(stage)]
    return plan, units, {u.unit_id: unit_rows(u, epochs) for u in units}


def stage_and_commit(store: Store, plan, units, rows, batch: int) -> tuple[float, Committer]:
    """Every unit stages its rows and finishes its marker, as a worker does; the driver's
    ``Committer`` commits every ``batch`` units and once at the end. Returns (staging seconds,
    the committer: its ``stats.seconds`` is the commit time)."""
    committer = Committer(store, plan)
    t_stage = 0.0
    for i, u in enumerate(units):
        t0 = time.perf_counter()
        for key, serves, recs in rows[u.unit_id]:
            store.stage_records(plan.campaign, key, u.unit_id, serves, recs)
        UnitMarker(u.unit_id, stage=u.stage, status="done", attempts=1, finished_at=now()).save(store, plan.campaign)
        t_stage += time.perf_counter() - t0
        if (i + 1) % batch == 0:
            committer.commit()
    committer.commit()
    return t_stage, committer


def measure(root: str, plan, units, rows: dict, batch: int) -> dict[str, float | int | None]:
    """Every figure of one store location (``root``: a directory or an ``s3://`` prefix), by label."""
    delta, flat = Store(f"{root}/delta"), Store(f"{root}/flat")
    t_stage, committer = stage_and_commit(delta, plan, units, rows, batch)
    t_commit = committer.stats.seconds
    before = files(delta)
    q_before = queries(delta)
    t0 = time.perf_counter()
    for t in COMMIT_ORDER:
        tables.compact(delta, t, plan.campaign)
    t_compact = time.perf_counter() - t0
    q_after = queries(delta)
    t0 = time.perf_counter()
    for u in units:
        for key, serves, recs in rows[u.unit_id]:
            flat.write_records(plan.campaign, key, u.unit_id, serves, recs)
    t_flat = time.perf_counter() - t0
    q_flat = queries(flat)
    per = 1000 / len(units)
    out = {
        "delta: stage, s per 1,000 units": t_stage * per,
        "delta: commit, s per 1,000 units": t_commit * per,
        "delta: ms per commit": t_commit / committer.stats.batches * 1000,
        "delta: data files before compaction": before,
        "delta: compaction, s": t_compact,
        "delta: data files after compaction": files(delta),
        "per-file: write, s per 1,000 units": t_flat * per,
        "per-file: data files": files(flat),
    }
    for q in q_before:
        out[f"{q}, s: per-file"] = q_flat[q]
        out[f"{q}, s: delta"] = q_before[q]
        out[f"{q}, s: compacted"] = q_after[q]
    return out


def _cell(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:d}" if isinstance(value, int) else f"{value:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=25, help="units per commit")
    p.add_argument("--s3", action="store_true",
                   help="also measure on an s3:// store (moto's S3 server on loopback, tests/s3_server.py) "
                        "and print it beside the local disk")
    args = p.parse_args()
    plan, units, rows = make_units(args.seeds, args.levels, args.epochs)
    print(f"{len(units)} units, {len(plan.cells)} cells, {args.levels} levels, {args.epochs} epochs; "
          f"commit every {args.batch} units; queries: best of 3")
    columns = {}
    with tempfile.TemporaryDirectory() as tmp:
        columns["local disk"] = measure(tmp, plan, units, rows, args.batch)
    if args.s3:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from s3_server import s3_server  # the tests' loopback server: the same variables a user sets

        with s3_server() as server:
            # the server runs in this process: its request handling is part of the S3 figures
            columns[f"S3 (moto, {server.endpoint})"] = measure(server.uri("bench"), plan, units, rows, args.batch)
    width = max(len(k) for k in next(iter(columns.values())))
    print(f"{'':{width}s}  " + "  ".join(f"{c:>12s}" for c in columns))
    for label in next(iter(columns.values())):
        print(f"{label:{width}s}  " + "  ".join(f"{_cell(col[label]):>{max(12, len(c))}s}"
                                                for c, col in columns.items()))


if __name__ == "__main__":
    main()
