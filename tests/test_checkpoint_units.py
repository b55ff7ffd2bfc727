"""Store integration of training checkpoints without Ray (orchestrator/checkpoints.py, units.run_unit):
a unit preempted inside a training leaves its checkpoint in the store and a ``running`` marker;
running the unit again (as a retry on any node would) continues from that checkpoint, records the
resume in the marker, stages exactly the rows of an uninterrupted run and removes the checkpoint."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from orchestrator import paths
from orchestrator.ledger import UnitMarker
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign
from orchestrator.store import Store
from orchestrator.units import run_unit
from trainers import preemption
from trainers.checkpoint import TrainingCheckpoint
from trainers.config import CheckpointConfig

CAMPAIGN = """
name: ckunits
data: {dataset: digits}
model: {arch: mlp, options: {widths: [16]}}
train: {lr: 0.05, epochs: 3, batch_size: 64, milestones: [2]}
seed: 0
resets: [rewind]
prune: {rate: 0.5, levels: 2, schedule: iterative}
"""
NAME = "ckunits"


@pytest.fixture(scope="module")
def plan():
    return make_plan(parse_campaign(CAMPAIGN, data_check=False))


def _staged(store: Store, unit_id: str) -> dict[str, list[dict]]:
    out = {}
    for p in sorted(store.list(paths.staging_unit_dir(NAME, unit_id))):
        if p.endswith(paths.PARQUET):
            rows = pq.read_table(store.full(p), filesystem=store.fs).to_pylist()
            out[p] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    return out


def _run_all(store: Store, plan) -> None:
    for unit in plan.units.values():
        run_unit(store, NAME, unit, checkpoint=CheckpointConfig(every_epochs=1))


@pytest.fixture(scope="module")
def ref(plan, tmp_path_factory) -> Store:
    """The uninterrupted run."""
    store = Store(str(tmp_path_factory.mktemp("ref")))
    _run_all(store, plan)
    return store


@pytest.mark.parametrize("stage", ["dense", "trajectory"])
def test_a_preempted_unit_continues_from_its_store_checkpoint(plan, ref, tmp_path, stage):
    store = Store(str(tmp_path / "run"))
    for unit in plan.units.values():
        if unit.stage == stage:
            preemption.request()  # a SIGTERM: checkpoint at the end of the first batch, then stop
            try:
                with pytest.raises(preemption.Preempted, match="checkpoint written at iteration 1"):
                    run_unit(store, NAME, unit, checkpoint=CheckpointConfig(every_epochs=1))
            finally:
                preemption.clear()
            stopped = UnitMarker.load(store, NAME, unit.unit_id)
            assert stopped.status == "running" and "Preempted" in stopped.reason
            ckpt = TrainingCheckpoint.from_bytes(store.get_bytes(paths.checkpoint(NAME, unit.unit_id)))
            assert ckpt.iteration == 1 and ckpt.mid_epoch
        run_unit(store, NAME, unit, checkpoint=CheckpointConfig(every_epochs=1))
        m = UnitMarker.load(store, NAME, unit.unit_id)
        assert m.status == "done"
        if unit.stage == stage:
            level = 0 if stage == "dense" else 1
            assert m.attempts == 2 and m.extra["resumes"] == [
                {"attempt": 2, "level": level, "reset": unit.reset if level else "dense", "epoch": 0, "iteration": 1}]
        else:
            assert "resumes" not in m.extra
        assert not store.exists(paths.checkpoint(NAME, unit.unit_id))  # finished: removed
        staged = _staged(store, unit.unit_id)
        assert staged and all(staged.values()) and staged == _staged(ref, unit.unit_id)
        for name in ["dense"] if unit.stage == "dense" else [f"L{lv}" for lv in range(1, m.levels_done + 1)]:
            a = ref.get_tensors(paths.artifact(unit.unit_id, name))
            b = store.get_tensors(paths.artifact(unit.unit_id, name))
            for key in ("final", "mask", "driver"):
                if key in a:
                    assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
