"""Time the report's queries on a store of 10,240 trials in the layout ``lth run`` produces.

The store (10 finished campaigns of 1,024 trials, compacted as at the end of ``lth run``) is
built by ``benchmarks/real_store.py`` with the real writer and cached in ``--workdir``.
Printed: ``connect`` (Delta logs + views), each query through our views (pyarrow datasets,
file access off) and the same query through DuckDB's native ``read_parquet`` over the same
files, side by side, with their ratio, and the report's analysis of one campaign.

    .venv/bin/python benchmarks/bench_queries.py --workdir /tmp/lth-real [--campaigns 10] [--no-compact]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from real_store import Params, build, campaign_name, data_files  # noqa: E402 - beside this script
from timing import best_of  # noqa: E402 - benchmarks/timing.py, beside this script

from analysis import connect, rethinking_lr  # noqa: E402
from orchestrator import schema, tables  # noqa: E402
from orchestrator.store import Store  # noqa: E402

CAMPAIGN = campaign_name(0)

QUERIES = {
    "levels per run (report)": "SELECT dataset, arch, structure, schedule, lr, seed, level, reset, "
    "any_value(best_test_accuracy) AS best FROM cell_levels GROUP BY ALL",
    "mask stats (report)": "SELECT structure, schedule, lr, level, layer, avg(density), avg(travel_kept), "
    "avg(travel_pruned) FROM cell_masks WHERE kind = 'weight' GROUP BY ALL",
    "learning curves (all rows)": "SELECT structure, lr, reset, level, epoch, avg(accuracy) FROM cell_metrics "
    "WHERE split = 'test' GROUP BY ALL",
    "metrics count one campaign": f"SELECT count(*), avg(accuracy) FROM metrics WHERE campaign = '{CAMPAIGN}'",
}


def native_connection(store: Store) -> duckdb.DuckDBPyConnection:
    """Same views with DuckDB's own read_parquet (for comparison only: not file-access locked)."""
    con = duckdb.connect()
    for table in schema.TABLES:
        found = tables.scan(store, table).files  # the Delta table's current files
        if not found:
            continue
        files = ", ".join(f"'{f}'" for f in found)
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{files}], hive_partitioning=true)")
    from analysis.views import CELL_VIEWS, _cell_view_sql

    for view, table in CELL_VIEWS.items():
        con.execute(_cell_view_sql(view, table))
    return con


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True, help="stores cached here (benchmarks/real_store.py)")
    parser.add_argument("--campaigns", type=int, default=10, help="finished campaigns of 1,024 trials")
    parser.add_argument("--no-compact", action="store_true", help="the campaigns' per-batch files, not compacted")
    args = parser.parse_args()
    b = build(args.workdir, args.campaigns, Params(), compact=not args.no_compact)
    store = Store(str(b.root))
    rows = connect(store).execute("SELECT count(*) FROM metrics").fetchone()[0]
    print(f"store: {b.root}  trials={b.trials:,}  metric rows={rows:,}  data files={data_files(b.root):,}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean store: no bad files
        t_connect = best_of(lambda: connect(store), repeat=1)
        t_connect_cached = best_of(lambda: connect(store))
    con, native = connect(store), native_connection(store)
    print(f"connect (Delta logs + views): first {t_connect:.3f} s, again {t_connect_cached:.3f} s")
    print(f"{'query':32s} {'views (s)':>10s} {'read_parquet (s)':>17s} {'ratio':>6s}")
    for name, q in QUERIES.items():
        a = best_of(lambda q=q: con.execute(q).fetchall())
        b = best_of(lambda q=q: native.execute(q).fetchall())
        print(f"{name:32s} {a:10.3f} {b:17.3f} {a / b:6.2f}")
    t_runs = best_of(lambda: rethinking_lr.analyse(con, CAMPAIGN), repeat=1)
    print(f"rethinking_lr.analyse (load_runs + compare + verdicts): {t_runs:.3f} s")


if __name__ == "__main__":
    main()
