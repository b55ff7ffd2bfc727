"""Never train the same thing twice (issue 14): real store, real Ray, ~1 s digits trainings.

* A second campaign with the same cells under another name trains nothing: every unit is
  served from the first campaign's rows, and its tables hold the first campaign's rows under
  the new name.
* A bumped trainer version stamp (trainers/versions.py) changes the unit ids: everything is
  trained again.
* A campaign that grows (1 -> 3 seeds, a new reset) runs only the new units; the cells that
  share a finished unit get its rows. A spec that changes existing cells is refused, naming
  the settings that differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from orchestrator import paths
from orchestrator.cli import main

# As tests/test_faults.py: three units (dense, rewind trajectory of 2 levels, reinit branch).
CAMPAIGN = """
name: {name}
data: {{dataset: digits}}
model: {{arch: mlp, options: {{widths: [32]}}}}
train: {{lr: 0.05, epochs: {epochs}, batch_size: 32, schedule: constant}}
{seeds}
resets: {resets}
resources: {{cpus_per_trial: 1}}
prune: {{rate: 0.5, levels: 2, schedule: iterative}}
"""
TABLES = ("trials", "levels", "metrics", "masks")
# Columns that measure the run (time, place, attempts), not the result.
VOLATILE = {"seconds", "host", "device", "attempts", "started_at", "finished_at", "campaign"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def spec(tmp: Path, name: str, *, seeds: str = "seed: 0", resets: str = "[rewind, reinit]", epochs: int = 8,
         file: str | None = None) -> Path:
    path = tmp / (file or f"{name}.yaml")
    path.write_text(CAMPAIGN.format(name=name, seeds=seeds, resets=resets, epochs=epochs))
    return path


def lth(args: list[str], ok: bool = True) -> str:
    out = CliRunner().invoke(main, args)
    if ok:
        assert out.exit_code == 0, out.output
    return out.output


def run(path: Path, store: Path) -> str:
    return lth(["run", str(path), "--store", str(store), "--no-report"])


def rows(store: Path, table: str, campaign: str) -> list[tuple]:
    """Rows of a finished (compacted, vacuumed) campaign, without the columns that measure the run."""
    rel = duckdb.sql(f"select * from read_parquet('{store}/{table}/campaign={campaign}/*.parquet', "
                     "hive_partitioning=true)")
    cols = [c for c in rel.columns if c not in VOLATILE]
    return sorted(rel.select(", ".join(cols)).fetchall(), key=repr)


def markers(store: Path, campaign: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (store / paths.units_dir(campaign)).glob("*.json")}


def test_same_cells_under_a_new_name_train_nothing(local_ray, tmp_path):
    store = tmp_path / "store"
    first = run(spec(tmp_path, "first"), store)
    assert "dense 1 ran/0 skipped, trajectory 1 ran/0 skipped, branch 1 ran/0 skipped" in first, first
    second = run(spec(tmp_path, "second"), store)
    assert ("dense 0 ran/0 skipped/1 reused, trajectory 0 ran/0 skipped/1 reused, "
            "branch 0 ran/0 skipped/1 reused") in second, second
    assert "reused 3" in second  # the progress line counts them apart too
    for table in TABLES:
        a, b = rows(store, table, "first"), rows(store, table, "second")
        assert a and a == b, f"{table}: the reusing campaign's rows differ from the computing one's"
    for uid, m in markers(store, "second").items():
        assert m["status"] == "done" and m["reused_from"] == "first" and m["attempts"] == 0, (uid, m)
        assert markers(store, "first")[uid]["status"] == "done"
    # unit_id names the computing unit in both campaigns
    units = duckdb.sql(f"select distinct campaign, unit_id from read_parquet('{store}/levels/*/*.parquet', "
                       "hive_partitioning=true)").fetchall()
    assert {u for c, u in units if c == "first"} == {u for c, u in units if c == "second"} == set(markers(store, "first"))
    # a third campaign reusing the reuser still names the campaign that computed the units
    run(spec(tmp_path, "third"), store)
    assert {m["reused_from"] for m in markers(store, "third").values()} == {"first"}
    # rerunning the reuser resumes: nothing to do, nothing reused again
    again = run(spec(tmp_path, "second"), store)
    assert "dense 0 ran/1 skipped, trajectory 0 ran/1 skipped, branch 0 ran/1 skipped" in again, again
    assert rows(store, "levels", "second") == rows(store, "levels", "first")


def test_a_bumped_version_stamp_forces_retraining(local_ray, tmp_path, monkeypatch):
    from trainers.datasets import DATASETS

    store = tmp_path / "store"
    run(spec(tmp_path, "old_code"), store)
    monkeypatch.setitem(DATASETS.versions, "digits", DATASETS.versions["digits"] + 1)
    out = run(spec(tmp_path, "new_code"), store)
    assert "dense 1 ran/0 skipped, trajectory 1 ran/0 skipped, branch 1 ran/0 skipped" in out, out
    assert "reused" not in out.split("campaign new_code:")[-1]
    assert not any("reused_from" in m for m in markers(store, "new_code").values())
    assert set(markers(store, "new_code")).isdisjoint(markers(store, "old_code"))


def test_a_campaign_grows_from_one_to_three_seeds(local_ray, tmp_path):
    store = tmp_path / "store"
    run(spec(tmp_path, "grow"), store)
    before = markers(store, "grow")
    out = run(spec(tmp_path, "grow", seeds="seeds: [0, 1, 2]", file="grow3.yaml"), store)
    assert "extended: only new units run" in out
    assert "dense 2 ran/1 skipped, trajectory 2 ran/1 skipped, branch 2 ran/1 skipped" in out, out
    after = markers(store, "grow")
    assert len(after) == 9 and all(after[u] == m for u, m in before.items())  # seed 0's units untouched
    trials = rows(store, "trials", "grow")
    assert len(trials) == 6
    levels = duckdb.sql(f"select trial_id, unit_id, level, reset, count(*) n from read_parquet("
                        f"'{store}/levels/campaign=grow/*.parquet') group by all").fetchall()
    assert {n for *_, n in levels} == {1} and len(levels) == 6 * 3  # dense + 2 levels per cell, once each
    from orchestrator.campaigns import spec_versions
    from orchestrator.store import Store

    versions = spec_versions(Store(str(store)), "grow")
    assert [n for n, _, _ in versions] == [1, 2] and all(date.startswith("20") for _, date, _ in versions)
    assert "seeds: [0, 1, 2]" in (store / versions[1][2]).read_text()


def test_a_new_reset_gets_the_rows_of_the_finished_units_it_shares(local_ray, tmp_path):
    """resets [rewind] -> [rewind, reinit]: the new cell shares the finished dense run and
    trajectory; only the reinit branch trains, and the new cell gets the shared units' rows
    (the committer replaces those units' rows with rows for both cells, never duplicating)."""
    store = tmp_path / "store"
    run(spec(tmp_path, "resets", resets="[rewind]"), store)
    out = run(spec(tmp_path, "resets", file="resets2.yaml"), store)
    assert "dense 0 ran/1 skipped, trajectory 0 ran/1 skipped, branch 1 ran/0 skipped" in out, out
    trials = duckdb.sql(f"select trial_id, reset, status from read_parquet('{store}/trials/campaign=resets/*.parquet')"
                        ).fetchall()
    assert sorted((r, s) for _, r, s in trials) == [("reinit", "done"), ("rewind", "done")]
    per_cell = dict(duckdb.sql(
        f"select trial_id, count(*) from read_parquet('{store}/levels/campaign=resets/*.parquet') group by 1").fetchall())
    assert sorted(per_cell.values()) == [3, 3]  # dense + 2 levels each: the reinit cell got the dense row
    masks = duckdb.sql(f"select trial_id, count(*) from read_parquet('{store}/masks/campaign=resets/*.parquet') "
                       "group by 1").fetchall()
    assert len(masks) == 2 and masks[0][1] == masks[1][1]  # both cells get the trajectory's mask statistics
    dense = duckdb.sql(f"select * exclude (trial_id, seconds) from read_parquet('{store}/levels/campaign=resets/"
                       "*.parquet') where reset = 'dense'").fetchall()
    assert len(dense) == 2 and dense[0] == dense[1]
    # the same rows as a campaign that had both resets from the start (computed in its own store)
    fresh = tmp_path / "fresh"
    run(spec(tmp_path, "resets", file="resets3.yaml"), fresh)
    for table in TABLES:
        assert rows(store, table, "resets") == rows(fresh, table, "resets"), table


def test_a_changed_setting_is_refused_naming_it(tmp_path):
    """No Ray: registration alone decides (orchestrator/campaigns.py)."""
    from orchestrator.cli import register_campaign
    from orchestrator.plan import make_plan
    from orchestrator.spec import load_campaign
    from orchestrator.store import Store

    store = Store(str(tmp_path / "store"))
    first = load_campaign(spec(tmp_path, "fixed"))
    assert register_campaign(store, first, make_plan(first)) == "new"
    changed = load_campaign(spec(tmp_path, "fixed", seeds="seeds: [0, 1]", epochs=10, file="changed.yaml"))
    out = lth(["run", str(tmp_path / "changed.yaml"), "--store", store.uri], ok=False)
    assert "train.epochs: 8 -> 10" in out and "different spec" in out, out
    assert "seed" not in out.split("cell(s):")[1].split(". A spec")[0]  # the added seed is not a difference
    import click

    with pytest.raises(click.ClickException, match=r"changes 2 of its 2 cell\(s\): train.epochs: 8 -> 10"):
        register_campaign(store, changed, make_plan(changed))
    assert register_campaign(store, first, make_plan(first)) == "same"


def test_two_concurrent_drivers_train_a_shared_unit_once(local_ray, tmp_path):
    """Two real drivers (subprocesses on this module's Ray) of two campaigns with the same
    cells: every unit is trained by one of them; the other waits on the unit's claim
    (orchestrator/claims.py) and is served the result. Trainings are longer here (40 epochs)
    so that the two drivers, started together, overlap on the dense unit."""
    import os
    import subprocess
    import sys

    store = tmp_path / "store"
    specs = [spec(tmp_path, name, epochs=40) for name in ("alpha", "beta")]
    env = {k: v for k, v in os.environ.items() if k != "LTH_TEST_KILL_AT"}

    def start(path: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", "from orchestrator.cli import main; main()", "run", str(path), "--store",
             str(store), "--address", local_ray, "--no-report"],
            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    procs = [start(specs[0]), start(specs[1])]  # at once: both plan every unit as unfinished
    try:
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    alpha, beta = markers(store, "alpha"), markers(store, "beta")
    assert set(alpha) == set(beta) and len(alpha) == 3
    for uid in alpha:
        trained = [m for m in (alpha[uid], beta[uid]) if "reused_from" not in m]
        assert len(trained) == 1, f"{uid}: trained by {len(trained)} drivers"
        assert trained[0]["attempts"] == 1 and trained[0]["status"] == "done"
    # the dense unit: both drivers' workers asked for it at once; the one that lost the claim
    # waited for the winner's result instead of finding it done
    d = next(u for u in alpha if u.startswith("d-"))
    served = next(m for m in (alpha[d], beta[d]) if "reused_from" in m)
    assert served["waited_s"] > 0, served
    for table in TABLES:
        assert rows(store, table, "alpha") == rows(store, table, "beta"), table
    assert not list((store / paths.CLAIMS).glob("*.json"))  # every claim released


def test_recompute_retrains_a_stage_and_replaces_its_rows(local_ray, tmp_path):
    """``--recompute trajectory`` on a campaign that was served everything: the trajectory and
    the branch that depends on it train here (not served again from the computing campaign),
    the dense unit is kept, and the rows are replaced, never duplicated."""
    store = tmp_path / "store"
    run(spec(tmp_path, "origin"), store)
    run(spec(tmp_path, "copy"), store)  # served every unit from "origin"
    keys = "select trial_id, unit_id, level, reset from read_parquet('{}/levels/campaign=copy/*.parquet')"
    before = sorted(duckdb.sql(keys.format(store)).fetchall())
    refused = lth(["run", str(tmp_path / "copy.yaml"), "--store", str(store), "--recompute", "nope"], ok=False)
    assert "--recompute: 'nope' is neither a unit of campaign 'copy' nor a stage" in refused, refused
    out = lth(["run", str(tmp_path / "copy.yaml"), "--store", str(store), "--no-report", "--recompute", "trajectory"])
    assert "recomputing 2 unit(s)" in out
    assert "dense 0 ran/1 skipped, trajectory 1 ran/0 skipped, branch 1 ran/0 skipped" in out, out
    after = sorted(duckdb.sql(keys.format(store)).fetchall())
    assert after == before and len(set(after)) == len(after)  # replaced: same rows, none twice
    ms = markers(store, "copy")
    for uid, m in ms.items():
        if uid.startswith("d-"):
            assert m["reused_from"] == "origin" and "recompute" not in m
        else:
            assert "reused_from" not in m and m["recompute"] and m["status"] == "done" and m["attempts"] == 1, m
    assert rows(store, "trials", "copy") == rows(store, "trials", "origin")


def test_more_levels_continue_a_finished_trajectory(local_ray, tmp_path):
    """The same cells with 2 more levels (prune.levels 2 -> 4, rate fixed), under a new name:
    the dense run is reused, the trajectory and the branch continue from their finished level 2
    (orchestrator/continuation.py): only levels 3 and 4 are trained."""
    store = tmp_path / "store"
    run(spec(tmp_path, "two_levels"), store)
    longer = tmp_path / "four_levels.yaml"
    longer.write_text(spec(tmp_path, "four_levels").read_text().replace("levels: 2", "levels: 4"))
    out = run(longer, store)
    assert "dense 0 ran/0 skipped/1 reused, trajectory 1 ran/0 skipped, branch 1 ran/0 skipped" in out, out
    assert "2 continued from a shorter schedule" in out
    short, long_ = markers(store, "two_levels"), markers(store, "four_levels")
    for uid, m in long_.items():
        if not uid.startswith("d-"):
            assert m["status"] == "done" and m["levels_done"] == 4 and m["continued_from"]["levels"] == 2, m
            assert m["continued_from"]["campaign"] == "two_levels" and m["continued_from"]["unit"] in short
    # levels 1-2 are the short run's rows, copied (even the measured seconds), not trained again
    q = ("select reset, level, seconds, best_test_accuracy from read_parquet('{}/levels/campaign={}/*.parquet') "
         "where level between 1 and 2 order by all")
    assert duckdb.sql(q.format(store, "four_levels")).fetchall() == duckdb.sql(q.format(store, "two_levels")).fetchall()
    levels = duckdb.sql(f"select reset, level, count(*) from read_parquet('{store}/levels/campaign=four_levels/"
                        "*.parquet') group by all order by all").fetchall()
    assert levels == [("dense", 0, 2)] + [(r, lv, 1) for r in ("reinit", "rewind") for lv in (1, 2, 3, 4)], levels
    # the same rows (but the measured seconds) as a 4-level run from scratch
    fresh = tmp_path / "fresh"
    run(longer, fresh)
    for table in TABLES:
        assert rows(store, table, "four_levels") == rows(fresh, table, "four_levels"), table


def test_adding_two_levels_to_a_campaign_runs_only_the_new_levels(local_ray, tmp_path):
    """The same campaign name with prune.levels 2 -> 4: an extension. Its cells (new trial ids:
    levels is a setting) supersede the 2-level ones, whose rows are deleted; the trajectory and
    the branch continue from level 2; the tables equal a 4-level run from scratch."""
    store = tmp_path / "store"
    run(spec(tmp_path, "deeper"), store)
    longer = tmp_path / "deeper4.yaml"
    longer.write_text(spec(tmp_path, "deeper").read_text().replace("levels: 2", "levels: 4"))
    out = run(longer, store)
    assert "extended: only new units run" in out
    assert "dense 0 ran/1 skipped, trajectory 1 ran/0 skipped, branch 1 ran/0 skipped" in out, out
    assert "2 continued from a shorter schedule" in out
    fresh = tmp_path / "fresh"
    run(longer, fresh)
    for table in TABLES:
        assert rows(store, table, "deeper") == rows(fresh, table, "deeper"), table
    assert not (store / paths.superseded("deeper")).exists()
