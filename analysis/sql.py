"""User SQL over the store (``lth sql``), read-only.

Two layers: the connection from ``analysis.views.connect`` has DuckDB's file access switched
off and its configuration locked (so no statement can touch a file, change a setting or load
an extension), and ``run_sql`` accepts only query statements (SELECT / WITH / FROM / VALUES /
DESCRIBE / SHOW / SUMMARIZE, and EXPLAIN of those) as classified by DuckDB's own parser, so
even the in-memory catalog (the views) cannot be changed.
"""

from __future__ import annotations

import re

import duckdb
import pandas as pd

from analysis.views import describe_views

FORMATS = ("table", "csv", "json", "markdown")
_EXPLAIN = re.compile(r"^\s*explain\s+(analy[sz]e\s+)?", re.IGNORECASE)


class SqlError(ValueError):
    """A refused or failed query; the message lists the views and their columns."""


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise ``SqlError`` unless ``query`` is exactly one read-only statement."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise SqlError(f"{e}\n\nAvailable views:\n{describe_views(con)}") from None
    if len(statements) != 1:
        raise SqlError(f"expected exactly one SQL statement, got {len(statements)}")
    stmt = statements[0]
    kind = stmt.type
    if kind == duckdb.StatementType.EXPLAIN:
        inner = con.extract_statements(_EXPLAIN.sub("", stmt.query, count=1))
        kind = inner[0].type if len(inner) == 1 else kind
    if kind != duckdb.StatementType.SELECT:
        raise SqlError(
            f"refused: {kind.name} statements are not allowed; the store is read-only "
            "(only SELECT / WITH / DESCRIBE / SHOW / SUMMARIZE / EXPLAIN queries run)"
        )


def run_sql(con: duckdb.DuckDBPyConnection, query: str) -> pd.DataFrame:
    """Run one read-only query on a ``views.connect`` connection and return its rows."""
    check_read_only(con, query)
    try:
        return con.sql(query).df()
    except duckdb.Error as e:
        raise SqlError(f"{e}\n\nAvailable views:\n{describe_views(con)}") from None


def format_result(df: pd.DataFrame, fmt: str) -> str:
    """Render a query result as ``table`` (aligned text), ``csv``, ``json`` (records) or ``markdown``."""
    from analysis.tables import markdown_table

    if fmt == "table":
        return df.to_string(index=False) if len(df.columns) else ""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", date_format="iso", indent=1)
    if fmt == "markdown":
        return markdown_table(df)
    raise SqlError(f"unknown format {fmt!r}: expected one of {FORMATS}")
