"""Trials that fail in three different ways inside one real Ray-backed `lth run`:

- *raises*: CIFAR-10 files that are present pass the spec (validation checks presence) but
  are not the real batches, so loading them raises ValueError (md5) in the trial;
- *exceeds its memory*: a hidden width of 10**12 asks the allocator for 256 TB (more than
  any address space, so it fails at once whatever the overcommit policy and hurts no one);
- *diverges*: lr 1e6 makes the loss non-finite.

Each ends with its status and reason in `trials`; the raising ones are retried exactly
`max_failures` times, the diverged one not at all; the healthy cell's rows are complete
and unduplicated; `lth status` shows all of it.
"""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.plan import make_plan
from orchestrator.spec import load_campaign
from orchestrator.store import Store

MAX_FAILURES = 1
CAMPAIGN = f"""
name: failures
data: {{dataset: digits, root: $LTH_TEST_CIFAR10_ROOT}}
model: {{arch: mlp}}
train: {{epochs: 1, batch_size: 128, schedule: constant}}
prune: {{rate: 0.5, levels: 1}}
seed: 0
reset: rewind
resources: {{cpus_per_trial: 1}}
max_failures: {MAX_FAILURES}
grid:
  dataset: [digits, cifar10]
  model.options.widths: [[16], [1000000000000]]
  lr: [0.05, 1000000.0]
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, local_ray, cifar10_placeholders):
    root = tmp_path_factory.mktemp("failures")
    spec = root / "failures.yaml"
    spec.write_text(CAMPAIGN)
    store = root / "store"
    result = CliRunner().invoke(main, ["run", str(spec), "--store", str(store), "--no-report"])
    plan = make_plan(load_campaign(spec))
    trials = {r["trial_id"]: r for r in Store(str(store)).read_table("trials", "failures").to_pylist()}
    return plan, store, result, trials


def kind(cell) -> str:
    width = cell.axes["model.options.widths"][0]
    if cell.axes["dataset"] == "cifar10":
        return "raises"
    if width > 10**9:
        return "memory"
    return "diverges" if cell.axes["lr"] > 1 else "healthy"


def test_campaign_finishes_with_every_cell_recorded(finished):
    plan, _, result, trials = finished
    assert result.exit_code == 1, result.output  # failed cells: non-zero exit, but the run completed
    assert set(trials) == {c.trial_id for c in plan.cells}
    by_kind: dict[str, list] = {}
    for c in plan.cells:
        by_kind.setdefault(kind(c), []).append(trials[c.trial_id])
    assert [r["status"] for r in by_kind["healthy"]] == ["done"]
    assert by_kind["healthy"][0]["reason"] is None
    assert [r["status"] for r in by_kind["diverges"]] == ["diverged"]
    for row in by_kind["raises"]:
        assert row["status"] == "failed" and "ValueError" in row["reason"] and "md5" in row["reason"], row
        assert row["attempts"] == MAX_FAILURES + 1  # retried, but not forever
    for row in by_kind["memory"]:
        assert row["status"] == "failed" and "can't allocate memory" in row["reason"], row
        assert row["attempts"] == MAX_FAILURES + 1
    diverged = by_kind["diverges"][0]
    assert diverged["attempts"] == 1, diverged  # a divergence is a result, never retried
    assert "finite" in diverged["reason"] or "diverg" in diverged["reason"], diverged


def test_healthy_cell_rows_are_complete_and_unique(finished):
    plan, store, _, _ = finished
    healthy = next(c for c in plan.cells if kind(c) == "healthy")
    st = Store(str(store))
    levels = st.read_table("levels", "failures", warn=False)
    mine = levels.filter(pc.equal(levels["trial_id"], healthy.trial_id))
    keys = sorted(zip(mine["level"].to_pylist(), mine["reset"].to_pylist(), strict=True), key=str)
    assert len(keys) == len(set(keys)), keys  # no duplicates
    assert sorted({lv for lv, _ in keys}) == list(range(healthy.setup.prune.levels + 1))
    assert set(mine["status"].to_pylist()) == {"done"}
    masks = st.read_table("masks", "failures", warn=False)
    assert pc.sum(pc.equal(masks["trial_id"], healthy.trial_id)).as_py() > 0
    # the failed cells wrote no measurement rows at all
    failed = {c.trial_id for c in plan.cells if kind(c) in ("raises", "memory")}
    assert not failed & set(levels["trial_id"].to_pylist())


def test_status_shows_the_failures(finished):
    plan, store, _, trials = finished
    out = CliRunner().invoke(main, ["status", "failures", "--store", str(store)])
    assert out.exit_code == 0, out.output
    n = {k: sum(kind(c) == k for c in plan.cells) for k in ("healthy", "raises", "memory", "diverges")}
    assert f"cells done {n['healthy']}, failed {n['raises'] + n['memory']}, diverged {n['diverges']}, pending 0" in out.output
    assert "driver: finished" in out.output and "running 0" in out.output
    for trial_id, row in trials.items():
        if row["status"] != "done":
            assert f"{row['status']} cell {trial_id}: {row['reason']}" in out.output
    assert "bad file" not in out.output


def test_unit_markers_name_the_error(finished):
    plan, store, _, trials = finished
    st = Store(str(store))
    for uid, unit in plan.units.items():
        m = st.get_json(f"_units/campaign=failures/{uid}.json")
        if unit.stage != "dense":
            continue  # downstream of a failed dense unit nothing ran
        assert m is not None and m["status"] in ("done", "failed", "diverged"), (uid, m)
        if m["status"] == "failed":
            assert m["reason"], json.dumps(m)
