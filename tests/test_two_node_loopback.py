"""A real two-node Ray cluster on loopback, the worker node killed mid-campaign.

``ray start --head`` and ``ray start --address`` run as separate processes (each in its own
session, with ``RAY_AUTH_MODE=disabled`` as Ray >= 2.59 requires for a manual cluster
without a shared token), ``lth run --address`` is a third. When a unit is running on the
worker node, that node's whole session (raylet, agents, workers) gets SIGKILL: Tune
retries the trial on the head, the campaign completes, and every row exists exactly once.
The cluster has its own --temp-dir and free ports, so it never meets another test's Ray,
and it is killed by session (each ``ray start`` has its own) in a ``finally`` (never ``ray stop``, which would stop
every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from orchestrator.faults import kill_session, session_pids
from orchestrator.plan import make_plan
from orchestrator.spec import load_campaign

CAMPAIGN = """
name: loopback
data: {dataset: digits}
model: {arch: mlp, options: {widths: [32]}}
train: {lr: 0.05, epochs: 6, batch_size: 32, schedule: constant}
prune: {rate: 0.5, levels: 2, schedule: iterative}
seeds: [0, 1]
resets: [rewind, reinit]
resources: {cpus_per_trial: 1}
max_failures: 2
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RAY = str(Path(sys.executable).with_name("ray"))
# Every process of the cluster and the driver: no token auth (a manual loopback cluster),
# and a dead node noticed in ~2 s instead of Ray's default ~30 s.
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
       "RAY_health_check_failure_threshold": "3", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_id(sid: int) -> str | None:
    """The Ray node id of the raylet in session ``sid`` (from its command line)."""
    for pid in session_pids(sid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if args and args[0].endswith("/raylet"):
            return next((a.split("=", 1)[1] for a in args if a.startswith("--node_id=")), None)
    return None


def wait(predicate, what: str, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def markers(store: Path) -> list[dict]:
    out = []
    for p in (store / "_units" / "campaign=loopback").glob("*.json"):
        try:
            out.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            continue
    return out


def count(store: Path, table: str, distinct: str = "*") -> int:
    cols = "*" if distinct == "*" else f"distinct ({distinct})"
    return duckdb.sql(f"select count({cols}) from read_parquet('{store}/{table}/*/*.parquet')").fetchall()[0][0]


def test_worker_node_killed_mid_campaign_completes_on_head(tmp_path):
    spec = tmp_path / "loopback.yaml"
    spec.write_text(CAMPAIGN)
    store = tmp_path / "store"
    env = {**os.environ, **ENV}
    env.pop("LTH_TEST_KILL_AT", None)
    temp_dir = tempfile.mkdtemp(prefix="lth-ray-", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    port = free_port()
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
              f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []

    def start(args: list[str], log: str) -> subprocess.Popen:
        p = subprocess.Popen(args, env=env, start_new_session=True, stdout=open(tmp_path / log, "w"),
                             stderr=subprocess.STDOUT, text=True)
        procs.append(p)
        return p

    try:
        head = start([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                      f"--dashboard-port={free_port()}", *common], "head.log")
        head_node = wait(lambda: node_id(head.pid), "the head raylet", 60)
        worker = start([RAY, "start", f"--address=127.0.0.1:{port}", *common], "worker.log")
        worker_node = wait(lambda: node_id(worker.pid), "the worker raylet", 60)
        assert head_node != worker_node

        driver = subprocess.Popen(
            [sys.executable, "-c", "from orchestrator.cli import main; main()", "run", str(spec),
             "--store", str(store), "--address", f"127.0.0.1:{port}", "--no-report"],
            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(driver)
        victim = wait(lambda: next((m for m in markers(store) if m.get("node") == worker_node
                                    and m["status"] == "running"), None),
                      "a unit running on the worker node", 120, driver)
        kill_session(worker.pid)  # the whole worker node: raylet, agents, its Ray workers
        wait(lambda: not session_pids(worker.pid), "the worker node's processes to exit", 30)
        out, _ = driver.communicate(timeout=180)
        assert driver.returncode == 0, out
    finally:
        for p in reversed(procs):
            kill_session(p.pid)
            p.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)

    final = {m["unit_id"]: m for m in markers(store)}
    plan = make_plan(load_campaign(str(spec)))
    assert set(final) == set(plan.units) and all(m["status"] == "done" for m in final.values()), final
    redone = final[victim["unit_id"]]
    assert redone["node"] == head_node and redone["attempts"] >= 2, redone  # retried on the head

    # exactly once: every planned row present, none twice
    assert count(store, "trials") == count(store, "trials", "trial_id") == len(plan.cells)
    served = sum(u.trainings * len(u.serves) for u in plan.units.values())
    assert count(store, "levels") == count(store, "levels", "trial_id, level, reset") == served
    assert count(store, "metrics") == count(store, "metrics", "trial_id, level, reset, epoch, split")
    assert count(store, "masks") == count(store, "masks", "trial_id, level, layer, kind")
