"""`lth status` on real stores: cell / unit counts, failed and diverged cells with reasons,
stale `running` markers of a dead driver shown as interrupted, and every file readers skip
(truncated Parquet, non-Parquet, unknown schema version, leftover temporary files, a marker
that is not JSON) listed. The stores are written through the real writer (Store, write_trials)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from orchestrator import paths, schema
from orchestrator.cli import main, register_campaign
from orchestrator.ledger import write_trials
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign
from orchestrator.status import driver_alive, driver_finished, driver_started
from orchestrator.store import Store

SPEC = """
name: st
data: {dataset: digits}
model: {arch: mlp}
train: {lr: 0.1, epochs: 1}
prune: {rate: 0.5, levels: 1}
seed: 0
resets: [rewind, reinit]
grid:
  lr: [0.1, 0.01]
"""


def status(store: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["status", *args, "--store", str(store)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def campaign(tmp_path):
    """A registered campaign whose lr=0.1 cells finished (one failed, one done) and whose
    lr=0.01 cells are mid-run: dense done, trajectory `running`, branch pending."""
    store = Store(str(tmp_path / "store"))
    c = parse_campaign(SPEC)
    plan = make_plan(c)
    register_campaign(store, c, plan)
    by_lr: dict[float, dict[str, list[str]]] = {}
    for u in plan.units.values():
        by_lr.setdefault(u.setup.train.lr, {}).setdefault(u.stage, []).append(u.unit_id)
    hi, lo = by_lr[0.1], by_lr[0.01]
    for uid in hi["dense"] + hi["trajectory"] + lo["dense"]:
        store.put_json(paths.marker("st", uid), {"status": "done", "attempts": 1, "finished_at": "2026-01-01T00:00:00+00:00"})
    store.put_json(paths.marker("st", hi["branch"][0]), {"status": "failed", "attempts": 2, "reason": "MemoryError: boom",
                                                        "finished_at": "2026-01-01T00:00:01+00:00"})
    store.put_json(paths.marker("st", lo["trajectory"][0]), {"status": "running", "attempts": 1, "reason": None})
    counts = write_trials(store, plan)
    assert counts == {"done": 1, "failed": 1, "diverged": 0, "pending": 2}
    return store, plan, lo["trajectory"][0]


def test_counts_and_failed_reasons(campaign):
    store, plan, _ = campaign
    out = status(Path(store.root))
    assert "st: cells done 1, failed 1, diverged 0, pending 2" in out
    assert "units done 3, running 0, running or interrupted 1, failed 1, diverged 0, pending 1" in out
    failed = [c.trial_id for c in plan.cells if c.setup.train.lr == 0.1 and c.reset == "reinit"]
    assert f"failed cell {failed[0]}: " in out and "MemoryError: boom" in out
    # no driver record (the store was written without `lth run`): cannot tell, say so
    assert "running or interrupted 1" in out and "driver: no driver record" in out
    assert "bad file" not in out


def test_running_marker_of_live_driver_is_running(campaign):
    store, _, _ = campaign
    record = driver_started(store, "st")  # this test process is the (live) driver
    assert driver_alive(record) is True
    out = status(Path(store.root), "st")
    assert "units done 3, running 1, failed 1," in out and "interrupted" not in out
    assert f"driver: running (pid {os.getpid()}" in out
    driver_finished(store, "st", record, "completed")
    out = status(Path(store.root), "st")
    assert "interrupted 1" in out and "driver: finished" in out and "completed" in out


def test_running_marker_of_dead_driver_is_interrupted(campaign):
    store, _, running_uid = campaign
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(child.stdout)
    store.put_json(paths.driver("st"), {"pid": dead_pid, "host": os.uname().nodename, "run_id": "abc", "proc_start": "1"})
    if driver_alive(store.get_json(paths.driver("st"))) is not False:
        pytest.fail(f"pid {dead_pid} was reused before the check; rerun")
    out = status(Path(store.root), "st")
    assert "units done 3, running 0, interrupted 1, failed 1," in out
    assert f"interrupted unit {running_uid}" in out and f"pid {dead_pid}" in out and "is gone" in out


def test_recycled_pid_and_other_host(campaign):
    store, _, _ = campaign
    import socket

    # our own pid but another process start time: a recycled pid, not the driver
    store.put_json(paths.driver("st"), {"pid": os.getpid(), "host": socket.gethostname(), "run_id": "r", "proc_start": "-1"})
    assert "interrupted 1" in status(Path(store.root), "st")
    store.put_json(paths.driver("st"), {"pid": 1, "host": "some-other-node", "run_id": "r"})
    out = status(Path(store.root), "st")
    assert "running or interrupted 1" in out and "not checkable from here" in out


def test_bad_store_files_are_listed_and_skipped(campaign):
    store, _, _ = campaign
    root = Path(store.root)
    part = root / "trials" / "campaign=st"
    good = sorted(part.glob("*.parquet"))[0]
    data = good.read_bytes()
    (part / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (root / "metrics" / "campaign=st").mkdir(parents=True, exist_ok=True)
    (root / "metrics" / "campaign=st" / "notes.parquet").write_text("this is not parquet")
    (root / "levels" / "campaign=st").mkdir(parents=True, exist_ok=True)
    (root / "levels" / "campaign=st" / "readme.txt").write_text("stray")
    table = pq.read_table(good)
    future = table.replace_schema_metadata({schema.METADATA_KEY: b"999"})
    pq.write_table(future, part / "future.parquet")
    (part / ".tmp-0123abcd-x.parquet").write_bytes(data)
    (root / "_units" / "campaign=st" / ".tmp-feed-y.json").write_text("{")
    broken_marker = next(p for p in (root / "_units" / "campaign=st").glob("*.json") if not p.name.startswith("."))
    broken_marker.write_text('{"status": "do')

    out = status(root, "st")
    expect = {
        "trials/campaign=st/truncated.parquet": "unreadable Parquet footer",
        "metrics/campaign=st/notes.parquet": "unreadable Parquet footer",
        "levels/campaign=st/readme.txt": "not a .parquet file",
        "trials/campaign=st/future.parquet": f"schema version 999 (expected {schema.SCHEMA_VERSION})",
        "trials/campaign=st/.tmp-0123abcd-x.parquet": "leftover temporary file",
        "_units/campaign=st/.tmp-feed-y.json": "leftover temporary file",
        f"_units/campaign=st/{broken_marker.name}": "unreadable unit marker",
    }
    for path, reason in expect.items():
        line = next((ln for ln in out.splitlines() if ln.startswith(f"bad file {path}: ")), None)
        assert line is not None and reason in line, f"{path} not listed with {reason!r}:\n{out}"
    # never read as data: the trials counts are those of the valid files only
    assert "cells done 1, failed 1, diverged 0, pending 2" in out
    assert store.read_table("trials", "st", warn=False).num_rows == 2
    # the same listing without a campaign argument
    assert sum(ln.startswith("bad file ") for ln in status(root).splitlines()) == len(expect)


def test_unknown_store_and_campaign_are_named(tmp_path, campaign):
    result = CliRunner().invoke(main, ["status", "--store", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "no such directory" in result.output
    store, _, _ = campaign
    result = CliRunner().invoke(main, ["status", "other", "--store", store.root])
    assert result.exit_code != 0 and "campaign 'other': not in store" in result.output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_lth_run_leaves_interrupted_units(tmp_path, data_root):
    """A real `lth run` (its own embedded Ray) SIGKILLed once a unit is running: `lth status`
    shows the driver and its running units as interrupted (the rerun is test_resume's job)."""
    spec = tmp_path / "k.yaml"
    # enough epochs that a unit is still running when the poll below sees its marker
    spec.write_text(SPEC.replace("name: st", "name: k").replace("epochs: 1", "epochs: 300"))
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", "from orchestrator.cli import main; main()", "run", str(spec), "--store", str(store),
                             "--no-report"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        units = store / "_units" / "campaign=k"
        while time.monotonic() < deadline:
            if any('"running"' in p.read_text() for p in units.glob("*.json")) if units.is_dir() else False:
                break
            assert proc.poll() is None, "lth run ended before any unit started"
            time.sleep(0.2)
        else:
            pytest.fail("no unit started within 180 s")
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = status(store, "k")
    assert "driver: interrupted" in out and f"pid {proc.pid}" in out, out
    assert "interrupted unit " in out and ", running 0," in out, out
