"""The result store: Parquet tables, JSON/text markers and tensor artifacts under one root.

The root is a local directory (made absolute) or any URI ``pyarrow.fs.FileSystem.from_uri``
understands (``s3://bucket/prefix``, ``gs://...``, ``file:///...``). Layout (docs/DESIGN.md)::

    <root>/<table>/campaign=<name>/<key>.parquet     tables trials | metrics | levels | masks
    <root>/_campaigns/<name>/...                      spec, plan
    <root>/_units/campaign=<name>/<unit>.json         done / failed markers
    <root>/_artifacts/<unit>/<name>.pt                weights and masks

Guarantees the rest of the project relies on:

* **Atomic writes.** On a local filesystem every file is written as ``<dir>/.tmp-<uuid>-<name>.part``
  and renamed into place (``rename`` is atomic on POSIX), so a reader never sees half a file
  under its final name. Object stores make a single PUT visible atomically, so there the
  final key is written directly.
* **No duplicates.** A Parquet file's name is the caller's deterministic ``key``; writing the
  same key again replaces the file, so a retried unit never adds rows twice. Nothing is
  ever appended to.
* **Integrity on read.** ``scan`` returns only ``*.parquet`` files whose footer reads and whose
  ``lth_schema_version`` equals ``schema.SCHEMA_VERSION``; everything else (truncated files,
  non-Parquet files, other versions, leftover temporaries) is listed in ``StoreScan.bad``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import posixpath
import re
import urllib.parse
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator import faults, paths, schema
from trainers.records import Record

TMP_PREFIX = ".tmp-"
TMP_SUFFIX = ".part"
PARQUET_SUFFIX = paths.PARQUET
# Campaign names and file keys become path components: keep them to a portable alphabet.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=-]*$")


class StoreError(ValueError):
    """Bad input to the store (unknown table, invalid name, data not matching the schema)."""


# An s3:// store is configured by the AWS SDKs' standard environment variables, read by every
# client of the store: pyarrow's S3FileSystem (markers, staging, artifacts; Ray Tune's
# storage), delta-rs (the tables: ``tables.storage_options``) and boto-based tools. Every node
# of a cluster needs the same ones (credentials may come from an instance profile instead).
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
S3_HELP = ("an s3:// store is configured by the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
           "(or an instance profile), AWS_REGION, and AWS_ENDPOINT_URL=http(s)://HOST:PORT for an S3-compatible "
           "server such as MinIO; see the README, 'S3 stores'")


def s3_settings() -> dict[str, str]:
    """The S3 variables (``S3_VARIABLES``) set in this process's environment, checked: the one
    place the store's S3 configuration is read. Raises ``StoreError`` naming the variable."""
    env = {k: v for k in S3_VARIABLES if (v := os.environ.get(k))}
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint is not None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            # without a scheme pyarrow would speak TLS to a plain-HTTP server and fail after its retries
            raise StoreError(f"AWS_ENDPOINT_URL={endpoint!r}: expected http://HOST:PORT or https://HOST[:PORT], "
                             "the S3 API endpoint without a path (the bucket goes in the store URI)")
    specific = os.environ.get("AWS_ENDPOINT_URL_S3")
    if specific and specific != endpoint:
        # pyarrow and delta-rs do not both read it: markers and tables would land on different servers
        raise StoreError(f"AWS_ENDPOINT_URL_S3={specific!r} differs from AWS_ENDPOINT_URL={endpoint!r}: not every "
                         "client of the store reads AWS_ENDPOINT_URL_S3; set AWS_ENDPOINT_URL to the S3 endpoint")
    return env


def _describe_s3(env: dict[str, str]) -> str:
    creds = "AWS_ACCESS_KEY_ID set" if "AWS_ACCESS_KEY_ID" in env else "AWS_ACCESS_KEY_ID not set"
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "not set"
    return f"AWS_ENDPOINT_URL={env.get('AWS_ENDPOINT_URL', 'not set (AWS itself)')}, AWS_REGION={region}, {creds}"


@dataclass(frozen=True)
class BadFile:
    """A file under a table directory that is not read as data, and why."""

    path: str  # relative to the store root
    reason: str


@dataclass
class StoreScan:
    """Result of ``Store.scan``: readable current-version files and the rejected ones."""

    files: list[str] = field(default_factory=list)  # full paths inside ``Store.fs``
    bad: list[BadFile] = field(default_factory=list)

    def warn(self) -> None:
        """Emit one ``UserWarning`` naming every rejected file (callers that read data use this)."""
        if self.bad:
            listing = "; ".join(f"{b.path} ({b.reason})" for b in self.bad)
            warnings.warn(f"lth store: skipped {len(self.bad)} unreadable file(s): {listing}", stacklevel=2)


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe single path component, else raise naming ``what``."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or value.startswith(TMP_PREFIX):
        raise StoreError(
            f"invalid {what} {value!r}: expected letters, digits and _ . @ + = - "
            "(not starting with a dot or dash, no slashes)"
        )
    return value


def _table_spec(table: str) -> schema.TableSpec:
    try:
        return schema.TABLES[table]
    except KeyError:
        raise StoreError(f"unknown table {table!r}: expected one of {sorted(schema.TABLES)}") from None


def conform(table: str, data: pa.Table | Sequence[dict]) -> pa.Table:
    """Cast ``data`` to the table's schema (version-stamped) or raise ``StoreError`` naming the column.

    Missing nullable columns become nulls; missing required columns, unknown columns,
    values that do not cast safely and nulls in required columns are errors. A ``campaign``
    column is dropped (it lives in the directory name).
    """
    spec = _table_spec(table)
    target = spec.schema
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if not isinstance(data, pa.Table):
        data = _table_from_rows(table, target, data)
    names = [n for n in data.column_names if n != schema.PARTITION_COLUMN]
    unknown = sorted(set(names) - set(target.names))
    if unknown:
        raise StoreError(f"table {table!r}: unknown column(s) {unknown}; expected columns {target.names}")
    columns = []
    for f in target:
        if f.name in data.column_names:
            col = data.column(f.name)
            if not col.type.equals(f.type):
                try:
                    col = pc.cast(col, f.type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                    raise StoreError(
                        f"table {table!r}, column {f.name!r}: cannot convert {data.column(f.name).type} "
                        f"to {f.type}: {e}"
                    ) from None
        elif f.nullable:
            col = pa.nulls(data.num_rows, f.type)
        else:
            raise StoreError(f"table {table!r}: required column {f.name!r} ({f.type}) is missing")
        if not f.nullable and col.null_count:
            raise StoreError(f"table {table!r}, column {f.name!r}: {col.null_count} null value(s) in a required column")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema.with_version(target))


def _table_from_rows(table: str, target: pa.Schema, rows: Sequence[dict]) -> pa.Table:
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise StoreError(f"table {table!r}: row {i} is {type(row).__name__}, expected a dict")
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    unknown = sorted(present - set(target.names) - {schema.PARTITION_COLUMN})
    if unknown:
        raise StoreError(f"table {table!r}: unknown column(s) {unknown}; expected columns {target.names}")
    arrays, fields = [], []
    for f in target:
        if f.name not in present and rows:
            continue  # conform() reports a missing required column / fills a nullable one
        values = [r.get(f.name) for r in rows]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
            bad = next((v for v in values if v is not None and not _fits(v, f.type)), None)
            raise StoreError(
                f"table {table!r}, column {f.name!r}: expected {f.type}, got {bad!r} ({e})"
            ) from None
        fields.append(pa.field(f.name, f.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _fits(value: Any, typ: pa.DataType) -> bool:
    try:
        pa.array([value], type=typ)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return False


def records_table(records: Sequence[Record], trial_ids: Sequence[str], unit_id: str) -> dict[str, pa.Table]:
    """Rows of ``records`` for each trial id, grouped by table name (schema.RECORD_TABLE)."""
    by_type: dict[type, list[Record]] = {}
    for r in records:
        if type(r) not in schema.RECORD_TABLE:
            raise StoreError(f"record {r!r}: expected one of {[t.__name__ for t in schema.RECORD_TABLE]}")
        by_type.setdefault(type(r), []).append(r)
    out = {}
    for rtype, recs in by_type.items():
        name = schema.RECORD_TABLE[rtype]
        target = schema.TABLES[name].schema
        # Build the record columns once and repeat them per trial: a dense run shared by many
        # cells is written once per cell without re-converting its rows.
        cols = {}
        for f in dataclasses.fields(rtype):
            typ = target.field(f.name).type
            values = [getattr(r, f.name) for r in recs]
            try:
                cols[f.name] = pa.array(values, type=typ)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
                raise StoreError(f"table {name!r}, column {f.name!r}: expected {typ}: {e}") from None
        n = len(recs)
        parts = []
        for tid in trial_ids:
            arrays = {
                "trial_id": pa.array([tid] * n, pa.string()),
                "unit_id": pa.array([unit_id] * n, pa.string()),
                **cols,
            }
            parts.append(pa.table(arrays))
        out[name] = conform(name, pa.concat_tables(parts)) if parts else None
    return {k: v for k, v in out.items() if v is not None}


class Store:
    """A result store rooted at a local path or a pyarrow filesystem URI.

    All ``path`` arguments of the helper methods are relative to the root, '/'-separated.
    """

    def __init__(self, uri: str | os.PathLike):
        text = os.fspath(uri)
        s3 = text.startswith("s3://")
        env = s3_settings() if s3 else {}
        if "://" in text and urllib.parse.urlsplit(text).query:
            # pyarrow would honour ?endpoint_override=..., but the URI is also handed to delta-rs
            # (tables) and Ray Tune (storage under <store>/_ray), which would not see it
            raise StoreError(f"store {text!r}: options in the URI are not passed to every client of the store; "
                             f"give the URI without '?...': {S3_HELP}")
        try:
            if "://" in text:
                self.fs, root = pafs.FileSystem.from_uri(text)
                self.uri = text
            else:
                self.fs, root = pafs.LocalFileSystem(), os.path.abspath(text)
                self.uri = root
            self.root = root.rstrip("/") or "/"
            self.fs.create_dir(self.root, recursive=True)
        except OSError as e:  # an unreachable endpoint, a missing bucket, refused credentials...
            hint = f" [{_describe_s3(env)}; {S3_HELP}]" if s3 else ""
            raise StoreError(f"store {text}: cannot open it: {e}{hint}") from None
        # Rename-into-place is atomic only on a real filesystem; object stores publish a PUT atomically.
        self._atomic_rename = isinstance(self.fs, pafs.LocalFileSystem) or self.fs.type_name in ("local", "mock")
        self._footer_cache: dict[tuple[str, int, int | None], str | None] = {}

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # ----- paths -----------------------------------------------------------------------
    def full(self, path: str) -> str:
        """Full path inside ``self.fs`` of a root-relative path (rejects '..' escapes)."""
        parts = path.replace(os.sep, "/").split("/")
        if ".." in parts:
            raise StoreError(f"path {path!r}: '..' is not allowed (paths are relative to the store root)")
        norm = posixpath.normpath("/" + "/".join(parts)).lstrip("/")
        return posixpath.join(self.root, norm) if norm and norm != "." else self.root

    def relative(self, full: str) -> str:
        return posixpath.relpath(full, self.root)

    @staticmethod
    def table_path(table: str, campaign: str, key: str) -> str:
        """Root-relative path of one Parquet file."""
        return paths.table_file(table, campaign, key)

    # ----- raw atomic IO ---------------------------------------------------------------
    def put_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` atomically (temp name + rename locally, one PUT on object stores)."""
        final = self.full(path)
        parent = posixpath.dirname(final)
        if not self._atomic_rename:
            # An object store has no directories: a PUT of the key is all. (pyarrow's create_dir
            # there costs a request per missing path level, for markers nothing needs: every
            # S3 write paid several round trips more than the PUT.)
            with self.fs.open_output_stream(final) as out:
                out.write(data)
            return
        self.fs.create_dir(parent, recursive=True)
        # The temporary name never ends in .parquet: a glob over `*.parquet` (DuckDB, pyarrow)
        # must not pick up half a file left by a killed writer.
        tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(final)}{TMP_SUFFIX}")
        try:
            with self.fs.open_output_stream(tmp) as out:
                if faults.kill_in_write(path):  # test hook (orchestrator/faults.py): die mid-write
                    out.write(data[: len(data) // 2])
                    out.flush()
                    faults.die()
                out.write(data)
            self.fs.move(tmp, final)
        except BaseException:
            self._delete_quietly(tmp)
            raise

    def get_bytes(self, path: str) -> bytes | None:
        """Contents of ``path``, or None if it does not exist."""
        try:
            with self.fs.open_input_stream(self.full(path)) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:  # some filesystems report a missing key as a generic OSError
            if not self.exists(path):
                return None
            raise e

    def _delete_quietly(self, full: str) -> None:
        try:
            self.fs.delete_file(full)
        except OSError:
            pass

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(self.full(path)).type != pafs.FileType.NotFound

    def delete(self, path: str) -> None:
        """Remove one file (no error if it is already gone)."""
        self._delete_quietly(self.full(path))

    def delete_dir(self, path: str) -> None:
        """Remove a directory and everything under it (no error if it is already gone)."""
        try:
            self.fs.delete_dir(self.full(path))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        """Root-relative paths of all files under the directory ``prefix`` (recursive, sorted)."""
        base = self.full(prefix)
        info = self.fs.get_file_info(base)
        if info.type == pafs.FileType.File:
            return [self.relative(base)]
        if info.type != pafs.FileType.Directory:
            return []
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        return sorted(self.relative(i.path) for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    def put_text(self, path: str, text: str) -> None:
        self.put_bytes(path, text.encode("utf-8"))

    def get_text(self, path: str) -> str | None:
        data = self.get_bytes(path)
        return None if data is None else data.decode("utf-8")

    def put_json(self, path: str, obj: Any) -> None:
        """Write ``obj`` as JSON (sorted keys, so equal objects give equal files)."""
        self.put_text(path, json.dumps(obj, sort_keys=True, indent=1, default=str))

    def get_json(self, path: str) -> Any | None:
        """Parsed JSON at ``path``, or None if the file does not exist."""
        text = self.get_text(path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.full(path)}: not valid JSON ({e})") from None

    def put_tensors(self, path: str, tensors: dict) -> None:
        """Save a dict of tensors (nested dicts / lists / numbers allowed) with ``torch.save``."""
        import torch  # the store is usable (e.g. by analysis) without importing torch

        buf = io.BytesIO()
        torch.save(tensors, buf)
        self.put_bytes(path, buf.getvalue())

    def get_tensors(self, path: str) -> dict:
        """Load what ``put_tensors`` saved (``weights_only=True``: no code runs on load), on CPU."""
        import torch

        data = self.get_bytes(path)
        if data is None:
            raise FileNotFoundError(f"no tensor file at {self.full(path)}")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    # ----- tables ----------------------------------------------------------------------
    def write_table(self, table: str, campaign: str, key: str, data: pa.Table | Sequence[dict]) -> str:
        """Validate ``data`` against ``schema.TABLES[table]`` and write it as one Parquet file.

        Returns the root-relative path. The same (table, campaign, key) replaces the file.
        Raises ``StoreError`` naming the column when the data does not match the schema.
        """
        check_name(campaign, "campaign name")
        check_name(key, "file key")
        conformed = conform(table, data)
        from orchestrator import tables  # (imports this module)

        if tables.is_delta(self, table):
            raise StoreError(f"table {table!r} in {self.uri} is a Delta table: rows reach it through the "
                             "driver's commits (stage_records + orchestrator.committer), not as single files")
        path = self.table_path(table, campaign, key)
        self._put_parquet(path, conformed)
        return path

    def _put_parquet(self, path: str, conformed: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(conformed, sink, compression="zstd")
        self.put_bytes(path, sink.getvalue().to_pybytes())

    def stage_records(
        self,
        campaign: str,
        key: str,
        unit_id: str,
        trial_ids: Sequence[str],
        records: Sequence[Record],
    ) -> list[str]:
        """Write ``records`` (once per trial they serve) as staging files, one per table, all
        named ``key`` (``paths.staging_file``); the driver commits them to the tables
        (``orchestrator.committer``). The same key again replaces the staged file. Returns the paths."""
        check_name(campaign, "campaign name")
        check_name(unit_id, "unit id")
        check_name(key, "file key")
        out = []
        for name, table in _served_tables(records, trial_ids, unit_id).items():
            path = paths.staging_file(campaign, unit_id, name, key)
            self._put_parquet(path, table)
            out.append(path)
        return out

    def stage_table(self, campaign: str, unit_id: str, table: str, key: str, data: pa.Table) -> str:
        """Stage ready rows of ``table`` for a unit (rows another run computed, re-labelled by
        ``orchestrator/reuse.py``) under ``key``, as ``stage_records`` stages records."""
        check_name(campaign, "campaign name")
        check_name(unit_id, "unit id")
        check_name(key, "file key")
        path = paths.staging_file(campaign, unit_id, table, key)
        self._put_parquet(path, conform(table, data))
        return path

    def write_records(
        self,
        campaign: str,
        key: str,
        unit_id: str,
        trial_ids: Sequence[str],
        records: Sequence[Record],
    ) -> None:
        """Write ``records`` once per trial they serve, one file per table, all named ``key``."""
        for name, table in _served_tables(records, trial_ids, unit_id).items():
            self.write_table(name, campaign, key, table)

    def scan(self, table: str, campaign: str | None = None) -> StoreScan:
        """Valid Parquet files of ``table`` (optionally one campaign) and the rejected files."""
        _table_spec(table)
        prefix = table if campaign is None else f"{table}/{schema.PARTITION_COLUMN}={check_name(campaign, 'campaign name')}"
        base = self.full(prefix)
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        result = StoreScan()
        infos = sorted((i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File), key=lambda i: i.path)
        for info in infos:
            reason = self._reject_reason(table, info)
            if reason is None:
                result.files.append(info.path)
            else:
                result.bad.append(BadFile(self.relative(info.path), reason))
        return result

    def _reject_reason(self, table: str, info: pafs.FileInfo) -> str | None:
        name = posixpath.basename(info.path)
        rel = self.relative(info.path).split("/")
        if name.startswith(TMP_PREFIX):
            return "leftover temporary file of an interrupted write"
        if not name.endswith(PARQUET_SUFFIX):
            return "not a .parquet file"
        if len(rel) != 3 or not rel[1].startswith(f"{schema.PARTITION_COLUMN}="):
            return f"not under {table}/{schema.PARTITION_COLUMN}=<name>/"
        mtime = info.mtime_ns if info.mtime_ns is not None else None
        cache_key = (info.path, info.size, mtime)
        if cache_key not in self._footer_cache:
            self._footer_cache[cache_key] = self._check_footer(table, info.path)
        return self._footer_cache[cache_key]

    def _check_footer(self, table: str, full: str) -> str | None:
        try:
            with self.fs.open_input_file(full) as f:
                meta = pq.ParquetFile(f).schema_arrow
        except Exception as e:  # ArrowInvalid, OSError...: any unreadable footer is a bad file
            return f"unreadable Parquet footer: {e}"
        version = schema.file_version(meta.metadata)
        if version != schema.SCHEMA_VERSION:
            return f"schema version {version} (expected {schema.SCHEMA_VERSION})"
        expected = schema.TABLES[table].schema
        if meta.names != expected.names:
            return f"columns {meta.names} differ from the schema's {expected.names}"
        return None

    def read_table(self, table: str, campaign: str | None = None, *, warn: bool = True) -> pa.Table:
        """All rows of ``table`` with a ``campaign`` column: the current version of a Delta table,
        or (a store in the per-file layout) every valid file, bad files skipped with a warning."""
        from orchestrator import tables

        if tables.is_delta(self, table):
            return tables.dataset(self, table, campaign).to_table()
        found = self.scan(table, campaign)
        if warn:
            found.warn()
        target = schema.TABLES[table].schema
        parts = []
        for full in found.files:
            with self.fs.open_input_file(full) as f:
                t = pq.read_table(f, schema=target)
            camp = posixpath.basename(posixpath.dirname(full)).split("=", 1)[1]
            parts.append(t.append_column(schema.PARTITION_COLUMN, pa.array([camp] * t.num_rows, pa.string())))
        if not parts:
            empty = target.append(pa.field(schema.PARTITION_COLUMN, pa.string()))
            return empty.empty_table()
        return pa.concat_tables(parts)

    def campaigns(self) -> list[str]:
        """Names of campaigns with any table partition or a ``_campaigns/<name>`` entry."""
        names: set[str] = set()
        for table in schema.TABLES:
            sel = pafs.FileSelector(self.full(table), recursive=False, allow_not_found=True)
            for info in self.fs.get_file_info(sel):
                base = posixpath.basename(info.path)
                if info.type == pafs.FileType.Directory and base.startswith(f"{schema.PARTITION_COLUMN}="):
                    # Delta tables percent-encode partition values (names never contain '%')
                    names.add(urllib.parse.unquote(base.split("=", 1)[1]))
        sel = pafs.FileSelector(self.full(paths.CAMPAIGNS), recursive=False, allow_not_found=True)
        for info in self.fs.get_file_info(sel):
            if info.type == pafs.FileType.Directory:
                names.add(posixpath.basename(info.path))
        return sorted(names)


def _served_tables(records: Sequence[Record], trial_ids: Sequence[str], unit_id: str) -> dict[str, pa.Table]:
    """``records_table`` of records written once per trial they serve (at least one trial id)."""
    if isinstance(trial_ids, str):
        raise StoreError("trial_ids: expected a sequence of trial ids, got a single string")
    if not trial_ids:
        raise StoreError("trial_ids: expected at least one trial id")
    return records_table(records, list(trial_ids), unit_id)
