"""Views over a real store: columns from the schema, bad files skipped with a warning, read-only SQL."""

from __future__ import annotations

import os
import re

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analysis import connect
from analysis.cli import sql as sql_command
from analysis.sql import SqlError, format_result, run_sql
from analysis.synthetic import write_campaign
from orchestrator import schema
from orchestrator.store import TMP_PREFIX, Store

CELLS = [dict(dataset="digits", arch="mlp", structure="unstructured", schedule="iterative", lr=0.1)]


def acc(cell, reset, level, seed):
    return 0.9 - 0.01 * level + 0.001 * seed


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    write_campaign(s, "a", CELLS, acc, seeds=(0, 1), levels=2)
    write_campaign(s, "b", CELLS, acc, seeds=(0,), levels=1)
    return s


def test_views_columns_and_counts(store):
    con = connect(store)
    for table, spec in schema.TABLES.items():
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert cols == spec.schema.names + ["campaign"]
    # levels of campaign a: dense (2 seeds, fanned out to 2 trials each) + 2 levels x 4 trials
    n = con.execute("SELECT count(*) FROM levels WHERE campaign = 'a'").fetchone()[0]
    assert n == 2 * 2 + 2 * 4
    assert con.execute("SELECT count(*) FROM cell_levels").fetchone()[0] == con.execute("SELECT count(*) FROM levels").fetchone()[0]
    row = con.execute("SELECT arch, lr, trial_reset, reset FROM cell_levels WHERE level = 0 LIMIT 1").fetchone()
    assert row[0] == "mlp" and row[1] == 0.1 and row[3] == "dense" and row[2] in ("rewind", "reinit")
    only_b = connect(store, campaign="b")
    assert only_b.execute("SELECT DISTINCT campaign FROM trials").fetchall() == [("b",)]
    plan = "\n".join(str(r[1]) for r in con.execute("EXPLAIN SELECT * FROM metrics WHERE campaign = 'b'").fetchall())
    assert "campaign" in plan and "Filters" in plan  # the partition filter is pushed into the scan


def test_empty_store_has_typed_views(tmp_path):
    con = connect(Store(tmp_path / "empty"))
    assert con.execute("SELECT count(*) FROM cell_masks").fetchone()[0] == 0
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE levels)").fetchall())
    assert types["best_test_accuracy"] == "DOUBLE" and types["level"] == "BIGINT"


def test_bad_files_skipped_with_warning(store):
    d = os.path.join(store.root, "levels", "campaign=a")
    good = sorted(f for f in os.listdir(d) if f.endswith(".parquet"))[0]
    data = open(os.path.join(d, good), "rb").read()
    open(os.path.join(d, "zz-truncated.parquet"), "wb").write(data[: len(data) - 20])
    open(os.path.join(d, "zz-text.parquet"), "w").write("oops")
    open(os.path.join(d, f"{TMP_PREFIX}123-x.parquet"), "wb").write(data)
    table = pq.read_table(os.path.join(d, good))
    pq.write_table(table.replace_schema_metadata({schema.METADATA_KEY: b"0"}), os.path.join(d, "zz-old.parquet"))
    with pytest.warns(UserWarning) as caught:
        con = connect(store)
    text = " ".join(str(w.message) for w in caught)
    for name in ("zz-truncated.parquet", "zz-text.parquet", f"{TMP_PREFIX}123-x.parquet", "zz-old.parquet"):
        assert name in text
    assert con.execute("SELECT count(*) FROM levels WHERE campaign = 'a'").fetchone()[0] == 12


WRITES = {
    "copy": "COPY (SELECT * FROM trials) TO '{dir}/out.csv'",
    "copy_over_store": "COPY (SELECT 1 AS x) TO '{store_file}' (USE_TMP_FILE false)",
    "create_table": "CREATE TABLE t AS SELECT 1",
    "create_view": "CREATE VIEW v AS SELECT 1",
    "drop": "DROP VIEW trials",
    "insert": "INSERT INTO trials SELECT * FROM trials",
    "update": "UPDATE trials SET arch = 'x'",
    "delete": "DELETE FROM trials",
    "attach": "ATTACH '{dir}/db.duckdb' AS d",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "export": "EXPORT DATABASE '{dir}/export'",
    "set": "SET threads = 1",
    "pragma": "PRAGMA threads = 1",
    "explain_analyze_copy": "EXPLAIN ANALYZE COPY (SELECT 1) TO '{dir}/x.csv'",
    "two_statements": "SELECT 1; DROP VIEW trials",
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_sql_refuses_writes(store, tmp_path, name):
    store_file = os.path.join(store.root, store.list("trials")[0])
    before = open(store_file, "rb").read()
    query = WRITES[name].format(dir=tmp_path, store_file=store_file)
    con = connect(store)
    # the statement guard's own message: the locked connection (tested below) must not be what refuses
    refusal = "expected exactly one SQL statement" if name == "two_statements" else "^refused: .* not allowed"
    with pytest.raises(SqlError, match=refusal):
        run_sql(con, query)
    assert sorted(os.listdir(tmp_path)) == ["store"]  # nothing new on disk
    assert open(store_file, "rb").read() == before
    assert con.execute("SELECT count(*) FROM trials").fetchone()[0] == 6


def test_connection_itself_cannot_touch_files(store, tmp_path):
    """Even bypassing run_sql's statement check, DuckDB's file access is off and settings locked."""
    con = connect(store)
    store_file = os.path.join(store.root, store.list("trials")[0])
    for q in (f"COPY (SELECT 1 AS x) TO '{store_file}' (USE_TMP_FILE false)", f"COPY trials TO '{tmp_path}/x.csv'",
              "SELECT * FROM read_csv('/etc/hostname')", "SET enable_external_access = true", "LOAD httpfs"):
        with pytest.raises(duckdb.Error):
            con.execute(q)
    assert pq.read_table(store_file).num_rows == 4


def test_sql_reads_and_formats(store):
    con = connect(store)
    df = run_sql(con, "SELECT reset, count(*) AS n FROM levels WHERE campaign='a' GROUP BY reset ORDER BY reset")
    assert df.to_dict("records") == [{"reset": "dense", "n": 4}, {"reset": "reinit", "n": 4}, {"reset": "rewind", "n": 4}]
    assert run_sql(con, "DESCRIBE metrics")["column_name"].tolist()[:2] == ["trial_id", "unit_id"]
    assert not run_sql(con, "EXPLAIN SELECT * FROM trials").empty
    assert format_result(df, "csv").splitlines()[0] == "reset,n"
    assert format_result(df, "markdown").splitlines()[1] == "|---|---|"
    assert '"reset":"dense"' in format_result(df, "json").replace(" ", "")
    with pytest.raises(SqlError, match="cell_levels"):  # DuckDB's message plus the views and columns
        run_sql(con, "SELECT nope FROM trials")


def test_sql_cli(store):
    runner = CliRunner()
    ok = runner.invoke(sql_command, ["SELECT count(*) AS n FROM trials", "--store", store.root, "--format", "csv"])
    assert ok.exit_code == 0 and ok.output.split() == ["n", "6"]
    bad = runner.invoke(sql_command, ["DROP VIEW trials", "--store", store.root])
    assert bad.exit_code != 0 and "refused: DROP" in bad.output


def test_cell_view_joins_stay_linear_in_campaigns(tmp_path):
    """The README's rewind-minus-reinit self-join of ``cell_levels`` over a store of many campaigns
    with the same trial ids (replications): no operator may produce more rows than the levels
    table holds. With ``campaign`` taken from the measurement table, DuckDB joined the two
    ``trials`` scans without it: campaigns x the rows (27x the time for 10x the trials,
    benchmarks/bench_store_scale.py)."""
    s = Store(tmp_path / "store")
    for i in range(20):
        write_campaign(s, f"c{i:02d}", CELLS, acc, seeds=(0, 1, 2), levels=2)
    con = connect(s)
    levels = con.execute("SELECT count(*) FROM levels").fetchone()[0]
    query = """SELECT r.structure, r.lr, r.level, avg(r.best_test_accuracy - c.best_test_accuracy) AS gain
               FROM cell_levels r JOIN cell_levels c USING (campaign, arch, structure, schedule, lr, seed, level)
               WHERE r.trial_reset = 'rewind' AND c.trial_reset = 'reinit' AND r.level > 0 GROUP BY ALL"""
    profile = "\n".join(str(r[1]) for r in con.execute("EXPLAIN ANALYZE " + query).fetchall())
    rows = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) rows", profile)]
    assert rows and max(rows) <= levels, profile
    result = con.execute(query + " ORDER BY ALL").fetchall()
    assert [r[:3] for r in result] == [("unstructured", 0.1, 1), ("unstructured", 0.1, 2)]
    assert all(abs(r[3]) < 1e-12 for r in result)  # acc() does not depend on the reset
