"""The four result tables as Delta Lake tables (delta-rs, the ``deltalake`` package).

Each table (``paths.table_dir``) is one Delta table partitioned by ``campaign``: Parquet data
files under ``campaign=<name>/`` and a transaction log under ``_delta_log/``. A reader sees
one committed version (snapshot) of the table: never half of a commit, never a file that a
compaction replaced and also the file that replaced it. Only the driver writes tables
(``orchestrator/committer.py``); workers write staging files.

* ``commit``: one atomic Delta commit of a batch of rows, tagged with an application
  transaction ``(app_id, version)``. Delta records the highest version per app id in the
  table, so a batch re-committed after a crash (the log entry was written but the driver
  died before noting it) is recognised and skipped: exactly once.
* ``compact``: ``optimize`` (rewrite a partition's small files into few large ones, one
  commit) and ``vacuum`` (delete files no longer in the current version). Until the vacuum a
  plain ``*.parquet`` glob over a table would see both the old and the compacted files;
  after it, the table directory holds exactly the current files, so plain clients
  (DuckDB's ``read_parquet``, pandas, polars) read a quiescent store correctly.
* The schema version is in the table's description (``lth-sweep <table>, schema version N``);
  readers refuse a table of another version, as they skip per-file stores' files.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from orchestrator import paths, schema
from orchestrator.store import BadFile, Store, StoreError, StoreScan, s3_settings

if TYPE_CHECKING:  # pyarrow.dataset costs ~0.3 s to import: `lth status` does without it
    import pyarrow.dataset as ds

DELTA_LOG = "_delta_log"
_DESCRIPTION = "lth-sweep {table}, schema version {version}"
_VERSION_RE = re.compile(r"schema version (\d+)")
TARGET_FILE_SIZE = 128 * 1024 * 1024  # bytes: optimize's output file size
# Files may be removed (vacuum) as soon as they leave the current version: only this driver
# commits, and a reader that lost a file to a vacuum re-reads the new version (analysis.views).
VACUUM_RETENTION_HOURS = 0
# Data files in no log entry (a commit killed before its log entry) are deleted once this old:
# a commit in flight writes its log entry seconds after its data files, never an hour.
ORPHAN_RETENTION_HOURS = 1


def view_schema(table: str) -> pa.Schema:
    """The table's columns as stored in Delta: the store schema plus the ``campaign`` partition."""
    return schema.TABLES[table].schema.append(pa.field(schema.PARTITION_COLUMN, pa.string(), nullable=False))


def table_uri(store: Store, table: str) -> str:
    """URI of the table for delta-rs (a local path or ``s3://bucket/prefix/<table>``)."""
    root = posixpath.join(store.root, paths.table_dir(table))
    if isinstance(store.fs, _local_types()):
        return root
    return f"{store.fs.type_name}://{root}"


def _local_types() -> tuple[type, ...]:
    import pyarrow.fs as pafs

    return (pafs.LocalFileSystem,)


def storage_options(store: Store) -> dict[str, str] | None:
    """delta-rs object-store options for an ``s3://`` store, from the same environment
    variables pyarrow reads (``store.s3_settings``: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_REGION``, ``AWS_ENDPOINT_URL``). A plain-HTTP endpoint (a local S3 server) is allowed. Commits
    are safe without a locking provider because one driver holds the campaign's lease
    (``orchestrator/lease.py``) and is the only committer."""
    if isinstance(store.fs, _local_types()):
        return None
    options = s3_settings()
    region = options.pop("AWS_DEFAULT_REGION", None)
    # Without a region variable pyarrow looked the bucket's region up (on AWS itself) and delta-rs
    # would not: it would sign for us-east-1 and a bucket elsewhere answers with a redirect.
    options.setdefault("AWS_REGION", region or getattr(store.fs, "region", None) or "us-east-1")
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    options["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"  # single committer: see the docstring
    return options


def is_delta(store: Store, table: str) -> bool:
    return store.exists(f"{paths.table_dir(table)}/{DELTA_LOG}")


def open_table(store: Store, table: str):
    """The table's ``DeltaTable`` (latest version), or None when the table is not a Delta table."""
    from deltalake import DeltaTable

    if not is_delta(store, table):
        return None
    return DeltaTable(table_uri(store, table), storage_options=storage_options(store))


def versions(store: Store) -> dict[str, int | None]:
    """The current Delta version of every table (None: not a Delta table). A reader whose query
    failed compares these with the versions it started from: if they moved, a compaction
    vacuumed files of its snapshot and it re-reads (``analysis.views.read_consistent``)."""
    out = {}
    for table in schema.TABLES:
        dt = open_table(store, table)
        out[table] = None if dt is None else dt.version()
    return out


def version_problem(table: str, dt) -> str | None:
    """Why readers must not read this Delta table (another schema version / other columns), or None."""
    match = _VERSION_RE.search(dt.metadata().description or "")
    version = int(match.group(1)) if match else None
    if version != schema.SCHEMA_VERSION:
        return f"Delta table of schema version {version} (expected {schema.SCHEMA_VERSION})"
    names = [f.name for f in dt.schema().fields]
    if names != view_schema(table).names:
        return f"columns {names} differ from the schema's {view_schema(table).names}"
    return None


def _writer_properties():
    from deltalake import WriterProperties

    return WriterProperties(compression="ZSTD")


@dataclass(frozen=True)
class CommitResult:
    table: str
    rows: int
    committed: bool  # False: this (app_id, version) was already in the table


def commit(store: Store, table: str, data: pa.Table, *, app_id: str, version: int,
           replace: str | None = None) -> CommitResult:
    """Commit ``data`` (conformed rows with a ``campaign`` column) to ``table`` atomically.

    ``replace``: a SQL predicate; rows matching it are removed in the same commit (a unit or
    cell committed before and now committed again). Skipped (``committed`` False) when the
    table already holds ``(app_id, version)`` or a later version of that app id."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    dt = open_table(store, table)
    if dt is not None:
        problem = version_problem(table, dt)
        if problem:  # (lth run refuses such a store before it starts: check_writable)
            raise StoreError(f"table {table!r} in {store.uri}: cannot commit to a {problem}")
        done = dt.transaction_version(app_id)
        if done is not None and done >= version:
            return CommitResult(table, data.num_rows, False)
    data = data.select(view_schema(table).names).cast(view_schema(table))
    props = CommitProperties(app_transactions=[Transaction(app_id, version)])
    common = dict(partition_by=[schema.PARTITION_COLUMN], writer_properties=_writer_properties(),
                  commit_properties=props, storage_options=storage_options(store))
    if dt is None:
        write_deltalake(table_uri(store, table), data, mode="append", name=table,
                        description=_DESCRIPTION.format(table=table, version=schema.SCHEMA_VERSION), **common)
    elif replace:
        write_deltalake(dt, data, mode="overwrite", predicate=replace, **common)
    else:
        write_deltalake(dt, data, mode="append", **common)
    return CommitResult(table, data.num_rows, True)


def live_files(store: Store, table: str, campaign: str | None = None, dt=None) -> list[str]:
    """Root-relative paths of the table's data files in its current version (optionally one
    campaign's partition). Paths as on disk: delta-rs percent-encodes partition values in
    directory names (``campaign=a%40b`` for ``a@b``)."""
    dt = dt if dt is not None else open_table(store, table)
    if dt is None:
        return []
    prefix = table_uri(store, table).rstrip("/") + "/"
    out = []
    for uri in dt.file_uris():
        if not uri.startswith(prefix):  # never expected: delta-rs names files under the table
            raise StoreError(f"table {table!r}: data file {uri} is outside the table {prefix}")
        out.append(f"{paths.table_dir(table)}/{uri[len(prefix):]}")
    if campaign is not None:
        part = f"{paths.table_dir(table)}/{paths.partition(quote_partition(campaign))}/"
        out = [p for p in out if p.startswith(part)]
    return sorted(out)


def quote_partition(value: str) -> str:
    """A partition value as delta-rs spells it in a directory name (percent-encoded)."""
    return urllib.parse.quote(value, safe="")


def scan(store: Store, table: str, campaign: str | None = None) -> StoreScan:
    """The files readers read for ``table``: a Delta table's current version (or none, with the
    reason, when it is of another schema version), else ``Store.scan`` of a per-file store."""
    dt = open_table(store, table)
    if dt is None:
        return store.scan(table, campaign)
    problem = version_problem(table, dt)
    if problem:
        return StoreScan(bad=[BadFile(f"{paths.table_dir(table)}/{DELTA_LOG}", problem)])
    return StoreScan(files=[store.full(p) for p in live_files(store, table, campaign, dt)])


def check_writable(store: Store) -> None:
    """Refuse a store whose tables are in the per-file layout (written by lth-sweep before the
    Delta tables: a Delta table created over them would hide their rows) or Delta tables of
    another schema version. Raised by ``lth run``
    before anything runs; ``lth sql`` / ``status`` / ``report`` still read such a store."""
    for table in schema.TABLES:
        dt = open_table(store, table)
        if dt is not None:
            problem = version_problem(table, dt)
            if problem:
                raise StoreError(f"store {store.uri}: table {table!r} is a {problem}; this lth-sweep writes "
                                 f"schema version {schema.SCHEMA_VERSION}. Run into a new store (--store)")
            continue
        files = [p for p in store.list(paths.table_dir(table)) if p.endswith(paths.PARQUET)]
        if files:
            raise StoreError(
                f"store {store.uri}: table {table!r} is in the per-file layout ({len(files)} Parquet file(s) such as "
                f"{files[0]}, no {paths.table_dir(table)}/{DELTA_LOG}/); lth run now writes Delta tables. "
                "Run into a new store (--store); this one stays readable by lth sql, status and report")


def create_tables(store: Store) -> list[str]:
    """Create every result table that has no transaction log yet, empty (schema, partitioning
    and schema-version description, log version 0), and return their names. Called by
    ``lth run`` after ``check_writable`` and before any commit: a first commit that a SIGKILL
    stops after delta-rs wrote its data files but before its log entry would otherwise leave
    Parquet files without a ``_delta_log``, which the next run could not tell from a per-file
    store. With the log in place, such files are unreferenced leftovers that ``vacuum``
    deletes. Two drivers creating a table at once: one creates it, the other finds it."""
    from deltalake import DeltaTable

    created = []
    for table in schema.TABLES:
        if is_delta(store, table):
            continue
        try:
            DeltaTable.create(table_uri(store, table), view_schema(table), mode="ignore",
                              partition_by=[schema.PARTITION_COLUMN], name=table,
                              description=_DESCRIPTION.format(table=table, version=schema.SCHEMA_VERSION),
                              storage_options=storage_options(store))
        except Exception:
            if not is_delta(store, table):  # lost a race to another driver: the table exists now
                raise
            continue
        created.append(table)
    return created


def compact(store: Store, table: str, campaign: str | None = None) -> dict:
    """``optimize`` then ``vacuum``: the small files of ``table`` (one campaign's partition, or
    all) rewritten into few large files, then the files no current version references deleted.
    Returns {files_before, files_after, removed}. (Log checkpoints are delta-rs's default:
    one every 100 commits, as ``_delta_log/<n>.checkpoint.parquet``; a plain glob over a
    table therefore names the partitions: ``<table>/campaign=*/*.parquet``.)"""
    from orchestrator import faults

    if not is_delta(store, table):
        return {"files_before": 0, "files_after": 0, "removed": 0}
    before = len(live_files(store, table, campaign))
    optimize(store, table, campaign)
    faults.kill_point(f"compact:optimized:{table}")  # test hook: compacted, not yet vacuumed
    removed = vacuum(store, table)
    faults.kill_point(f"compact:vacuumed:{table}")
    return {"files_before": before, "files_after": len(live_files(store, table, campaign)), "removed": removed}


def optimize(store: Store, table: str, campaign: str | None = None) -> None:
    """Rewrite the table's (or one partition's) small files into few large ones: one commit
    that removes them and adds the new files; readers see the same rows before and after."""
    partitions = [(schema.PARTITION_COLUMN, "=", campaign)] if campaign else None
    open_table(store, table).optimize.compact(partition_filters=partitions, target_size=TARGET_FILE_SIZE,
                                              writer_properties=_writer_properties())


def vacuum(store: Store, table: str) -> int:
    """Delete the data files that are not in the current version; returns how many. A reader
    still on an older snapshot re-reads (``analysis.views.read_consistent``). Also deletes data
    files that no log entry names and that are older than ``ORPHAN_RETENTION_HOURS``: what a
    commit killed between writing its data files and its log entry leaves (a younger one may
    be another driver's commit in flight, so it stays until a later compaction)."""
    dt = open_table(store, table)
    removed = dt.vacuum(retention_hours=VACUUM_RETENTION_HOURS, dry_run=False, enforce_retention_duration=False)
    orphans = dt.vacuum(retention_hours=ORPHAN_RETENTION_HOURS, dry_run=False, enforce_retention_duration=False,
                        full=True)
    return len(removed) + len(orphans)


def dataset(store: Store, table: str, campaign: str | None = None) -> ds.Dataset:
    """A pyarrow dataset over the current version of ``table`` (optionally one campaign's
    partition), read through the store's own pyarrow filesystem (local or S3 alike)."""
    found = scan(store, table, campaign)
    if found.bad:
        raise StoreError(f"table {table!r} in {store.uri}: {found.bad[0].reason}")
    return files_dataset(store, table, found.files)


def files_dataset(store: Store, table: str, files: list[str]) -> ds.Dataset:
    """A pyarrow dataset over ``files`` (full paths in ``store.fs``) of ``table``, with the
    ``campaign`` column from the hive directory names (percent-decoded)."""
    import pyarrow.dataset as ds

    partitioning = ds.HivePartitioning(pa.schema([(schema.PARTITION_COLUMN, pa.string())]), segment_encoding="uri")
    return ds.dataset(files, schema=view_schema(table), format="parquet", filesystem=store.fs,
                      partitioning=partitioning, partition_base_dir=posixpath.join(store.root, paths.table_dir(table)))
