"""Table formats for the result store, measured side by side (issue 13, item 1).

The same units' rows (``bench_store_commit.make_units``: the digits MLP campaign of ``--seeds``
seeds x 2 lrs, ``--levels`` levels) are staged unit by unit as ``lth run``'s workers stage
them (``Store.stage_records`` + marker) into three stores, and the real driver
``Committer`` commits every ``--batch`` units into one of three table formats; only the
per-table commit call (``tables.commit``) and the compaction differ:

* ``delta``: the product -- ``tables.commit`` (delta-rs, application transaction per batch)
  and ``tables.compact`` (optimize + vacuum);
* ``iceberg``: Apache Iceberg through ``pyiceberg`` with a ``SqlCatalog`` on a local SQLite
  file and a local warehouse directory; each table partitioned by ``campaign`` (identity);
  one catalog transaction per table and batch that appends the rows and sets the table
  property ``lth-sweep.txn.<app id>`` = batch number (the snapshot summary carries it too).
  A re-applied batch is recognised from that property: it is committed atomically with the
  rows and, unlike a snapshot summary, survives snapshot expiry. pyiceberg (0.12) has no
  compaction (no ``rewrite_data_files``, no orphan-file removal): here it is done by hand --
  ``overwrite`` of the partition with its own rows (one snapshot), ``expire_snapshots``, then
  deleting the data files no snapshot references;
* ``manifest``: a home-made format -- each batch's rows are one Parquet file per table under
  ``<table>/campaign=<name>/`` and ``<table>/_manifest.json`` names the live files and the
  last batch number per app id (written atomically: temporary name + rename); compaction
  rewrites a partition into one file, writes the manifest, then deletes the other files.
  (The per-unit files are the workers' staging files, as for the other two; per-unit files
  read directly from the table directories -- the older layout -- are measured in
  ``bench_store_commit.py``.)

Printed per format: driver commit seconds per 1,000 units (and the part spent in the
format's own commit calls), data (and metadata) files before and after compaction, query
times (best of 5 rounds, the formats interleaved: reading the format's file list, DuckDB
views of ``analysis.views.connect_datasets`` over pyarrow datasets of the live files, then
``count(*)`` over metrics / the README's rewind-minus-reinit join), an exactly-once check
(the last batch re-applied is skipped), and what plain clients read without our code (DuckDB
``read_parquet`` glob, pandas, polars) compared with the true row count: before compaction,
half-way through the compaction of ``metrics`` (rewritten, old files not yet deleted: for
Delta, ``tables.compact``'s two steps ``optimize`` and ``vacuum`` with the look in between)
and after it; then which format-aware readers work here. The run fails if the formats end
up holding different rows. No training: the rows are synthetic, the writers and readers are
the real ones.

    .venv/bin/python benchmarks/bench_table_formats.py [--seeds 30] [--levels 3] [--batch 25]   (README: --seeds 167)

Needs ``pyiceberg[sql-sqlite]`` (the ``dev`` extra); the product never imports it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import posixpath
import sys
import tempfile
import time
import uuid
from pathlib import Path
from unittest import mock

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from bench_store_commit import JOIN, make_units, stage_and_commit  # noqa: E402 - beside this script

from analysis.views import BASE_VIEWS, connect_datasets  # noqa: E402
from orchestrator import paths, schema, tables  # noqa: E402
from orchestrator.committer import COMMIT_ORDER  # noqa: E402
from orchestrator.store import Store  # noqa: E402

COUNT = "SELECT count(*) FROM metrics"


class Delta:
    """The product's format: ``orchestrator.tables``."""

    name = "delta"

    def __init__(self, root: str):
        self.store = Store(root)
        tables.create_tables(self.store)  # as lth run does before its first commit
        self.commit = tables.commit

    def compact(self, table: str, campaign: str, between=None) -> None:
        if between is None:
            tables.compact(self.store, table, campaign)
        else:  # tables.compact's two steps, with a look at the table in between
            tables.optimize(self.store, table, campaign)
            between()
            tables.vacuum(self.store, table)

    def live_files(self, table: str) -> list[str]:
        return tables.scan(self.store, table).files

    def datasets(self) -> dict[str, ds.Dataset]:
        return {t: tables.files_dataset(self.store, t, self.live_files(t)) for t in BASE_VIEWS}

    def table_dir(self, table: str) -> str:
        return self.store.full(paths.table_dir(table))

    def meta_files(self) -> int:
        return sum(len(os.listdir(f"{self.table_dir(t)}/{tables.DELTA_LOG}")) for t in COMMIT_ORDER)


class Iceberg:
    """pyiceberg, SqlCatalog on SQLite, a local warehouse; the same commit signature as ``tables.commit``."""

    name = "iceberg"
    NS = "lth"

    def __init__(self, root: str):
        from pyiceberg.catalog.sql import SqlCatalog

        self.store = Store(root)  # staging and markers, as for delta
        self.warehouse = f"{root}/_warehouse"
        os.makedirs(self.warehouse)
        self.catalog = SqlCatalog("lth", uri=f"sqlite:///{root}/_catalog.db", warehouse=f"file://{self.warehouse}")
        self.catalog.create_namespace(self.NS)
        for table in schema.TABLES:
            tbl = self.catalog.create_table(f"{self.NS}.{table}", schema=tables.view_schema(table))
            with tbl.update_spec() as spec:
                spec.add_identity(schema.PARTITION_COLUMN)

    def _table(self, table: str):
        return self.catalog.load_table(f"{self.NS}.{table}")

    @staticmethod
    def _txn_key(app_id: str) -> str:
        return f"lth-sweep.txn.{app_id}"

    def commit(self, store, table, data, *, app_id, version, replace=None) -> tables.CommitResult:
        if replace:  # (a unit run again: tx.overwrite with overwrite_filter; not exercised here)
            raise NotImplementedError("replace")
        tbl = self._table(table)
        if int(tbl.properties.get(self._txn_key(app_id), 0)) >= version:
            return tables.CommitResult(table, data.num_rows, False)
        data = data.select(tables.view_schema(table).names).cast(tables.view_schema(table))
        with tbl.transaction() as tx:  # one catalog commit: rows and batch number together
            tx.set_properties({self._txn_key(app_id): str(version)})
            tx.append(data, snapshot_properties={"lth-sweep.app": app_id, "lth-sweep.batch": str(version)})
        return tables.CommitResult(table, data.num_rows, True)

    def compact(self, table: str, campaign: str, between=None) -> None:
        from pyiceberg.expressions import EqualTo

        tbl = self._table(table)
        part = EqualTo(schema.PARTITION_COLUMN, campaign)
        rows = tbl.scan(row_filter=part).to_arrow()
        if rows.num_rows:
            tbl.overwrite(rows, overwrite_filter=part, snapshot_properties={"lth-sweep.compacted": campaign})
        if between is not None:
            between()
        tbl.maintenance.expire_snapshots().older_than(dt.datetime.now(dt.UTC)).commit()
        live = set(self.live_files(table))
        for f in glob.glob(f"{self.table_dir(table)}/**/*.parquet", recursive=True):
            if f not in live:
                os.remove(f)

    def live_files(self, table: str) -> list[str]:
        return sorted(t.file.file_path.removeprefix("file://") for t in self._table(table).scan().plan_files())

    def datasets(self) -> dict[str, ds.Dataset]:  # the campaign column is in Iceberg's data files
        return {t: ds.dataset(self.live_files(t), schema=tables.view_schema(t), format="parquet") for t in BASE_VIEWS}

    def table_dir(self, table: str) -> str:
        return f"{self.warehouse}/{self.NS}/{table}/data"

    def meta_files(self) -> int:
        return sum(len(os.listdir(f"{self.warehouse}/{self.NS}/{t}/metadata")) for t in COMMIT_ORDER)


class Manifest:
    """Batch files behind ``<table>/_manifest.json`` ({"txn": {app id: batch}, "files": [...]})."""

    name = "manifest"

    def __init__(self, root: str):
        self.store = Store(root)

    def _manifest_path(self, table: str) -> str:
        return f"{paths.table_dir(table)}/_manifest.json"

    def _manifest(self, table: str) -> dict:
        return self.store.get_json(self._manifest_path(table)) or {"txn": {}, "files": []}

    def _write_file(self, table: str, campaign: str, prefix: str, data: pa.Table) -> str:
        path = f"{paths.table_partition(table, campaign)}/{prefix}-{uuid.uuid4().hex[:12]}{paths.PARQUET}"
        sink = pa.BufferOutputStream()
        pq.write_table(data.drop_columns([schema.PARTITION_COLUMN]), sink, compression="zstd")
        self.store.put_bytes(path, sink.getvalue().to_pybytes())  # temporary name + rename
        return path

    def commit(self, store, table, data, *, app_id, version, replace=None) -> tables.CommitResult:
        if replace:
            raise NotImplementedError("replace")
        man = self._manifest(table)
        if man["txn"].get(app_id, 0) >= version:
            return tables.CommitResult(table, data.num_rows, False)
        (campaign,) = set(data.column(schema.PARTITION_COLUMN).to_pylist()) or {app_id.split(":", 1)[1]}
        data = data.select(tables.view_schema(table).names).cast(tables.view_schema(table))
        man["files"].append(self._write_file(table, campaign, f"b{version:06d}", data))
        man["txn"][app_id] = version
        self.store.put_json(self._manifest_path(table), man)  # the commit point
        return tables.CommitResult(table, data.num_rows, True)

    def compact(self, table: str, campaign: str, between=None) -> None:
        man = self._manifest(table)
        part = f"{paths.table_partition(table, campaign)}/"
        old = [f for f in man["files"] if f.startswith(part)]
        if len(old) > 1:
            rows = tables.files_dataset(self.store, table, [self.store.full(f) for f in old]).to_table()
            new = self._write_file(table, campaign, "c", rows)
            man["files"] = [f for f in man["files"] if not f.startswith(part)] + [new]
            self.store.put_json(self._manifest_path(table), man)
        if between is not None:
            between()
        live = set(man["files"])
        for f in self.store.list(part):  # replaced files, and files of commits killed before their manifest
            if f.endswith(paths.PARQUET) and f not in live:
                self.store.delete(f)

    def live_files(self, table: str) -> list[str]:
        return [self.store.full(f) for f in self._manifest(table)["files"]]

    def datasets(self) -> dict[str, ds.Dataset]:
        return {t: tables.files_dataset(self.store, t, self.live_files(t)) for t in BASE_VIEWS}

    def table_dir(self, table: str) -> str:
        return self.store.full(paths.table_dir(table))

    def meta_files(self) -> int:
        return sum(self.store.exists(self._manifest_path(t)) for t in COMMIT_ORDER)


FORMATS = (Delta, Iceberg, Manifest)


def queries(fmts: dict, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Best time per format and query over ``rounds`` rounds, each running every format's
    query once (interleaved, so a busy moment of the shared machine hits all formats): the
    format's file list, ``connect_datasets`` over it, then the query."""
    best = {name: {"count(*) metrics": float("inf"), "rewind-reinit join": float("inf")} for name in fmts}
    for _ in range(rounds):
        for name, fmt in fmts.items():
            for q, sql in (("count(*) metrics", COUNT), ("rewind-reinit join", JOIN)):
                t0 = time.perf_counter()
                connect_datasets(fmt.datasets()).execute(sql).fetchall()
                best[name][q] = min(best[name][q], time.perf_counter() - t0)
    return best


def data_files(fmt) -> tuple[int, int]:
    """(live data files, Parquet files on disk) over the tables."""
    on_disk = sum(len(glob.glob(f"{fmt.table_dir(t)}/campaign=*/*.parquet")) for t in COMMIT_ORDER)
    return sum(len(fmt.live_files(t)) for t in COMMIT_ORDER), on_disk


def plain_clients(fmt, expected: int, errors: dict[str, str]) -> dict[str, str]:
    """metrics rows each plain client reads from the table's directory, vs ``expected``
    (a client's failure: "fails", its message in ``errors``)."""
    root = fmt.table_dir("metrics")
    pattern = f"{root}/campaign=*/*.parquet"
    reads = {
        "duckdb read_parquet glob": lambda: duckdb.sql(
            f"SELECT count(*) FROM read_parquet('{pattern}', hive_partitioning = true)").fetchall()[0][0],
        "pandas read_parquet(dir)": lambda: len(pd.read_parquet(root)),
        "polars read_parquet glob": lambda: pl.read_parquet(pattern, hive_partitioning=True).height,
    }
    out = {}
    for name, read in reads.items():
        try:
            n = read()
            out[name] = "ok" if n == expected else f"{n - expected:+d} rows"
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out[name] = "fails"
            errors[f"{fmt.name}, {name}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:110]}"
    return out


def format_readers(delta: Delta, iceberg: Iceberg, expected: int) -> list[str]:
    """Readers that know the formats (need deltalake / pyiceberg / a DuckDB extension)."""
    os.environ.setdefault("POLARS_ICEBERG_PLANNER", "pyiceberg")  # (no polars_iceberg package)
    checks = {
        "polars read_delta (needs deltalake)": lambda: pl.read_delta(delta.table_dir("metrics")).height,
        "pandas via deltalake DeltaTable.to_pandas": lambda: len(tables.open_table(delta.store, "metrics").to_pandas()),
        "polars scan_iceberg (needs pyiceberg + the catalog)": lambda: pl.scan_iceberg(
            iceberg._table("metrics")).select(pl.len()).collect().item(),
        "duckdb INSTALL iceberg": lambda: duckdb.sql("INSTALL iceberg"),
        "duckdb INSTALL delta": lambda: duckdb.sql("INSTALL delta"),
    }
    out = []
    for name, read in checks.items():
        try:
            n = read()
            out.append(f"{name}: " + ("ok" if n == expected else f"read {n}, expected {expected}"))
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out.append(f"{name}: fails ({type(e).__name__}: {str(e).splitlines()[0][:90]})")
    return out


def reapply_skipped(fmt, campaign: str, app_id: str, batch: int) -> bool:
    """Re-commit the last batch's number with the same rows: the format must skip it."""
    table = "levels"
    before = connect_datasets(fmt.datasets()).execute("SELECT count(*) FROM levels").fetchone()[0]
    data = fmt.datasets()[table].to_table().slice(0, 1)
    result = fmt.commit(fmt.store, table, data, app_id=app_id, version=batch)
    after = connect_datasets(fmt.datasets()).execute("SELECT count(*) FROM levels").fetchone()[0]
    return not result.committed and before == after


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=25, help="units per commit")
    args = p.parse_args()
    plan, units, rows = make_units(args.seeds, args.levels, args.epochs)
    n = len(units)
    print(f"{n} units, {len(plan.cells)} cells, {args.levels} levels, {args.epochs} epochs; commit every {args.batch} "
          f"units; queries: best of 5 rounds, formats interleaved")
    res: dict[str, dict] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fmts, committers = {}, {}
        for cls in FORMATS:
            fmt = fmts[cls.name] = cls(posixpath.join(tmp, cls.name))
            own = [0.0]  # seconds inside the format's commit calls

            def timed(*a, fmt=fmt, own=own, **kw):
                t0 = time.perf_counter()
                try:
                    return fmt.commit(*a, **kw)
                finally:
                    own[0] += time.perf_counter() - t0

            with mock.patch.object(tables, "commit", timed):  # the Committer's one call into the format
                t_stage, committer = stage_and_commit(fmt.store, plan, units, rows, args.batch)
            committers[cls.name] = committer
            r = res[cls.name] = {"stage": t_stage, "commit": committer.stats.seconds, "own": own[0],
                                 "commits": committer.stats.batches}
            r["expected"] = connect_datasets(fmt.datasets()).execute(COUNT).fetchone()[0]
            r["files"] = data_files(fmt)
            r["meta"] = fmt.meta_files()
            r["plain"] = plain_clients(fmt, r["expected"], errors)
        for name, q in queries(fmts).items():
            res[name]["q"] = q
        for name, fmt in fmts.items():
            r = res[name]
            looked = [0.0]  # seconds the plain clients took half-way (not compaction time)

            def look(fmt=fmt, r=r, looked=looked):
                t0 = time.perf_counter()
                r["plain_mid"] = plain_clients(fmt, r["expected"], errors)
                looked[0] = time.perf_counter() - t0

            t0 = time.perf_counter()
            for t in COMMIT_ORDER:  # metrics: with a look by the plain clients between rewrite and deletion
                fmt.compact(t, plan.campaign, between=look if t == "metrics" else None)
            r["compact"] = time.perf_counter() - t0 - looked[0]
            r["files_c"] = data_files(fmt)
            r["meta_c"] = fmt.meta_files()
            r["plain_c"] = plain_clients(fmt, r["expected"], errors)
            r["join"] = sorted(connect_datasets(fmt.datasets()).execute(JOIN).fetchall())
        for name, q in queries(fmts).items():
            res[name]["q_c"] = q
        for name, fmt in fmts.items():
            res[name]["exactly_once"] = reapply_skipped(fmt, plan.campaign, committers[name].app_id,
                                                        committers[name].log.batch)
        readers = format_readers(fmts["delta"], fmts["iceberg"], res["delta"]["expected"])
    names = [c.name for c in FORMATS]
    per = 1000 / n
    assert len({res[f]["expected"] for f in names}) == 1 and len({repr(res[f]["join"]) for f in names}) == 1, \
        "the formats hold different rows"

    def row(label, cell):
        print(f"{label:40s}" + "".join(f"{cell(res[f]):>24s}" for f in names))

    row("per 1,000 units", lambda r: "")
    print(f"{'':40s}" + "".join(f"{f:>24s}" for f in names))
    row("worker staging (s)", lambda r: f"{r['stage'] * per:.1f}")
    row("driver commits (s)", lambda r: f"{r['commit'] * per:.1f}")
    row("  of which the format's calls (s)", lambda r: f"{r['own'] * per:.1f}")
    row("  per commit (ms)", lambda r: f"{r['commit'] / r['commits'] * 1000:.0f} x {r['commits']}")
    row("data files live (on disk), before", lambda r: f"{r['files'][0]} ({r['files'][1]})")
    row("  after compaction", lambda r: f"{r['files_c'][0]} ({r['files_c'][1]})")
    row("metadata files before -> after", lambda r: f"{r['meta']} -> {r['meta_c']}")
    row("compaction, 6 tables (s)", lambda r: f"{r['compact']:.2f}")
    for q in res["delta"]["q"]:
        row(f"views {q} (s), before -> after", lambda r, q=q: f"{r['q'][q]:.3f} -> {r['q_c'][q]:.3f}")
    row("re-applied batch skipped (exactly once)", lambda r: "yes" if r["exactly_once"] else "NO")
    print(f"plain clients, metrics rows vs the {res['delta']['expected']} committed: before compaction, "
          "half-way (partition rewritten, old files not yet deleted), after")
    for client in res["delta"]["plain"]:
        row(f"  {client}", lambda r, c=client: f"{r['plain'][c]} / {r['plain_mid'][c]} / {r['plain_c'][c]}")
    for where, error in errors.items():
        print(f"  ({where}: {error})")
    print("format-aware readers:")
    for line in readers:
        print(f"  {line}")


if __name__ == "__main__":
    main()
