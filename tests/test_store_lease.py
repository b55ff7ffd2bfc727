"""One driver per campaign (orchestrator/lease.py), on real files and real processes.

Fast: a second acquire is refused naming host, pid and since when; a dead holder (its pid
gone on this host, or no heartbeat for longer than the stale limit from another host) is taken
over; of many drivers racing for a free or a dead lease exactly one wins; a driver whose
lease was taken over stops before its next commit. Slow: two real ``lth run`` of one
campaign on one store -- the second refuses while the first runs, and after the first is
SIGKILLed the same command takes over and finishes without running any unit twice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import pytest
from click.testing import CliRunner

from orchestrator import lease as lease_mod
from orchestrator import paths
from orchestrator.cli import main
from orchestrator.committer import Committer
from orchestrator.faults import kill_session
from orchestrator.lease import LeaseHeld, LeaseLost, LeaseRecord, acquire
from orchestrator.ledger import UnitMarker, now
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign
from orchestrator.store import Store

CAMPAIGN = """
name: lease
data: {dataset: digits}
model: {arch: mlp, options: {widths: [32]}}
train: {lr: 0.05, epochs: 8, batch_size: 32, schedule: constant}
seed: 0
resets: [rewind, reinit]
resources: {cpus_per_trial: 1}
prune: {rate: 0.5, levels: 2, schedule: iterative}
"""


def write_lease(store: Store, campaign: str, **over) -> LeaseRecord:
    record = LeaseRecord(**{**asdict(LeaseRecord.mine()), **over})
    store.put_json(paths.lease(campaign), asdict(record))
    return record


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_acquire_is_refused_naming_the_holder(tmp_path):
    store = Store(str(tmp_path / "s"))
    held = acquire(store, "c")
    try:
        with pytest.raises(LeaseHeld) as e:
            acquire(store, "c")
        text = str(e.value)
        assert f"host {socket.gethostname()}, pid {os.getpid()}, since {held.record.since[:19]}" in text, text
        acquire(store, "other").release()  # leases are per campaign
    finally:
        held.release()
    assert not store.exists(paths.lease("c"))
    acquire(store, "c").release()  # free again


def test_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    store = Store(str(tmp_path / "s"))
    dead = write_lease(store, "c", pid=dead_pid())
    held = acquire(store, "c")
    try:
        assert held.record.pid == os.getpid() and held.record.run_id != dead.run_id
        assert lease_mod.read(store, "c") == held.record
    finally:
        held.release()
    # a live pid that started at another time is a recycled pid: dead too
    write_lease(store, "c", proc_start="1")
    acquire(store, "c").release()


def test_holder_on_another_host_is_dead_only_after_the_stale_limit(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "s"))
    monkeypatch.setenv("LTH_LEASE_STALE_S", "60")
    fresh = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    write_lease(store, "c", host="gpu-node-7", pid=4242, heartbeat=fresh)
    with pytest.raises(LeaseHeld, match=r"host gpu-node-7, pid 4242, since .* \(last heartbeat 5 s ago"):
        acquire(store, "c")
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61)).isoformat()
    write_lease(store, "c", host="gpu-node-7", pid=4242, heartbeat=old)
    acquire(store, "c").release()
    monkeypatch.setenv("LTH_LEASE_STALE_S", "soon")
    with pytest.raises(ValueError, match="LTH_LEASE_STALE_S: expected a number of seconds, got 'soon'"):
        acquire(store, "c")


@pytest.mark.parametrize("start", ["free", "dead"])
def test_exactly_one_of_many_racing_drivers_wins(tmp_path, start):
    store = Store(str(tmp_path / "s"))
    if start == "dead":
        write_lease(store, "c", pid=dead_pid())
    barrier = threading.Barrier(8)
    won, refused = [], []

    def race() -> None:
        barrier.wait()
        try:
            won.append(acquire(store, "c"))
        except LeaseHeld as e:
            refused.append(e)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7, (won, refused)
    assert lease_mod.read(store, "c") == won[0].record
    # no leftovers: the lease and its lock file (kept: removing a lock file races its next taker)
    assert sorted(store.list(paths.ledger_dir("c"))) == sorted([paths.lease("c"), paths.lease_lock("c")])
    won[0].release()


def test_a_taken_over_driver_stops_before_its_next_commit(tmp_path):
    store = Store(str(tmp_path / "s"))
    plan = make_plan(parse_campaign(CAMPAIGN))
    held = acquire(store, plan.campaign)
    committer = Committer(store, plan, lease=held)
    uid = plan.stage("dense")[0].unit_id
    UnitMarker(uid, stage="dense", status="done", attempts=1, finished_at=now()).save(store, plan.campaign)
    write_lease(store, plan.campaign, host="other", pid=1)  # another driver took the campaign over
    with pytest.raises(LeaseLost, match="taken over by host other, pid 1"):
        committer.commit()
    assert not store.exists(paths.pending_batch(plan.campaign))  # nothing was committed
    held.release()
    assert lease_mod.read(store, plan.campaign).host == "other"  # release leaves the new holder's lease


def test_heartbeat_renews_the_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.05)
    store = Store(str(tmp_path / "s"))
    held = acquire(store, "c")
    first = held.record.heartbeat
    deadline = time.monotonic() + 30
    while lease_mod.read(store, "c").heartbeat == first:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.05)
    assert lease_mod.read(store, "c").since == held.record.since
    held.release()


# ----------------------------------------------------------------------------- two real drivers


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_drivers_one_campaign(local_ray, tmp_path):
    spec, store = tmp_path / "lease.yaml", tmp_path / "store"
    spec.write_text(CAMPAIGN)
    env = {k: v for k, v in os.environ.items() if k != "LTH_TEST_KILL_AT"}
    first = subprocess.Popen(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", "run", str(spec), "--store", str(store),
         "--address", local_ray, "--no-report"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    units = store / "_units" / "campaign=lease"
    try:
        deadline = time.monotonic() + 300
        while not any(json.loads(p.read_text()).get("status") == "done" for p in units.glob("*.json")):
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the first driver finished no unit"
            time.sleep(0.05)
        second = CliRunner().invoke(main, ["run", str(spec), "--store", str(store), "--no-report"])
        assert second.exit_code != 0
        assert (f"being run by another driver: host {socket.gethostname()}, pid {first.pid}, since "
                in second.output), second.output
        assert first.poll() is None  # the refused driver changed nothing of the first's
        kill_session(first.pid)  # SIGKILL the first driver (its session: no cleanup runs)
        first.wait()
    finally:
        if first.poll() is None:
            kill_session(first.pid)
            first.wait()
    before = {p.stem: json.loads(p.read_text()) for p in units.glob("*.json")}
    done_before = sum(m["status"] == "done" for m in before.values())
    again = CliRunner().invoke(main, ["run", str(spec), "--store", str(store), "--no-report"])
    assert again.exit_code == 0, again.output  # the dead driver's lease was taken over at once
    assert "cells: done 2" in again.output
    after = {p.stem: json.loads(p.read_text()) for p in units.glob("*.json")}
    assert done_before >= 1 and all(m["status"] == "done" for m in after.values())
    for uid, m in after.items():  # no unit ran twice to completion: finished ones were skipped
        if before.get(uid, {}).get("status") == "done":
            assert m == before[uid]
        assert m["attempts"] <= 2, m  # at most the one the kill interrupted, resumed
    assert not (store / "_ledger" / "campaign=lease" / "lease.json").exists()  # released at the end


def test_status_names_the_lease_holder(tmp_path):
    from orchestrator.status import campaign_status

    store = Store(str(tmp_path / "s"))
    empty = {"units": [], "cells": []}
    assert campaign_status(store, "c", empty).lease is None
    with acquire(store, "c") as held:
        lines = campaign_status(store, "c", empty).lines()
        assert f"  lease: held: host {socket.gethostname()}, pid {os.getpid()}, since {held.record.since[:19]}" in \
            "\n".join(lines), lines
    write_lease(store, "c", pid=dead_pid())
    assert campaign_status(store, "c", empty).lease.startswith("left by a dead driver")
