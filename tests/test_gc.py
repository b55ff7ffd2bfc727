"""``lth gc``: what a finished campaign no longer needs for resume, on a real run's store.

One campaign is run for real (local Ray); a second campaign that shares its dense units is
registered but not run, so those units' artifacts are still needed. Checked: a dry run lists
sizes that match the files and removes nothing; gc removes Tune's directories and the
artifacts nobody needs, keeps the shared ones, never touches the tables; the same ``lth run``
afterwards trains nothing and leaves every row as it was; ``--keep-weights`` leaves _artifacts/ out;
an unfinished campaign is refused."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from analysis.views import connect
from orchestrator import garbage, paths
from orchestrator.cli import main, register_campaign
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign
from orchestrator.store import Store

CAMPAIGN = """
name: {name}
data: {{dataset: digits}}
model: {{arch: mlp, options: {{widths: [16]}}}}
train: {{lr: 0.05, epochs: 1, batch_size: 128, schedule: constant}}
prune: {{rate: {rate}, levels: 2}}
seed: 0
resets: [rewind, reinit]
resources: {{cpus_per_trial: 1}}
"""
TABLES = ("trials", "metrics", "levels", "masks")

pytestmark = pytest.mark.timeout(600)


def rows(store: Store) -> dict[str, list[tuple]]:
    con = connect(store)
    return {t: sorted(map(str, con.sql(f"SELECT * FROM {t}").fetchall())) for t in TABLES}


def sizes(store: Store, prefix: str) -> int:
    return sum(store.fs.get_file_info(store.full(p)).size for p in store.list(prefix))


@pytest.fixture(scope="module")
def ran(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("gc")
    spec = root / "a.yaml"
    spec.write_text(CAMPAIGN.format(name="a", rate=0.5))
    store = root / "store"
    result = CliRunner().invoke(main, ["run", str(spec), "--store", str(store), "--no-report"])
    assert result.exit_code == 0, result.output
    st = Store(str(store))
    # b shares a's dense unit (same data, model, training, seed), not its trajectories; registered, not run
    b = parse_campaign(CAMPAIGN.format(name="b", rate=0.3))
    register_campaign(st, b, make_plan(b))
    return spec, store, st


def test_refuses_an_unfinished_campaign(ran):
    _, store, _ = ran
    result = CliRunner().invoke(main, ["gc", "b", "--store", str(store)])
    assert result.exit_code == 1
    assert "campaign 'b' is not finished: 3 of 3 units have not run to the end" in result.output
    result = CliRunner().invoke(main, ["gc", "nope", "--store", str(store)])
    assert result.exit_code == 1 and "campaign 'nope': not in store" in result.output


def test_dry_run_then_gc_then_rerun_trains_nothing(ran):
    spec, store, st = ran
    plan_a = make_plan(parse_campaign(CAMPAIGN.format(name="a", rate=0.5)))
    plan_b = make_plan(parse_campaign(CAMPAIGN.format(name="b", rate=0.3)))
    shared = set(plan_a.units) & set(plan_b.units)
    assert [plan_a.units[u].stage for u in shared] == ["dense"]
    before = rows(st)
    tune = garbage.tune_dirs(st, "a")
    assert tune, "lth run left no Tune experiment directory to collect"
    with_artifacts = {u for u in plan_a.units if st.list(paths.artifacts_dir(u))}
    assert {plan_a.units[u].stage for u in with_artifacts} == {"dense", "trajectory"}  # branches save none

    dry = CliRunner().invoke(main, ["gc", "a", "--store", str(store), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    listed = {line.split()[2] for line in dry.output.splitlines() if "  (" in line}
    assert listed == set(tune) | {paths.artifacts_dir(u) for u in with_artifacts - shared}
    expected = sum(sizes(st, p) for p in listed)
    assert f"a: {len(listed)} item(s), would free " in dry.output and "(dry run)" in dry.output
    assert all(st.exists(p) for p in listed)  # nothing removed
    assert sum(g.bytes for g in garbage.collect(st, "a")) == expected
    keep = CliRunner().invoke(main, ["gc", "a", "--store", str(store), "--dry-run", "--keep-weights"])
    assert keep.exit_code == 0, keep.output
    assert {line.split()[2] for line in keep.output.splitlines() if "  (" in line} == set(tune)

    done = CliRunner().invoke(main, ["gc", "a", "--store", str(store)])
    assert done.exit_code == 0, done.output
    assert not any(st.exists(p) for p in listed)
    assert all(st.exists(paths.artifacts_dir(u)) for u in shared)  # b still needs its dense weights
    assert rows(st) == before  # the tables are the record: untouched

    again = CliRunner().invoke(main, ["run", str(spec), "--store", str(store), "--no-report"])
    assert again.exit_code == 0, again.output
    assert "dense 0 ran/1 skipped, trajectory 0 ran/1 skipped, branch 0 ran/1 skipped" in again.output
    assert rows(st) == before

    # a later campaign with a's cells: a unit whose artifacts gc removed (the trajectory's masks,
    # which the branch after it loads) is trained again, not served; the others are served
    c = spec.parent / "c.yaml"
    c.write_text(CAMPAIGN.format(name="c", rate=0.5))
    later = CliRunner().invoke(main, ["run", str(c), "--store", str(store), "--no-report"])
    assert later.exit_code == 0, later.output
    assert "dense 0 ran/0 skipped/1 reused, trajectory 1 ran/0 skipped" in later.output, later.output
    results = {"levels": "trial_id, unit_id, level, reset, density, best_test_accuracy, final_test_accuracy",
               "metrics": "trial_id, unit_id, level, reset, epoch, split, loss, accuracy",
               "masks": "trial_id, unit_id, level, layer, kind, kept, travel_kept"}
    con = connect(st)
    for table, cols in results.items():  # the retrained trajectory computed what a's did, bit for bit
        got = [sorted(con.sql(f"SELECT {cols} FROM {table} WHERE campaign = '{name}'").fetchall()) for name in "ac"]
        assert got[0] == got[1] and got[0], table


def test_tune_directories_name_their_campaign_exactly():
    # campaign names may contain '-', so "a-dense"'s directories must not be taken for "a"'s
    for campaign in ("a", "a-dense", "a.b_c-1"):
        for stage in (None, "dense", "branch"):
            name = paths.tune_experiment(campaign, stage)
            assert paths.tune_experiment_campaign(name) == campaign, name
    assert paths.tune_experiment_campaign("a-dense-20261207-230014") is None  # not a directory we name
