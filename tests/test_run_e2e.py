"""End to end: `lth run` on a real local Ray, then the four tables read back with DuckDB and
pyarrow. One grid value makes its dense unit fail (CIFAR-10 files that are present, so the spec
validates, but are not the real batches, so loading them fails torchvision's md5 check), so the
same run also shows that a failed unit marks its cells failed and loses no other cell's rows."""

from __future__ import annotations

import json

import duckdb
import pyarrow.dataset as pds
import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.plan import make_plan
from orchestrator.spec import load_campaign

CAMPAIGN = """
name: e2e
data: {dataset: digits, root: $LTH_TEST_CIFAR10_ROOT}
model: {arch: mlp}
train: {lr: 0.05, epochs: 1, batch_size: 128, schedule: constant}
prune: {rate: 0.5, levels: 2}
seed: 0
resets: [rewind, reinit]
resources: {cpus_per_trial: 1}
max_failures: 0
grid:
  dataset: [digits, cifar10]
  schedule: [oneshot, iterative]
"""

# the CIFAR-10 placeholder files of tests/conftest.py, named by LTH_TEST_CIFAR10_ROOT in the spec
pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("cifar10_placeholders")]


@pytest.fixture(scope="module")
def finished(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    spec = root / "e2e.yaml"
    spec.write_text(CAMPAIGN)
    store = root / "store"
    result = CliRunner().invoke(main, ["run", str(spec), "--store", str(store)])
    return spec, store, result


def count(store, table: str, where: str = "") -> int:
    q = f"select count(*) from read_parquet('{store}/{table}/*/*.parquet', hive_partitioning=true) {where}"
    return duckdb.sql(q).fetchall()[0][0]


def test_rows_match_the_plan(finished):
    spec, store, result = finished
    assert result.exit_code == 1, result.output  # a failed cell makes `lth run` exit non-zero
    assert "cells: done 4, failed 4" in result.output
    plan = make_plan(load_campaign(spec))
    bad = {c.trial_id for c in plan.cells if c.axes["dataset"] == "cifar10"}
    good = [c for c in plan.cells if c.trial_id not in bad]
    levels = plan.cells[0].setup.prune.levels

    # trials: every cell, with its status; the failed ones name the failing unit and error
    trials = duckdb.sql(
        f"select trial_id, status, reason, campaign from read_parquet('{store}/trials/*/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert {t[0] for t in trials} == {c.trial_id for c in plan.cells}
    assert {t[3] for t in trials} == {"e2e"}
    for trial_id, status, reason, _ in trials:
        if trial_id in bad:
            assert status == "failed" and "md5" in reason, reason
        else:
            assert status == "done" and reason is None

    # levels: one row per training per served cell -- the plan's count, over the cells that ran
    served = sum(u.trainings * len([t for t in u.serves if t not in bad]) for u in plan.units.values())
    assert served == len(good) * (1 + levels)
    assert count(store, "levels") == served

    # metrics: each training of each cell has as many rows as the dense run has (epoch, split) pairs
    per_training = duckdb.sql(
        f"select count(distinct (epoch, split)) from read_parquet('{store}/metrics/*/*.parquet') where level = 0"
    ).fetchall()[0][0]
    assert per_training >= 2
    assert count(store, "metrics") == served * per_training
    dupes = duckdb.sql(
        f"""select count(*) from (select trial_id, level, reset, epoch, split, count(*) n
            from read_parquet('{store}/metrics/*/*.parquet') group by all having n > 1)"""
    ).fetchall()[0][0]
    assert dupes == 0

    # masks: one weight row per prunable layer per level per cell of the trajectory (channel rows of
    # structured levels and BN rows are counted in test_stats / test_trajectory)
    from trainers.models import build_model

    model = build_model(good[0].setup.model, (1, 8, 8), 10, 0)
    assert count(store, "masks", "where kind = 'weight'") == len(good) * levels * len(model.prunable())

    # the same counts through pyarrow.dataset
    for table, expected in (("trials", len(plan.cells)), ("levels", served), ("metrics", served * per_training)):
        ds = pds.dataset(store / table, format="parquet", partitioning="hive")
        assert ds.count_rows() == expected

    # shared rows name the unit that computed them
    units = duckdb.sql(
        f"select distinct unit_id from read_parquet('{store}/levels/*/*.parquet') where level = 0"
    ).fetchall()
    assert len(units) == 1 and units[0][0].startswith("d-")


def test_status_and_rerun_is_idempotent(finished):
    spec, store, _ = finished
    runner = CliRunner()
    status = runner.invoke(main, ["status", "--store", str(store)])
    assert status.exit_code == 0, status.output
    assert "e2e: cells done 4, failed 4, diverged 0, pending 0" in status.output
    before = {t: count(store, t) for t in ("trials", "metrics", "levels", "masks")}
    again = runner.invoke(main, ["run", str(spec), "--store", str(store)])
    # done units are skipped; the failed dense unit is retried (and fails again)
    assert "dense 1 ran/1 skipped" in again.output, again.output
    assert "trajectory 0 ran/2 skipped/2 blocked" in again.output
    assert {t: count(store, t) for t in before} == before
    dense = make_plan(load_campaign(spec)).stage("dense")
    assert sorted(u.setup.data.dataset for u in dense) == ["cifar10", "digits"]
    for u in dense:  # the digits run is done; the CIFAR-10 placeholders fail to load, again
        marker = json.loads((store / "_units" / "campaign=e2e" / f"{u.unit_id}.json").read_text())
        assert marker["status"] == ("failed" if u.setup.data.dataset == "cifar10" else "done"), marker
        assert (marker["reason"] is not None) == (u.setup.data.dataset == "cifar10")


def test_validate_prints_planned_vs_naive(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text(CAMPAIGN)
    out = CliRunner().invoke(main, ["validate", str(spec)])
    assert out.exit_code == 0, out.output
    assert "cells: 8" in out.output and "planned vs" in out.output


def test_changed_spec_under_same_name_is_refused(finished, tmp_path):
    _, store, _ = finished
    spec = tmp_path / "c.yaml"
    spec.write_text(CAMPAIGN.replace("lr: 0.05", "lr: 0.07"))
    out = CliRunner().invoke(main, ["run", str(spec), "--store", str(store)])
    assert out.exit_code != 0 and "different spec" in out.output and "new name" in out.output


def test_bad_spec_refused_before_ray(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text(CAMPAIGN.replace("schedule: [oneshot, iterative]", "schedule: [oneshot, sometimes]"))
    out = CliRunner().invoke(main, ["run", str(spec), "--store", str(tmp_path / "s")])
    assert out.exit_code != 0 and "grid.schedule[1]" in out.output
    assert not (tmp_path / "s").exists()
