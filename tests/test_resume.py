"""Kill the `lth run` driver (SIGKILL) mid-campaign, run again: the final rows equal an
uninterrupted run's, with no duplicates, and finished units are not retrained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from click.testing import CliRunner

from orchestrator.cli import main

CAMPAIGN = """
name: resume
data: {dataset: digits}
model: {arch: mlp, options: {widths: [32]}}
train: {lr: 0.05, epochs: 2, batch_size: 128, schedule: constant}
prune: {rate: 0.4, levels: 3}
seed: 0
resets: [rewind, reinit]
resources: {cpus_per_trial: 1}
max_failures: 1
grid:
  schedule: [oneshot, iterative]
"""

# Columns that measure the run (time, place, attempts), not the result.
VOLATILE = {"seconds", "host", "device", "attempts", "started_at", "finished_at"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def rows(store, table: str) -> list[tuple]:
    rel = duckdb.sql(f"select * from read_parquet('{store}/{table}/*/*.parquet', hive_partitioning=true)")
    cols = [c for c in rel.columns if c not in VOLATILE]
    return sorted(duckdb.sql(f"select {', '.join(cols)} from rel").fetchall(), key=repr)


def _trajectory_progressed(store) -> bool:
    d = store / "_units" / "campaign=resume"
    for p in d.glob("t-*.json") if d.is_dir() else []:
        try:
            if json.loads(p.read_text()).get("levels_done", 0) >= 1:
                return True
        except json.JSONDecodeError:
            continue
    return False


def test_sigkill_then_resume_equals_uninterrupted(local_ray, tmp_path):
    spec = tmp_path / "resume.yaml"
    spec.write_text(CAMPAIGN)
    killed_store = tmp_path / "killed"
    lth = [sys.executable, "-c", "from orchestrator.cli import main; main()"]
    proc = subprocess.Popen(lth + ["run", str(spec), "--store", str(killed_store)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 400
        while not _trajectory_progressed(killed_store):
            assert proc.poll() is None, "the campaign finished before it could be interrupted"
            assert time.monotonic() < deadline, "no trajectory level finished in time"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies mid-campaign
        proc.wait(timeout=30)
    finally:
        try:  # then the embedded Ray processes it started (same session)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    markers = [json.loads(p.read_text()) for p in (killed_store / "_units" / "campaign=resume").glob("*.json")]
    assert any(m["status"] != "done" for m in markers) or len(markers) < 5  # genuinely unfinished

    runner = CliRunner()
    resumed = runner.invoke(main, ["run", str(spec), "--store", str(killed_store)])
    assert resumed.exit_code == 0, resumed.output
    assert "dense 0 ran/1 skipped" in resumed.output, resumed.output  # the dense unit was not retrained
    fresh_store = tmp_path / "fresh"
    fresh = runner.invoke(main, ["run", str(spec), "--store", str(fresh_store)])
    assert fresh.exit_code == 0, fresh.output

    for table in ("trials", "levels", "metrics", "masks"):
        got, want = rows(killed_store, table), rows(fresh_store, table)
        assert len(got) == len(set(got)), f"{table}: duplicate rows after resume"
        assert got == want, f"{table}: resumed rows differ from an uninterrupted run"
