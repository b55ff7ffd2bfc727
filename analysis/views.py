"""DuckDB views over the result store.

``connect(store)`` returns an in-memory DuckDB connection with one view per store table
(``trials``, ``metrics``, ``levels``, ``masks``; columns from ``orchestrator.schema`` plus the
hive partition column ``campaign``) and convenience views joining each cell's axes onto the
measurement rows (``cell_levels``, ``cell_metrics``, ``cell_masks``).

What a connection reads: each table's current version (a snapshot) when the table is a Delta
table (``orchestrator.tables``: its file list from the transaction log, never a half-applied
commit nor a file a compaction replaced), else, for a store in the older per-file layout, the
files whose footer reads with the current schema version (``Store.scan``; the others are named
in one warning). ``trials`` is listed first: the driver commits a batch's measurement rows
before its ``trials`` rows, so every cell a connection sees in ``trials`` has all its rows in
the measurement views too. The files are handed to DuckDB as ``pyarrow.dataset`` objects (which
read local and object-store paths alike, prune ``campaign`` partitions and push filters and
projections down), and then DuckDB's own file access is switched off
(``enable_external_access=false``) and the configuration locked. DuckDB itself can then
neither read nor write any file: COPY, EXPORT, ATTACH, INSTALL/LOAD and file-writing
functions fail with a permission error. (Handing DuckDB the file list through
``allowed_paths`` instead would let ``COPY ... TO '<store file>' (USE_TMP_FILE false)``
overwrite a store file, so we do not.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import duckdb
import pyarrow.dataset as ds

from orchestrator import schema, tables
from orchestrator.store import Store

# trials first: a connection's snapshot of trials is never newer than its measurement tables'
# (the driver commits trials last), so no cell it sees lacks rows (module docstring)
BASE_VIEWS = ("trials", *(t for t in schema.TABLES if t != "trials"))
# Axis columns copied from ``trials`` onto measurement rows. ``reset`` is renamed
# ``trial_reset``: a measurement row carries the reset that produced it (e.g. "dense" at
# level 0), which differs from the cell's reset when a shared unit serves several cells.
_JOIN_AXES = [c for c in schema.AXIS_COLUMNS if c != "reset"]
CELL_VIEWS = {"cell_levels": "levels", "cell_metrics": "metrics", "cell_masks": "masks"}
T = TypeVar("T")


def open_store(store: Store | str | os.PathLike | None) -> Store:
    """A ``Store`` from a Store, a path/URI, or None (``$LTH_STORE`` or ``./lth-store``)."""
    if isinstance(store, Store):
        return store
    if store is None:
        store = os.environ.get("LTH_STORE", "lth-store")
    return Store(store)


def table_dataset(store: Store, table: str, campaign: str | None = None, *, warn: bool = True) -> ds.Dataset:
    """A pyarrow dataset over what readers read of ``table``: the current version of its Delta
    table (``orchestrator.tables``), or the valid files of a per-file store; bad files (or a
    Delta table of another schema version) skipped with a warning."""
    found = tables.scan(store, table, campaign)
    if warn:
        found.warn()
    return tables.files_dataset(store, table, found.files)


def _cell_view_sql(view: str, table: str) -> str:
    measured = [f.name for f in schema.TABLES[table].schema if f.name != "trial_id"]
    axes = ", ".join(f"t.{c}" for c in _JOIN_AXES)
    # metrics.lr (the lr in force that epoch) would collide with the cell's lr axis
    cols = ", ".join(f"m.{c} AS epoch_{c}" if c in _JOIN_AXES else f"m.{c}" for c in measured)
    # ``campaign`` from trials (equal to m.campaign): a query joining two cell views on campaign
    # and the axes then joins the trials scans on campaign too. Taken from m, DuckDB joined them
    # on the axes alone, campaigns x the rows for replicated campaigns (test_analysis_views.py).
    return (
        f"CREATE VIEW {view} AS SELECT t.campaign, m.trial_id, {axes}, t.reset AS trial_reset, "
        f"t.status AS trial_status, t.axes_json, {cols} "
        f"FROM {table} m JOIN trials t ON t.campaign = m.campaign AND t.trial_id = m.trial_id"
    )


def connect(
    store: Store | str | os.PathLike | None = None, *, campaign: str | None = None, warn: bool = True
) -> duckdb.DuckDBPyConnection:
    """Read-only DuckDB connection with the store's views (see the module docstring).

    ``campaign`` restricts every view to one campaign (others are not even scanned).
    Querying: ``con.sql("SELECT ... FROM cell_levels").df()``.
    """
    store = open_store(store)
    return connect_datasets({table: table_dataset(store, table, campaign, warn=warn) for table in BASE_VIEWS})


def connect_datasets(datasets: dict[str, ds.Dataset]) -> duckdb.DuckDBPyConnection:
    """``connect``'s read-only connection and views over given pyarrow datasets, one per table
    of ``BASE_VIEWS`` (columns as ``tables.view_schema``); registered in ``BASE_VIEWS`` order.
    (``benchmarks/bench_table_formats.py`` reads other table formats' files through it.)"""
    con = duckdb.connect(":memory:")
    for table in BASE_VIEWS:
        con.register(f"_lth_{table}", datasets[table])
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM _lth_{table}")
    for view, table in CELL_VIEWS.items():
        con.execute(_cell_view_sql(view, table))
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def read_consistent(
    store: Store | str | os.PathLike | None,
    read: Callable[[duckdb.DuckDBPyConnection], T],
    *,
    campaign: str | None = None,
    warn: bool = True,
    attempts: int = 3,
) -> T:
    """``read(con)`` on a fresh ``connect`` connection; if it fails while the store's tables moved
    to a new version (a compaction's vacuum deleted files of the connection's snapshot, which
    a reader of a store a driver is writing can meet), again on a new snapshot. An error on
    an unchanged store (a bad query) is raised at once."""
    store = open_store(store)
    for attempt in range(attempts):
        before = tables.versions(store)
        con = connect(store, campaign=campaign, warn=warn and attempt == 0)
        try:
            return read(con)
        except (duckdb.Error, OSError, ValueError):  # (ValueError: analysis.sql.SqlError wraps duckdb errors)
            if attempt + 1 == attempts or tables.versions(store) == before:
                raise
        finally:
            con.close()
    raise AssertionError("unreachable")


def describe_views(con: duckdb.DuckDBPyConnection) -> str:
    """One line per view: its name and columns (shown with SQL errors)."""
    names = list(BASE_VIEWS) + list(CELL_VIEWS)
    lines = []
    for name in names:
        cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
        lines.append(f"  {name}({', '.join(cols)})")
    return "\n".join(lines)
