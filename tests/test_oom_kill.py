"""A unit that outgrows the node's memory and is killed by Ray's memory monitor.

The monitor (not the allocator) kills the trial's worker process. Tune 2.60 does not treat
that ``OutOfMemoryError`` as a trial failure: it aborts the whole run, so without our
handling (``orchestrator.execution._Runner``) every ``lth run`` of such a campaign would crash
at the same unit and never finish. Here a real ``lth run`` (its own embedded Ray, as a user
runs it) gets a kill threshold a few GiB above the machine's current use; one cell's model
(a 5M-wide hidden layer: ~1.5 GB of weights, more with gradients, momentum and θ0) crosses
it, the healthy cell needs ~0.3 GB. Expected: the campaign completes, the big cell is
*failed* after ``max_failures`` retries with a reason naming the memory monitor, the healthy
cell's rows are complete and unique, ``lth status`` shows it all.

The charging rule itself (which units a kill costs an attempt) is also tested directly, fast.

One trial at a time (``--max-concurrent 1``): the monitor kills the most recently started
task, so with two running it could pick the healthy one first (which is then retried).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from orchestrator import paths
from orchestrator.execution import _out_of_memory, _Runner
from orchestrator.ledger import UnitMarker
from orchestrator.plan import make_plan
from orchestrator.progress import Progress
from orchestrator.spec import load_campaign
from orchestrator.store import Store

MAX_FAILURES = 1
HEADROOM_GIB = 2.5  # above the use before the run: Ray's own processes take ~1.2 GiB of it
CAMPAIGN = f"""
name: oom
data: {{dataset: digits}}
model: {{arch: mlp}}
train: {{epochs: 1, batch_size: 128, schedule: constant, lr: 0.05}}
prune: {{rate: 0.5, levels: 1}}
seed: 0
reset: rewind
resources: {{cpus_per_trial: 1}}
max_failures: {MAX_FAILURES}
grid:
  model.options.widths: [[16], [5000000]]
"""
LTH = str(Path(sys.executable).with_name("lth"))



def kill_threshold() -> float:
    """Ray's ``memory_usage_threshold`` (a fraction of the node's memory) HEADROOM_GIB above now."""
    info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()}
    used = info["MemTotal"] - info["MemAvailable"]
    return min(0.9, (used + HEADROOM_GIB * 2**30) / info["MemTotal"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):  # used by the slow tests only
    root = tmp_path_factory.mktemp("oom")
    spec = root / "oom.yaml"
    spec.write_text(CAMPAIGN)
    store = root / "store"
    env = {**os.environ, "RAY_memory_usage_threshold": f"{kill_threshold():.4f}",
           "RAY_memory_monitor_refresh_ms": "100"}
    run = subprocess.run([LTH, "run", str(spec), "--store", str(store), "--no-report", "--max-concurrent", "1"],
                         env=env, capture_output=True, text=True, timeout=240)
    plan = make_plan(load_campaign(spec))
    trials = {r["trial_id"]: r for r in Store(str(store)).read_table("trials", "oom", warn=False).to_pylist()}
    return plan, store, run, trials


def big(cell) -> bool:
    return cell.axes["model.options.widths"][0] > 10**6


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_campaign_completes_with_the_big_cell_failed(finished):
    plan, _, run, trials = finished
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # a failed cell, but completed
    assert "Traceback" not in run.stdout
    assert set(trials) == {c.trial_id for c in plan.cells}
    for cell in plan.cells:
        row = trials[cell.trial_id]
        if big(cell):
            assert row["status"] == "failed", row
            # only written when Tune's run ended in Ray's OutOfMemoryError (execution._Runner)
            assert "memory monitor" in row["reason"] and "out of memory" in row["reason"], row
            assert row["attempts"] == MAX_FAILURES + 1, row  # retried, as any crash, then given up
        else:
            assert row["status"] == "done" and row["reason"] is None, row


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_healthy_rows_complete_and_unique(finished):
    plan, store, _, _ = finished
    healthy = next(c for c in plan.cells if not big(c))
    levels = Store(str(store)).read_table("levels", "oom", warn=False)
    mine = levels.filter(pc.equal(levels["trial_id"], healthy.trial_id))
    assert sorted(mine["level"].to_pylist()) == list(range(healthy.setup.prune.levels + 1))
    assert set(levels["trial_id"].to_pylist()) == {healthy.trial_id}  # the killed cell wrote nothing


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_status_shows_the_killed_cell(finished):
    plan, store, _, trials = finished
    out = subprocess.run([LTH, "status", "oom", "--store", str(store)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cells done 1, failed 1, diverged 0, pending 0" in out.stdout, out.stdout
    assert "running 0" in out.stdout and "driver: finished" in out.stdout
    failed = next(c.trial_id for c in plan.cells if big(c))
    assert f"failed cell {failed}: {trials[failed]['reason']}" in out.stdout


def _runner(tmp_path, max_failures: int = 1):
    spec = tmp_path / "oom.yaml"
    spec.write_text(CAMPAIGN.replace(f"max_failures: {MAX_FAILURES}", f"max_failures: {max_failures}"))
    campaign = load_campaign(spec)
    plan = make_plan(campaign)
    store = Store(str(tmp_path / "store"))
    runner = _Runner(plan, store, campaign, str(tmp_path / "ray"), None, Progress({}, stream=open(os.devnull, "w")))
    return runner, plan, store


def _mark(store, plan, uid, status, attempts, actor):
    store.put_json(paths.marker(plan.campaign, uid), {"unit_id": uid, "stage": plan.units[uid].stage,
                                                     "status": status, "attempts": attempts, "actor": actor})


def test_memory_kill_charges_the_named_actor_only(tmp_path):
    """The error names the killed actor: only the unit running under it is charged; at
    ``max_failures + 1`` attempts it is failed and leaves its bundle (with its dependants)."""
    runner, plan, store = _runner(tmp_path)
    dense = [u.unit_id for u in plan.stage("dense")]
    traj = {u.depends[0]: u.unit_id for u in plan.stage("trajectory")}
    victim, bystander = dense
    _mark(store, plan, victim, "running", 1, "aa11")
    _mark(store, plan, bystander, "running", 1, "bb22")
    bundles = [(victim, traj[victim]), (bystander, traj[bystander])]
    message = ("1 worker(s) were killed due to the node running low on memory.\n"
               "Selected to kill: (Actor(aa11): job ID=01000000, task name=ImplicitFunc.__init__)")
    left, charged = runner._after_oom(bundles, Exception(message))
    assert charged == 1
    assert "memory monitor" in UnitMarker.load(store, plan.campaign, victim).reason
    assert UnitMarker.load(store, plan.campaign, victim).status == "running"  # attempt 1 of 2: retried
    assert UnitMarker.load(store, plan.campaign, bystander).reason is None  # not charged
    assert left == bundles
    _mark(store, plan, victim, "running", 2, "cc33")  # the retry, killed again
    left, _ = runner._after_oom(bundles, Exception(message.replace("aa11", "cc33")))
    assert UnitMarker.load(store, plan.campaign, victim).status == "failed"
    assert left == [(bystander, traj[bystander])]  # the failed unit's bundle has nothing runnable left
    # an actor killed between units (none of its units running) charges nobody
    assert runner._after_oom(left, Exception(message.replace("aa11", "dd44"))) == (left, 0)
    assert UnitMarker.load(store, plan.campaign, bystander).reason is None


def test_memory_kill_without_an_actor_name_charges_every_running_unit(tmp_path):
    runner, plan, store = _runner(tmp_path, max_failures=0)
    dense = [u.unit_id for u in plan.stage("dense")]
    for uid in dense:
        _mark(store, plan, uid, "running", 1, None)
    assert runner._after_oom([tuple(dense)], Exception("out of memory")) == ([], len(dense))
    assert {UnitMarker.load(store, plan.campaign, uid).status for uid in dense} == {"failed"}


def test_out_of_memory_is_found_behind_tunes_runtime_error():
    import ray

    oom = ray.exceptions.OutOfMemoryError("node low on memory")
    try:
        try:
            raise oom
        except Exception as e:
            raise RuntimeError(f"Caught unexpected exception: {e}") from e
    except RuntimeError as wrapped:
        assert _out_of_memory(wrapped) is oom
    assert _out_of_memory(RuntimeError("something else")) is None
