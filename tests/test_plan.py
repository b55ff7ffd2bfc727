"""Plan: grid cells -> shared staged units; counts derived from the grid's axes."""

from __future__ import annotations

from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign

BASE = """
name: p
data: {dataset: digits}
model: {arch: mlp}
train: {epochs: 2, batch_size: 100}
prune: {rate: 0.5, levels: 3}
"""


def plan_of(extra: str):
    return make_plan(parse_campaign(BASE + extra))


def test_units_are_shared_across_cells():
    lrs, seeds, schedules, structures, resets = [0.1, 0.01], [0, 1], ["oneshot", "iterative"], ["unstructured", "structured"], ["rewind", "reinit", "finetune"]
    plan = plan_of(
        f"seeds: {seeds}\nresets: {resets}\ngrid:\n  lr: {lrs}\n  schedule: {schedules}\n  structure: {structures}\n"
    )
    n_dense = len(lrs) * len(seeds)
    n_traj = n_dense * len(schedules) * len(structures)
    assert len(plan.cells) == n_traj * len(resets)
    assert [len(plan.stage(s)) for s in ("dense", "trajectory", "branch")] == [n_dense, n_traj, n_traj * (len(resets) - 1)]
    for cell in plan.cells:
        units = [plan.units[u] for u in plan.cell_units[cell.trial_id]]
        dense, traj = units[0], units[1]
        assert cell.trial_id in dense.serves and cell.trial_id in traj.mask_serves
        assert dense.setup.train.lr == cell.setup.train.lr and dense.setup.seed == cell.setup.seed
        assert traj.setup.prune == cell.setup.prune
        if cell.reset == "rewind":  # the driver: its rows come from the trajectory unit
            assert len(units) == 2 and cell.trial_id in traj.serves
        else:
            assert units[2].reset == cell.reset and units[2].serves == (cell.trial_id,)
            assert units[2].depends == (dense.unit_id, traj.unit_id)
    s = plan.summary()
    levels = 3
    assert s.trainings_naive == len(plan.cells) * (1 + levels)
    assert s.trainings_planned == n_dense + (n_traj + n_traj * (len(resets) - 1)) * levels
    assert s.epochs_planned == 2 * s.trainings_planned and s.epochs_naive == 2 * s.trainings_naive
    # every cell gets 1 + levels rows in `levels`, whichever unit computed them
    assert plan.expected_level_rows() == len(plan.cells) * (1 + levels)


def test_ids_are_stable_and_settings_sensitive():
    a = plan_of("grid:\n  lr: [0.1, 0.01]\n")
    b = plan_of("grid:\n  lr: [0.1, 0.01]\n")
    assert list(a.units) == list(b.units)
    c = plan_of("grid:\n  lr: [0.1, 0.02]\n")
    assert set(a.units) & set(c.units)  # the lr=0.1 units are the same
    assert set(a.units) != set(c.units)


def test_reinit_only_trains_an_unserved_driver():
    plan = plan_of("reset: reinit\n")
    (traj,) = plan.stage("trajectory")
    assert traj.reset == "rewind" and traj.serves == ()
    (branch,) = plan.stage("branch")
    assert branch.reset == "reinit"
    assert plan.expected_level_rows() == 1 + 3


def test_rewind_k_snapshots_requested_from_dense():
    plan = plan_of("resets: [rewind@5, reinit]\n")
    (dense,) = plan.stage("dense")
    assert dense.rewind_iterations == (5,)
    (traj,) = plan.stage("trajectory")
    assert traj.reset == "rewind@5"


def test_summary_lines_name_planned_and_naive():
    lines = plan_of("seeds: [0, 1]\ngrid:\n  schedule: [oneshot, iterative]\n").summary().lines()
    assert lines[0] == "cells: 4"
    assert any(line.startswith("epochs:") and "planned vs" in line and "naive" in line for line in lines)
