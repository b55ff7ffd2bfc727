"""Time the report's queries on a synthetic store of 10,000 trials (~5M metric rows).

The store is written with the real writer (``Store.write_table``, 100 trials per file) into a
temporary directory. Printed: write time, ``connect`` (scan + views), each query through our
views (pyarrow datasets, file access off) and the same query through DuckDB's native
``read_parquet`` over the same files, side by side, with their ratio.

    .venv/bin/python benchmarks/bench_queries.py [--trials 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from timing import best_of  # noqa: E402 - benchmarks/timing.py, beside this script

from analysis import connect, rethinking_lr  # noqa: E402
from analysis.synthetic import write_bulk  # noqa: E402
from orchestrator import schema  # noqa: E402
from orchestrator.store import Store  # noqa: E402

QUERIES = {
    "levels per run (report)": "SELECT dataset, arch, structure, schedule, lr, seed, level, reset, "
    "any_value(best_test_accuracy) AS best FROM cell_levels GROUP BY ALL",
    "mask stats (report)": "SELECT structure, schedule, lr, level, layer, avg(density), avg(travel_kept), "
    "avg(travel_pruned) FROM cell_masks WHERE kind = 'weight' GROUP BY ALL",
    "learning curves (5M rows)": "SELECT structure, lr, reset, level, epoch, avg(accuracy) FROM cell_metrics "
    "WHERE split = 'test' GROUP BY ALL",
    "metrics count one campaign": "SELECT count(*), avg(accuracy) FROM metrics WHERE campaign = 'bench'",
}


def native_connection(store: Store) -> duckdb.DuckDBPyConnection:
    """Same views with DuckDB's own read_parquet (for comparison only: not file-access locked)."""
    con = duckdb.connect()
    for table in schema.TABLES:
        files = ", ".join(f"'{f}'" for f in store.scan(table).files)
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{files}], hive_partitioning=true)")
    from analysis.views import CELL_VIEWS, _cell_view_sql

    for view, table in CELL_VIEWS.items():
        con.execute(_cell_view_sql(view, table))
    return con


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--keep", default=None, help="write the store here instead of a temp dir")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="lth-bench-")
    store = Store(root)
    t0 = time.perf_counter()
    rows = write_bulk(store, "bench", args.trials)
    print(f"store: {root}  trials={args.trials}  metric rows={rows:,}  files/table={len(store.scan('metrics').files)}")
    print(f"write (real writer): {time.perf_counter() - t0:.1f} s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean store: no bad files
        t_connect = best_of(lambda: connect(store), repeat=1)
        t_connect_cached = best_of(lambda: connect(store))
    con, native = connect(store), native_connection(store)
    print(f"connect (scan footers + views): first {t_connect:.3f} s, again {t_connect_cached:.3f} s")
    print(f"{'query':32s} {'views (s)':>10s} {'read_parquet (s)':>17s} {'ratio':>6s}")
    for name, q in QUERIES.items():
        a = best_of(lambda q=q: con.execute(q).fetchall())
        b = best_of(lambda q=q: native.execute(q).fetchall())
        print(f"{name:32s} {a:10.3f} {b:17.3f} {a / b:6.2f}")
    t_runs = best_of(lambda: rethinking_lr.analyse(con, "bench"), repeat=1)
    print(f"rethinking_lr.analyse (load_runs + compare + verdicts): {t_runs:.3f} s")


if __name__ == "__main__":
    main()
