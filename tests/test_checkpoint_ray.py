"""A Ray worker SIGKILLed in the middle of a multi-epoch training: Tune retries the unit, which
continues from its last checkpoint in the store (not from epoch 0), and the campaign's rows and
final weights equal an uninterrupted run's bit for bit; the checkpoint is gone at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import torch
from click.testing import CliRunner

from orchestrator import paths
from orchestrator.cli import main
from orchestrator.store import Store
from trainers.checkpoint import TrainingCheckpoint

# The dense run is 20 epochs of digits (~45 steps each), checkpointed every 2 epochs: long enough
# for the kill to land after a checkpoint and before the end.
CAMPAIGN = """
name: ckpt
data: {dataset: digits}
model: {arch: mlp, options: {widths: [32]}}
train: {lr: 0.05, epochs: 20, batch_size: 32, schedule: step, milestones: [12]}
seed: 0
resets: [rewind]
resources: {cpus_per_trial: 1}
max_failures: 2
checkpoint: {every_epochs: 2}
prune: {rate: 0.5, levels: 1, schedule: iterative}
"""
NAME = "ckpt"
TABLES = ("trials", "levels", "metrics", "masks")
VOLATILE = {"seconds", "host", "device", "attempts", "started_at", "finished_at"}  # measure the run, not the result

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def rows(store: Path, table: str) -> list[tuple]:
    rel = duckdb.sql(f"select * from read_parquet('{store}/{table}/campaign=*/*.parquet', hive_partitioning=true)")
    cols = [c for c in rel.columns if c not in VOLATILE]
    return sorted(rel.select(", ".join(cols)).fetchall(), key=repr)


def markers(store: Path) -> dict[str, dict]:
    out = {}
    for p in (store / paths.units_dir(NAME)).glob("*.json"):
        try:
            out[p.stem] = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
    return out


def weights(store: Path) -> dict[str, torch.Tensor]:
    """Every artifact tensor of the campaign (dense init/final/rewind points, masks, driver weights)."""
    s, out = Store(str(store)), {}
    for uid, m in sorted(markers(store).items()):
        names = ["dense"] if m["stage"] == "dense" else [f"L{lv}" for lv in range(1, m["levels_done"] + 1)]
        for name in names:
            flat = [(f"{uid}/{name}", s.get_tensors(paths.artifact(uid, name)))]
            while flat:
                key, v = flat.pop()
                if isinstance(v, dict):
                    flat += [(f"{key}/{k}", x) for k, x in v.items()]
                elif isinstance(v, torch.Tensor):
                    out[key] = v
    return out


def run_reference(spec: Path, store: Path) -> None:
    out = CliRunner().invoke(main, ["run", str(spec), "--store", str(store), "--no-report"])
    assert out.exit_code == 0, out.output


@contextlib.contextmanager
def driver(spec: Path, store: Path, address: str) -> Iterator[subprocess.Popen]:
    """``lth run`` as a subprocess attached to the module's Ray (its own session: killed whole if
    the test fails before it ends)."""
    env = {k: v for k, v in os.environ.items() if k != "LTH_TEST_KILL_AT"}
    cmd = [sys.executable, "-c", "from orchestrator.cli import main; main()",
           "run", str(spec), "--store", str(store), "--address", address, "--no-report"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def completes(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out


def the_retry(store: Path, unit_id: str) -> dict:
    """The dense unit's one resume: it finished on its second attempt, continuing a checkpoint."""
    final = markers(store)[unit_id]
    assert final["status"] == "done" and final["attempts"] == 2, final
    (resume,) = final["resumes"]
    assert resume["attempt"] == 2 and resume["level"] == 0 and resume["reset"] == "dense"
    return resume


def running_dense(proc: subprocess.Popen, store: Path) -> dict | None:
    assert proc.poll() is None, f"driver exited ({proc.returncode}):\n{proc.stdout.read()[-3000:]}"
    time.sleep(0.02)
    return next((m for m in markers(store).values() if m["stage"] == "dense" and m["status"] == "running"), None)


def assert_equals_reference(store: Path, ref_store: Path) -> None:
    """Rows (no duplicates) and every artifact tensor equal the uninterrupted run's; no checkpoint left."""
    for table in TABLES:
        got = rows(store, table)
        assert len(got) == len(set(got)), f"{table}: duplicate rows"
        assert got == rows(ref_store, table), f"{table}: rows differ from the uninterrupted run"
    a, b = weights(ref_store), weights(store)
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert not list((store / paths.CHECKPOINTS).rglob("*.ckpt"))  # finished trainings leave no checkpoint


def test_worker_sigkill_mid_training_resumes_from_the_checkpoint(local_ray, tmp_path):
    spec, ref_store, store = tmp_path / "ckpt.yaml", tmp_path / "ref", tmp_path / "store"
    spec.write_text(CAMPAIGN)
    run_reference(spec, ref_store)
    with driver(spec, store, local_ray) as proc:
        deadline = time.monotonic() + 300
        victim = ckpt = None
        while ckpt is None or ckpt.epoch < 2:
            assert time.monotonic() < deadline, "no checkpoint of the dense run appeared"
            victim = running_dense(proc, store)
            if victim is not None:
                data = Store(str(store)).get_bytes(paths.checkpoint(NAME, victim["unit_id"]))
                ckpt = TrainingCheckpoint.from_bytes(data) if data else None  # atomic: complete when present
        cmdline = Path(f"/proc/{victim['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "ray" in cmdline.lower(), cmdline  # a Ray worker, nothing else
        os.kill(victim["pid"], signal.SIGKILL)
        completes(proc)
    resume = the_retry(store, victim["unit_id"])  # started from the checkpoint, not from epoch 0
    assert 20 > resume["epoch"] >= ckpt.epoch >= 2 and resume["epoch"] % 2 == 0
    assert resume["iteration"] == resume["epoch"] * (ckpt.iteration // ckpt.epoch)
    assert_equals_reference(store, ref_store)


# The same units, trained long enough for a SIGTERM to land mid-training, and checkpointed only on
# request (every 60 minutes: never on its own in this test), so a resume proves the SIGTERM's checkpoint.
TERM_CAMPAIGN = CAMPAIGN.replace("epochs: 20", "epochs: 100").replace("checkpoint: {every_epochs: 2}",
                                                                         "checkpoint: {every_minutes: 60}")


def test_worker_sigterm_checkpoints_at_once_and_the_retry_continues_bit_identically(local_ray, tmp_path):
    """What a spot node's notice does to a worker: SIGTERM. The worker's handler (installed by
    ``lth run`` through Ray's worker setup hook, orchestrator/worker_signals.py) has the running
    training checkpoint at the end of its batch before the worker ends; Tune's retry continues
    from there, and rows and weights equal an uninterrupted run's."""
    assert "epochs: 100" in TERM_CAMPAIGN and "every_minutes: 60" in TERM_CAMPAIGN
    spec, ref_store, store = tmp_path / "ckpt.yaml", tmp_path / "ref", tmp_path / "store"
    spec.write_text(TERM_CAMPAIGN)
    run_reference(spec, ref_store)
    with driver(spec, store, local_ray) as proc:
        deadline = time.monotonic() + 300
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "the dense run never started"
            victim = running_dense(proc, store)
        time.sleep(1.0)  # into the training (100 epochs take several seconds)
        assert markers(store)[victim["unit_id"]]["status"] == "running", "the training ended before the SIGTERM"
        assert not Store(str(store)).exists(paths.checkpoint(NAME, victim["unit_id"]))  # none before the signal
        os.kill(victim["pid"], signal.SIGTERM)
        gone = time.monotonic() + 60
        while Path(f"/proc/{victim['pid']}").exists() and time.monotonic() < gone:
            time.sleep(0.05)
        assert not Path(f"/proc/{victim['pid']}").exists(), "the worker did not end after SIGTERM"
        completes(proc)
    resume = the_retry(store, victim["unit_id"])  # from the checkpoint the SIGTERM wrote, mid-training
    assert 0 < resume["iteration"] and resume["epoch"] < 100
    assert_equals_reference(store, ref_store)
