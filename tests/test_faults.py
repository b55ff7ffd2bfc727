"""Fault injection with real processes and real signals (issue 7).

* SIGKILL of the Ray worker process running a unit: Tune retries the trial
  (``max_failures``), the unit resumes after its last finished level, rows appear once.
* SIGKILL of the ``lth run`` driver before the first trial, mid-stage, between stages,
  half-way through a store write, and at every step of a commit (intent written, one table
  committed, batch recorded) and of the compaction (optimized, vacuumed) (hook
  ``LTH_TEST_KILL_AT``, orchestrator/faults.py), each followed by the same ``lth run``: after
  every kill the current table versions hold no duplicate and no foreign row, and the final
  store equals an uninterrupted run's (all four tables, sorted, without the columns that
  measure the run). A write killed half-way leaves only a temporary file that no
  ``*.parquet`` glob picks up and the next driver removes.

The killed drivers are subprocesses attached (``--address``) to this module's local Ray, so
each costs an interpreter start, not a Ray start; the reruns and the reference run use the
in-process CLI on the same Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.store import Store
from orchestrator.tables import live_files

# Trainings of ~1 s (digits, 8 epochs of batch 32) so a kill can land inside a unit; three
# units, one per stage: dense, the rewind trajectory (2 levels), the reinit branch.
CAMPAIGN = """
name: faults
data: {dataset: digits}
model: {arch: mlp, options: {widths: [32]}}
train: {lr: 0.05, epochs: 8, batch_size: 32, schedule: constant}
seed: 0
resets: [rewind, reinit]
resources: {cpus_per_trial: 1}
max_failures: 2
prune: {rate: 0.5, levels: 2, schedule: iterative}
"""
NAME = "faults"
TABLES = ("trials", "levels", "metrics", "masks")
# Columns that measure the run (time, place, attempts), not the result.
VOLATILE = {"seconds", "host", "device", "attempts", "started_at", "finished_at"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "faults.yaml"
    path.write_text(CAMPAIGN)
    return path


@pytest.fixture(scope="module")
def reference(local_ray, spec, tmp_path_factory) -> dict[str, list[tuple]]:
    """Rows of an uninterrupted run."""
    store = tmp_path_factory.mktemp("reference") / "store"
    lth(["run", str(spec), "--store", str(store), "--no-report"])
    return {t: rows(store, t) for t in TABLES}


def lth(args: list[str]) -> str:
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    return out.output


def rows(store: Path, table: str) -> list[tuple]:
    """Every row of ``table`` minus the volatile columns, sorted. Reads a finished store with a
    plain ``*.parquet`` glob on purpose: a finished run compacts and vacuums its Delta tables,
    so the partition directories then hold exactly the current files; a half-written file or
    a file a compaction replaced would show here."""
    rel = duckdb.sql(f"select * from read_parquet('{store}/{table}/campaign=*/*.parquet', hive_partitioning=true)")
    return _sorted_rows(rel)


def _sorted_rows(rel) -> list[tuple]:
    cols = [c for c in rel.columns if c not in VOLATILE]
    return sorted(rel.select(", ".join(cols)).fetchall(), key=repr)


def current_rows(store: Path, table: str) -> list[tuple]:
    """Rows of ``table`` as readers see them mid-campaign: its current Delta version (through
    the views), not every file on disk (a killed compaction leaves replaced files until the
    next vacuum)."""
    from analysis.views import connect

    con = connect(str(store), warn=False)
    return _sorted_rows(con.sql(f"select * from {table}"))


def assert_same_as_reference(store: Path, reference: dict[str, list[tuple]]) -> None:
    for table in TABLES:
        got = rows(store, table)
        assert len(got) == len(set(got)), f"{table}: duplicate rows"
        assert got == reference[table], f"{table}: rows differ from the uninterrupted run"


def markers(store: Path) -> dict[str, dict]:
    out = {}
    for p in (store / "_units" / f"campaign={NAME}").glob("*.json"):
        try:
            out[p.stem] = json.loads(p.read_text())
        except json.JSONDecodeError:  # never expected (writes are atomic), but do not crash the poll
            continue
    return out


def start_driver(spec: Path, store: Path, address: str, kill_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("LTH_TEST_KILL_AT", None)
    if kill_at:
        env["LTH_TEST_KILL_AT"] = kill_at
    cmd = [sys.executable, "-c", "from orchestrator.cli import main; main()",
           "run", str(spec), "--store", str(store), "--address", address, "--no-report"]
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_for(proc: subprocess.Popen, predicate, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"driver exited ({proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _mid_unit(store: Path, stage: str) -> dict | None:
    """A unit of ``stage`` that is running and has finished a level (so it is inside a unit)."""
    for m in markers(store).values():
        if m.get("stage") == stage and m.get("status") == "running" and m.get("levels_done", 0) >= 1:
            return m
    return None


def test_worker_sigkill_is_retried_and_rows_appear_once(local_ray, spec, reference, tmp_path):
    store = tmp_path / "store"
    proc = start_driver(spec, store, local_ray)
    try:
        wait_for(proc, lambda: _mid_unit(store, "trajectory") is not None, "a trajectory unit mid-way")
        victim = _mid_unit(store, "trajectory")
        pid = victim["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert pid not in (os.getpid(), proc.pid) and "ray" in cmdline.lower(), cmdline  # a Ray worker, nothing else
        os.kill(pid, signal.SIGKILL)
    finally:
        code, out = finish(proc)
    assert code == 0, out
    final = markers(store)[victim["unit_id"]]
    assert final["status"] == "done" and final["attempts"] == 2, final  # retried once, by Tune
    assert final["pid"] != pid
    assert all(m["status"] == "done" for m in markers(store).values())
    assert_same_as_reference(store, reference)


def _subset_without_duplicates(store: Path, reference: dict[str, list[tuple]]) -> None:
    """A killed campaign's rows so far: no duplicates and each one equal to a reference row."""
    for table in TABLES:
        got = current_rows(store, table)
        assert len(got) == len(set(got)), f"{table}: duplicate rows"
        assert set(got) <= set(reference[table]), f"{table}: a row differs from the uninterrupted run"


def _kill_mid_stage(proc: subprocess.Popen, store: Path) -> None:
    """An outside SIGKILL of the driver while a trajectory unit is half done."""
    wait_for(proc, lambda: _mid_unit(store, "trajectory") is not None, "a trajectory unit mid-way")
    os.kill(proc.pid, signal.SIGKILL)


# The kill points in the order a campaign reaches them; each value is LTH_TEST_KILL_AT
# (None: an outside SIGKILL while a trajectory unit is half done). One store goes through
# all of them, each kill followed by the same `lth run`, which the next point then kills:
# every point is hit for real, for the price of about one campaign. The campaign runs staged
# (one family): the driver commits after the dense stage, after the trajectory stage and at
# the end (orchestrator/committer.py), then compacts each table (orchestrator/tables.py).
KILL_POINTS = [
    ("during_spec_write", "store_write:_campaigns/"),  # registration, before Ray
    ("before_first_trial", "before_first_trial"),
    ("commit_intent", "commit:intent"),  # dense done, its batch's intent written, no table committed
    ("between_stages", "after_stage:dense"),  # the rerun first re-applied the dense batch
    ("mid_stage", None),
    ("during_intent_write", "store_write:/pending.json"),  # trajectory done, half its batch's intent written
    ("commit_one_table", "commit:table:metrics"),  # metrics committed, levels / masks / trials not
    ("recovery_two_tables", "commit:table:masks"),  # the rerun's recovery of that batch, killed again
    ("commit_recorded", "commit:recorded"),  # batch recorded, its staging files and intent still there
    ("compact_optimized", "compact:optimized:metrics"),  # branch done, metrics rewritten, not vacuumed
    ("compact_vacuumed", "compact:vacuumed:levels"),  # the rerun's compaction: metrics done, levels vacuumed
]


def test_driver_sigkills_then_rerun_equals_uninterrupted(local_ray, spec, reference, tmp_path):
    store = tmp_path / "store"
    for point, kill_at in KILL_POINTS:
        proc = start_driver(spec, store, local_ray, kill_at)
        try:
            if kill_at is None:
                _kill_mid_stage(proc, store)
        finally:
            code, out = finish(proc)
        assert code == -signal.SIGKILL, f"driver was not killed at {point} (exit {code}):\n{out[-3000:]}"
        stages = {m["stage"]: m["status"] for m in markers(store).values()}
        if point in ("during_spec_write", "before_first_trial"):
            assert not stages, f"{point}: a unit started"
        elif point == "between_stages":
            assert stages == {"dense": "done"}, stages
        elif point == "mid_stage":
            assert "branch" not in stages and stages["trajectory"] == "running", stages
        if point.startswith("during_"):
            leftovers = list(store.rglob(".tmp-*"))
            assert leftovers and not any(p.name.endswith(".parquet") for p in leftovers), leftovers
        if point == "during_intent_write":
            ledger = store / "_ledger" / f"campaign={NAME}"
            assert [p.name.endswith("-pending.json.part") for p in ledger.glob(".tmp-*")] == [True]
            assert not (store / "_ledger" / f"campaign={NAME}" / "pending.json").exists()
        if point.startswith(("commit_", "recovery_")):
            assert (store / "_ledger" / f"campaign={NAME}" / "pending.json").exists(), point
        if point == "compact_optimized":  # the replaced files are still on disk, readers skip them
            on_disk = len(list(store.glob("metrics/campaign=*/*.parquet")))
            assert on_disk > len(live_files(Store(store), "metrics")) == 1, on_disk
        _subset_without_duplicates(store, reference)

    out = lth(["run", str(spec), "--store", str(store), "--no-report"])
    assert "dense 0 ran/1 skipped, trajectory 0 ran/1 skipped, branch 0 ran/1 skipped" in out, out  # none retrained
    assert_same_as_reference(store, reference)
    assert not list(store.glob("_ledger/**/.tmp-*"))  # the killed intent write's temporary file was cleaned up
    assert not list(store.glob("_staging/**/*.parquet"))  # every committed unit's staging files deleted
    assert not (store / "_ledger" / f"campaign={NAME}" / "pending.json").exists()
