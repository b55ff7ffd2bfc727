"""What ``lth status`` reports, read from the store alone (no Ray).

A unit's marker says ``running`` from the moment a trial starts it until its final write, so
a driver killed mid-campaign leaves ``running`` markers behind. ``lth run`` therefore keeps a
driver record (``paths.driver``: pid, host, run id, process start time; then
``finished_at``): a ``running`` marker is shown as *running* only while that driver process
is alive, as *interrupted* once it is gone or finished, and as *running or interrupted* when
it cannot be checked (no record, or a driver on another host).

Store integrity: files that readers skip are listed with the reason -- a Delta table of another
schema version, bad Parquet files of a store in the older per-file layout (see ``Store.scan``),
leftover temporary files anywhere in the store (markers, specs, artifacts, the driver's ledger,
staging), and markers that are not valid JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field

from orchestrator import lease, paths, schema, tables
from orchestrator.lease import pid_alive, proc_start
from orchestrator.ledger import UnitMarker
from orchestrator.store import TMP_PREFIX, BadFile, Store, StoreError

UNIT_STATES = ("done", "running", "running or interrupted", "interrupted", "failed", "diverged", "pending")
CELL_STATES = ("done", "failed", "diverged", "pending")
MAX_LISTED = 10  # failed / diverged / interrupted entries shown per campaign (status stays short)


def driver_started(store: Store, campaign: str) -> dict:
    """Record this process as the campaign's driver; returns the record for ``driver_finished``."""
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "run_id": uuid.uuid4().hex[:12],
        "proc_start": proc_start(os.getpid()),
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    store.put_json(paths.driver(campaign), record)
    return record


def driver_finished(store: Store, campaign: str, record: dict, outcome: str) -> None:
    """Mark the driver record finished (only if it is still ours: another driver may have
    taken over the campaign meanwhile)."""
    current = _get_json(store, paths.driver(campaign))
    if current and current.get("run_id") != record["run_id"]:
        return
    store.put_json(paths.driver(campaign), {**record, "finished_at": dt.datetime.now(dt.UTC).isoformat(),
                                           "outcome": outcome})


def driver_alive(record: dict | None) -> bool | None:
    """True / False when it can be told from here, None when it cannot (no record, other host)."""
    if not record:
        return None
    if record.get("finished_at"):
        return False
    if record.get("host") != socket.gethostname():
        return None
    return pid_alive(int(record.get("pid", -1)), record.get("proc_start"))


def plan_index(plan_json: dict) -> dict:
    """What ``lth status`` needs of a stored plan: its unit ids and cell (trial) ids, in plan
    order. plan.json of a 10,000-cell campaign is ~16 MB (a RunSetup per unit) and takes
    ~0.3 s to parse; this index is ~1/40 of that. ``lth run`` writes it next to plan.json."""
    return {"units": list(plan_json["units"]), "cells": list(plan_json["cells"])}


def read_plan(store: Store, campaign: str) -> dict | None:
    """The campaign's plan index, else its full plan.json (stores registered before the index
    existed, or an unreadable index), else None (campaign not registered)."""
    index = _get_json(store, paths.plan_index(campaign))
    if isinstance(index, dict) and isinstance(index.get("units"), list) and isinstance(index.get("cells"), list):
        return index
    return store.get_json(paths.plan_json(campaign))


def _get_json(store: Store, path: str) -> dict | None:
    try:
        return store.get_json(path)
    except StoreError:
        return None


@dataclass
class CampaignStatus:
    name: str
    cells: Counter = field(default_factory=Counter)
    units: Counter = field(default_factory=Counter)
    driver: str = "no driver record"
    lease: str | None = None  # who holds the campaign's lease (orchestrator/lease.py), if anyone
    trials: list[tuple[str, str, str | None]] = field(default_factory=list)  # failed/diverged: (id, status, reason)
    interrupted: list[tuple[str, str | None]] = field(default_factory=list)  # (unit id, last reason)
    bad: list[BadFile] = field(default_factory=list)  # unreadable markers

    def lines(self) -> list[str]:
        def fmt(counts: Counter, keys: tuple[str, ...]) -> str:
            return ", ".join(f"{k} {counts.get(k, 0)}" for k in keys if k in CELL_STATES + ("running",) or counts.get(k))

        out = [f"{self.name}: cells {fmt(self.cells, CELL_STATES)} | units {fmt(self.units, UNIT_STATES)}",
               f"  driver: {self.driver}"]
        if self.lease:
            out.append(f"  lease: {self.lease}")
        for i, (trial_id, status, reason) in enumerate(self.trials):
            if i == MAX_LISTED:
                out.append(f"  ... and {len(self.trials) - MAX_LISTED} more failed/diverged cells")
                break
            out.append(f"  {status} cell {trial_id}: {reason or 'no reason recorded'}")
        for i, (unit_id, reason) in enumerate(self.interrupted):
            if i == MAX_LISTED:
                out.append(f"  ... and {len(self.interrupted) - MAX_LISTED} more interrupted units")
                break
            out.append(f"  interrupted unit {unit_id}" + (f" (last error: {reason})" if reason else "")
                       + "; `lth run` again resumes it")
        return out


def campaign_status(store: Store, name: str, plan: dict) -> CampaignStatus:
    """Counts of cells and units of one campaign (``plan``: its stored plan.json or plan index,
    see ``read_plan``; only its ``units`` and ``cells`` keys are used)."""
    st = CampaignStatus(name)
    record = _get_json(store, paths.driver(name))
    alive = driver_alive(record)
    if record:
        where = f"pid {record.get('pid')} on {record.get('host')}, run {record.get('run_id')}"
        if record.get("finished_at"):
            st.driver = f"finished {record['finished_at'][:19]} ({record.get('outcome')}; {where})"
        elif alive:
            st.driver = f"running ({where})"
        elif alive is None:
            st.driver = f"running or interrupted ({where}: not checkable from here)"
        else:
            st.driver = f"interrupted ({where} is gone)"
    holder = lease.read(store, name)
    if holder is not None:
        state = "held" if holder.alive(lease.stale_after()) else "left by a dead driver (the next `lth run` takes it)"
        st.lease = f"{state}: {holder.describe()}"
    running_as = {True: "running", False: "interrupted", None: "running or interrupted"}[alive]
    for uid, m in _markers(store, name, plan["units"], st.bad):
        status = m.status or "pending"
        if status == "running":
            status = running_as
            if status == "interrupted":
                st.interrupted.append((uid, m.reason))
        st.units[status] += 1
    for trial_id, status, reason in _trial_rows(store, name):
        st.cells[status] += 1
        if status != "done":
            st.trials.append((trial_id, status, reason))
    st.cells["pending"] = len(plan["cells"]) - sum(st.cells.values())
    return st


OBJECT_STORE_READERS = 32  # concurrent marker GETs on an object store (each is one round trip)


def _markers(store: Store, name: str, unit_ids, bad: list[BadFile]):
    """Yield (unit id, ``UnitMarker``; an empty one when absent) in plan order; unreadable markers go to ``bad``.

    One directory listing instead of a failed open per missing marker. On a local store plain
    ``open`` (about half the cost of a pyarrow stream per small file); on an object store the
    markers are fetched ``OBJECT_STORE_READERS`` at a time: one GET each, and a 10,000-trial
    campaign has ~11,000 markers (90 s for a 10-campaign store read one after another on a
    loopback S3 server, benchmarks/bench_store_scale.py). ``lth status`` must stay interactive."""
    import pyarrow.fs as pafs

    base = store.full(paths.units_dir(name))
    present = {posixpath.basename(i.path) for i in store.fs.get_file_info(
        pafs.FileSelector(base, allow_not_found=True)) if i.type == pafs.FileType.File}
    local = isinstance(store.fs, pafs.LocalFileSystem)

    def read(uid: str) -> tuple[dict | None, BadFile | None]:
        path = paths.marker(name, uid)
        try:
            if local:
                with open(f"{base}/{uid}.json", "rb") as f:
                    data = f.read()
                try:
                    return json.loads(data), None
                except ValueError:
                    return store.get_json(path), None  # raises StoreError with the store's message
            return store.get_json(path), None
        except FileNotFoundError:  # removed since the listing
            return None, None
        except StoreError as e:
            return None, BadFile(path, f"unreadable unit marker ({e})")

    todo = [uid for uid in unit_ids if f"{uid}.json" in present]
    if local:
        found = dict(zip(todo, map(read, todo), strict=True))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(OBJECT_STORE_READERS) as pool:
            found = dict(zip(todo, pool.map(read, todo), strict=True))
    for uid in unit_ids:
        m, problem = found.get(uid, (None, None))
        if problem is not None:
            bad.append(problem)
        yield uid, UnitMarker.from_json(m, uid) if isinstance(m, dict) else UnitMarker(uid)


def _trial_rows(store: Store, name: str) -> list[tuple[str, str, str | None]]:
    import pyarrow.parquet as pq

    rows = []
    for f in tables.scan(store, "trials", name).files:
        with store.fs.open_input_file(f) as fh:
            # ParquetFile.read, not pq.read_table: the latter imports pyarrow.dataset (~0.3 s)
            # and builds a dataset per file, several times the cost of the read itself here
            t = pq.ParquetFile(fh).read(columns=["trial_id", "status", "reason"])
        rows += zip(*(t.column(c).to_pylist() for c in ("trial_id", "status", "reason")))
    return sorted(rows, key=lambda r: (r[1], r[0]))


def bad_files(store: Store, campaign: str | None = None) -> list[BadFile]:
    """Files readers skip: bad table files (``Store.scan``) and leftover temporary files of the
    non-table parts of the store (markers, campaign specs, artifacts)."""
    out: list[BadFile] = []
    for table in schema.TABLES:
        out += tables.scan(store, table, campaign).bad
    prefixes = [paths.UNITS, paths.CAMPAIGNS, paths.ARTIFACTS, paths.LEDGER, paths.STAGING] if campaign is None else [
        paths.units_dir(campaign), paths.campaign_dir(campaign), paths.ARTIFACTS, paths.ledger_dir(campaign),
        paths.staging_dir(campaign)]
    for prefix in prefixes:
        for path in _temporaries(store, prefix):
            out.append(BadFile(path, "leftover temporary file of an interrupted write"))
    return out


def _temporaries(store: Store, prefix: str) -> list[str]:
    """Root-relative paths of leftover temporary files under ``prefix`` (sorted). Like
    ``Store.list`` filtered by name, but only the matches are made relative and sorted:
    the artifacts hold several files per unit (tens of thousands on a large store)."""
    import pyarrow.fs as pafs

    sel = pafs.FileSelector(store.full(prefix), recursive=True, allow_not_found=True)
    return sorted(store.relative(i.path) for i in store.fs.get_file_info(sel)
                  if i.type == pafs.FileType.File and posixpath.basename(i.path).startswith(TMP_PREFIX))
