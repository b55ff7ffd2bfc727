"""The bundled execution path: 32 units through a real local Ray in the barrier-free
``families`` layout (whole families of units per Tune trial). One grid value makes every
dense unit of its families raise (CIFAR-10 placeholder files: they validate, loading fails), so the same run shows that a failing unit inside a bundle
is retried (FailureConfig), then marked failed with its reason, its dependents stay blocked,
and every other unit's rows land exactly once. A rerun retries only the failed units."""

from __future__ import annotations

import duckdb
import pytest

from orchestrator.execution import families, make_bundles, run_plan
from orchestrator.ledger import UnitMarker
from orchestrator.plan import STAGES, make_plan
from orchestrator.spec import load_campaign
from orchestrator.store import Store

CAMPAIGN = """
name: scale_test
data: {dataset: digits}
model: {arch: mlp}
train: {lr: 0.05, epochs: 1, batch_size: 64, schedule: constant}
prune: {rate: 0.5, levels: 1}
seeds: [0, 1, 2, 3]
resets: [rewind, reinit, finetune]
resources: {cpus_per_trial: 1}
max_failures: 1
grid:
  data:
  - {dataset: digits}
  - {dataset: cifar10, root: $LTH_TEST_CIFAR10_ROOT}
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, cifar10_placeholders):
    spec = tmp_path_factory.mktemp("scale") / "c.yaml"
    spec.write_text(CAMPAIGN)
    c = load_campaign(spec)
    return c, make_plan(c)


@pytest.fixture(scope="module")
def finished(local_ray, campaign, tmp_path_factory):
    c, plan = campaign
    store = Store(tmp_path_factory.mktemp("store"))
    return store, run_plan(c, plan, store)


def bad_units(plan) -> set[str]:
    return {u.unit_id for u in plan.units.values() if u.setup.data.dataset == "cifar10"}


def test_bundles_cover_every_unit_once_in_dependency_order(campaign):
    _, plan = campaign
    units = list(plan.units.values())
    fams = families(units)
    assert len(fams) == 8 and all(len(f) == 4 for f in fams)  # dense, trajectory, 2 branches
    bundles = make_bundles(fams, slots=2)
    flat = [uid for b in bundles for uid in b]
    assert sorted(flat) == sorted(plan.units)  # each unit exactly once
    assert len(bundles) >= 2 * 2  # enough bundles to keep both slots busy
    sizes = [len(b) for b in bundles]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 4  # guided: shrinking, last = one family
    for b in bundles:  # a unit comes after the units it depends on
        pos = {uid: i for i, uid in enumerate(b)}
        for uid in b:
            assert all(pos[d] < pos[uid] for d in plan.units[uid].depends)
    assert make_bundles(fams, slots=2) == bundles  # deterministic


def test_rows_exactly_once_and_failures_recorded(campaign, finished):
    _, plan = campaign
    store, summary = finished
    bad = bad_units(plan)
    assert summary.layout == "families"
    assert summary.bundles < len(plan.units) / 3  # units really are packed
    assert summary.units["dense"] == {"ran": 8, "skipped": 0, "failed": 4, "blocked": 0}
    assert summary.units["trajectory"]["blocked"] == 4 and summary.units["branch"]["blocked"] == 8
    for u in plan.units.values():
        m = UnitMarker.load(store, plan.campaign, u.unit_id)
        if u.unit_id in bad and u.stage == "dense":
            # retried once by Tune (max_failures: 1), then marked failed with the unit's own error
            assert m.status == "failed" and m.attempts == 2 and "md5" in m.reason, m
        elif bad & {u.unit_id, *u.depends}:
            assert not m.exists  # blocked by its failed dense run: never started
        else:
            assert m.status == "done" and m.attempts == 1, m

    good_cells = [c for c in plan.cells if c.axes["data"]["dataset"] == "digits"]
    assert summary.cells == {"done": len(good_cells), "diverged": 0, "failed": len(plan.cells) - len(good_cells),
                             "pending": 0}
    levels = f"read_parquet('{store.root}/levels/*/*.parquet')"
    expected = sum(u.trainings * len(u.serves) for u in plan.units.values() if u.unit_id not in bad
                   and not bad & set(u.depends))
    assert duckdb.sql(f"select count(*) from {levels}").fetchall()[0][0] == expected
    dupes = duckdb.sql(f"select count(*) from (select trial_id, level, reset, count(*) n from {levels} "
                       "group by all having n > 1)").fetchall()[0][0]
    assert dupes == 0
    trials = duckdb.sql(f"select status, count(*) from read_parquet('{store.root}/trials/*/*.parquet') "
                        "group by status order by status").fetchall()
    assert trials == [("done", len(good_cells)), ("failed", len(plan.cells) - len(good_cells))]


def test_rerun_retries_only_failed_units(campaign, finished):
    c, plan = campaign
    store, _ = finished
    levels = f"read_parquet('{store.root}/levels/*/*.parquet')"
    before = duckdb.sql(f"select count(*) from {levels}").fetchall()[0][0]
    again = run_plan(c, plan, store)
    assert again.units["dense"] == {"ran": 4, "skipped": 4, "failed": 4, "blocked": 0}
    for stage in STAGES[1:]:
        assert again.units[stage]["ran"] == 0 and again.units[stage]["skipped"] == len(plan.stage(stage)) // 2
    assert duckdb.sql(f"select count(*) from {levels}").fetchall()[0][0] == before
