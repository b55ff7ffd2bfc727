"""Branch units retrain on exactly the mask-driver trajectory's masks (the re-init control of the
verdict depends on it), and the trajectory's masks and mask statistics are what an independent
recomputation from the stored weights gives.

The plan's units run one by one on a real local store (``orchestrator.units.run_unit``, no
Ray). Then, from the store's artifacts only:

- the masks of levels 1 and 2 are recomputed with numpy (global magnitude over the remaining
  weights of the dense net / of the driver's level-1 weights);
- each branch's level rows equal a retraining, by hand, on the trajectory's mask of that level
  (a branch that computed its own masks, or took another level's, trains a different network);
- the mask statistics rows are recomputed from the masks, theta_0 and the weights ranked.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import duckdb
import numpy as np
import pytest
import torch

from orchestrator import paths
from orchestrator.ids import stable_hash
from orchestrator.plan import make_plan
from orchestrator.spec import Campaign, Cell
from orchestrator.store import Store
from orchestrator.units import load_dense, run_unit
from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig
from trainers.models import build_model
from trainers.trajectory import retrain

RATE = 0.4
SETUP = RunSetup(
    data=DataConfig("digits"),
    model=ModelConfig("mlp", {"widths": (24, 12)}),
    train=TrainConfig(lr=0.05, epochs=2, batch_size=128, schedule="constant"),
    prune=PruneConfig(rate=RATE, levels=2, schedule="iterative", mask_driver="rewind"),
    seed=4,
)
RESETS = ("rewind", "reinit", "finetune")
CAMPAIGN = "branches"


def _cell(reset: str) -> Cell:
    config = {**dataclasses.asdict(SETUP), "reset": reset}  # as orchestrator.spec resolves a cell
    return Cell(trial_id=stable_hash(config), axes={"reset": reset}, config=config, setup=SETUP, reset=reset)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("branches")
    store = Store(str(root / "store"))
    plan = make_plan(Campaign(spec=SimpleNamespace(name=CAMPAIGN), text="", cells=[_cell(r) for r in RESETS]))
    for unit in plan.units.values():  # stage order: dense, trajectory, branches
        marker = run_unit(store, CAMPAIGN, unit)
        assert marker.status == "done", (unit.unit_id, marker.reason)
    return plan, store, root / "store"


def _rows(store_dir, table: str) -> list[dict]:
    """Every row of ``table`` the units wrote (staged or committed: any Parquet file under a
    ``/<table>/`` directory of the store)."""
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{store_dir}/**/*.parquet', union_by_name=true, filename=true) "
                     f"WHERE filename LIKE '%/{table}/%'")
    cols = rel.columns
    return [dict(zip(cols, r)) for r in rel.fetchall()]


def _numpy_global_magnitude(weights: dict, alive: dict, rate: float, level: int) -> dict:
    """Independent global magnitude pruning to level ``level``: keep the n - round((1 - (1-rate)^level) * n)
    largest |w| (n: dense size of the pool) among the alive weights (ties: earlier position first)."""
    names = list(alive)
    flat = np.concatenate([np.abs(weights[n].numpy().ravel()) for n in names])
    live = np.concatenate([alive[n].numpy().ravel() for n in names])
    n_keep = min(int(live.sum()), len(flat) - int(round((1 - (1 - rate) ** level) * len(flat))))
    score = np.where(live, flat, -1.0)
    order = np.argsort(-score, kind="stable")
    keep = np.zeros(len(flat), bool)
    keep[order[:n_keep]] = True
    out, i = {}, 0
    for n in names:
        size = alive[n].numel()
        out[n] = torch.from_numpy(keep[i:i + size].reshape(alive[n].shape))
        i += size
    return out


def _units(plan):
    traj = plan.stage("trajectory")
    assert len(traj) == 1 and len(plan.stage("dense")) == 1
    branches = {u.reset: u for u in plan.stage("branch")}
    assert sorted(branches) == ["finetune", "reinit"]
    return plan.stage("dense")[0], traj[0], branches


def test_trajectory_masks_are_the_independent_recomputation(ran):
    plan, store, _ = ran
    dense_u, traj, _ = _units(plan)
    dense = load_dense(store, dense_u.unit_id)
    model = build_model(SETUP.model, dense.input_shape, dense.num_classes, SETUP.seed)
    prunable = list(model.prunable())
    l1 = store.get_tensors(paths.artifact(traj.unit_id, "L1"))
    l2 = store.get_tensors(paths.artifact(traj.unit_id, "L2"))
    ones = {n: torch.ones_like(dense.final[n], dtype=torch.bool) for n in prunable}
    want1 = _numpy_global_magnitude(dense.final, ones, RATE, 1)
    want2 = _numpy_global_magnitude(l1["driver"], want1, RATE, 2)  # ranked on the driver's level-1 weights
    for n in prunable:
        assert torch.equal(l1["mask"][n], want1[n]), n
        assert torch.equal(l2["mask"][n], want2[n]), n
    # the driver artifact is the rewind run trained on the level-1 mask: zero where pruned
    for n in prunable:
        assert bool((l1["driver"][n][~want1[n]] == 0).all())


@pytest.mark.parametrize("reset", ["reinit", "finetune"])
def test_branch_rows_are_a_retraining_on_the_trajectory_masks(ran, reset):
    plan, store, store_dir = ran
    dense_u, traj, branches = _units(plan)
    branch = branches[reset]
    dense = load_dense(store, dense_u.unit_id)
    rows = {r["level"]: r for r in _rows(store_dir, "levels") if r["unit_id"] == branch.unit_id}
    assert sorted(rows) == [1, 2]
    artifacts = {lv: store.get_tensors(paths.artifact(traj.unit_id, f"L{lv}")) for lv in (1, 2)}
    for level in (1, 2):
        source = dense.final if level == 1 else artifacts[1]["driver"]
        want = retrain(SETUP, level=level, mask=artifacts[level]["mask"], reset=reset, dense=dense,
                       source=source, device="cpu").summary
        got = rows[level]
        assert got["reset"] == reset and got["trial_id"] == _cell(reset).trial_id
        for col in ("final_test_accuracy", "best_test_accuracy", "final_train_loss", "iterations", "density"):
            assert got[col] == getattr(want, col), (reset, level, col)
    # the control really differs from the ticket at level 2 (else the check above is toothless)
    ticket = {r["level"]: r for r in _rows(store_dir, "levels") if r["unit_id"] == traj.unit_id}
    assert ticket[2]["final_train_loss"] != rows[2]["final_train_loss"]


def test_mask_statistics_rows_recomputed_from_the_masks(ran):
    plan, store, store_dir = ran
    dense_u, traj, _ = _units(plan)
    dense = load_dense(store, dense_u.unit_id)
    masks = {lv: store.get_tensors(paths.artifact(traj.unit_id, f"L{lv}")) for lv in (1, 2)}
    rows = [r for r in _rows(store_dir, "masks") if r["unit_id"] == traj.unit_id]
    # one row per layer and level for every cell of the trajectory (the mask is shared)
    assert {r["trial_id"] for r in rows} == {_cell(r).trial_id for r in RESETS}
    for level in (1, 2):
        ranked = dense.final if level == 1 else masks[1]["driver"]  # the weights the mask came from
        prev = None if level == 1 else masks[1]["mask"]
        weight_rows = [r for r in rows if r["level"] == level and r["kind"] == "weight"
                       and r["trial_id"] == _cell("reinit").trial_id]
        assert sorted(r["layer"] for r in weight_rows) == sorted(masks[level]["mask"])
        for r in weight_rows:
            n = r["layer"]
            m = masks[level]["mask"][n].numpy().ravel()
            p = np.ones_like(m) if prev is None else prev[n].numpy().ravel()
            init, fin = dense.init[n].numpy().ravel(), ranked[n].numpy().ravel()
            travel = np.abs(fin.astype(np.float64) - init)
            pruned_now = p & ~m
            assert r["params"] == m.size and r["kept"] == int(m.sum()) and r["density"] == m.sum() / m.size
            if prev is None:
                assert r["jaccard_prev"] is None
            else:
                assert math.isclose(r["jaccard_prev"], (m & p).sum() / (m | p).sum(), rel_tol=1e-6)
            assert math.isclose(r["travel_kept"], travel[m].mean(), rel_tol=1e-5)
            assert math.isclose(r["travel_pruned"], travel[pruned_now].mean(), rel_tol=1e-5)
            assert math.isclose(r["sign_agreement_kept"], (np.sign(init) == np.sign(fin))[m].mean(), rel_tol=1e-6)
