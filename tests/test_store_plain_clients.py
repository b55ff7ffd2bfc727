"""A finished store read by plain clients, without any lth-sweep code: DuckDB SQL (what the
DuckDB CLI runs), pandas, polars, and deltalake / polars' Delta reader. Each must give exactly
the rows our own views give. The store is written by the real write path (units staging rows
through ``Store.stage_records``, the driver's ``Committer``) and compacted as ``lth run``
ends (``tables.compact``: optimize + vacuum), with replaced rows in its history (a failed
unit run again) so that a reader of every file ever written would count wrong.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import polars as pl
import pytest
from deltalake import DeltaTable
from test_store_commits import SPEC, finish, stage_unit

from analysis.views import connect
from orchestrator import tables
from orchestrator.committer import COMMIT_ORDER, Committer
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign
from orchestrator.store import Store

TABLES = ("trials", "metrics", "levels", "masks")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain") / "store"
    st = Store(str(root))
    plan = make_plan(parse_campaign(SPEC))
    committer = Committer(st, plan)
    units = list(plan.units.values())
    for i, u in enumerate(units):
        stage_unit(st, plan, u, 0.9)
        finish(st, plan, u.unit_id, "failed" if i == 0 else "done")
        if i % 4 == 3:
            committer.commit()
    committer.commit()
    stage_unit(st, plan, units[0], 0.9)  # the failed unit again: its rows are replaced
    finish(st, plan, units[0].unit_id, "done", attempts=2)
    committer.commit()
    for table in COMMIT_ORDER:
        tables.compact(st, table, plan.campaign)
    return root


def ours(root, table: str) -> pd.DataFrame:
    return connect(str(root)).sql(f"SELECT * FROM {table}").df()


def canon(df: pd.DataFrame, columns) -> list[tuple]:
    """Rows as sorted tuples over ``columns`` (the reader's own column order and dtypes aside)."""
    df = df[list(columns)]
    return sorted(map(tuple, df.astype(str).itertuples(index=False)))


@pytest.mark.parametrize("table", TABLES)
def test_duckdb_sql_reads_the_partitions(store, table):
    # the same statement works in the DuckDB CLI: duckdb -c "SELECT ... FROM read_parquet(...)"
    got = duckdb.sql(f"SELECT * FROM read_parquet('{store}/{table}/campaign=*/*.parquet', "
                     "hive_partitioning = true)").df()
    expected = ours(store, table)
    assert len(expected) > 0 and set(got.columns) == set(expected.columns)
    assert canon(got, expected.columns) == canon(expected, expected.columns)


@pytest.mark.parametrize("table", TABLES)
def test_pandas_reads_the_table_directory(store, table):
    got = pd.read_parquet(store / table)  # pyarrow dataset: skips _delta_log, campaign from the path
    expected = ours(store, table)
    assert canon(got, expected.columns) == canon(expected, expected.columns)


@pytest.mark.parametrize("table", TABLES)
def test_polars_reads_the_partitions(store, table):
    got = pl.read_parquet(f"{store}/{table}/campaign=*/*.parquet", hive_partitioning=True).to_pandas()
    expected = ours(store, table)
    assert canon(got, expected.columns) == canon(expected, expected.columns)


@pytest.mark.parametrize("table", TABLES)
def test_delta_readers_read_the_current_version(store, table):
    """deltalake and polars.read_delta read the transaction log: right also before a vacuum."""
    expected = ours(store, table)
    got = DeltaTable(str(store / table)).to_pandas()
    assert canon(got, expected.columns) == canon(expected, expected.columns)
    got = pl.read_delta(str(store / table)).to_pandas()
    assert canon(got, expected.columns) == canon(expected, expected.columns)


def test_history_holds_replaced_rows(store):
    """The metrics' log has a replacing write (the failed unit's rows) and the compaction: a
    reader of every file ever written would double count; every client above reads only the
    current version's one file per partition."""
    history = [(h["operation"], h.get("operationParameters", {}).get("predicate")) for h in
               DeltaTable(str(store / "metrics")).history()]
    assert any(op == "WRITE" and pred and "unit_id" in pred for op, pred in history), history
    assert ("OPTIMIZE" in [op for op, _ in history]) and ("VACUUM END" in [op for op, _ in history])
    assert len(list((store / "metrics").glob("campaign=*/*.parquet"))) == 1
