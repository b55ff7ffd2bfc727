"""Supermask resets and lucky-node rows through the trajectory API, the store and its views."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from analysis.views import connect
from orchestrator.store import Store
from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig
from trainers.records import LevelSummary, NodeMatch, SupermaskLayerStats
from trainers.resets import parse_reset
from trainers.trajectory import mask_driver, run_trajectory

CPU = torch.device("cpu")
SETUP = RunSetup(
    data=DataConfig("teacher_student", options={"input_dim": 6, "widths": [4, 3], "num_classes": 2, "n_train": 256,
                                                "n_test": 128, "task": "regression"}),
    model=ModelConfig("student_mlp", {"teacher_widths": [4, 3], "multiplier": 2}),
    train=TrainConfig(lr=0.05, momentum=0.9, weight_decay=0.0, batch_size=64, epochs=2, schedule="cosine"),
    prune=PruneConfig(rate=0.5, levels=2, schedule="iterative"),
    seed=0,
)


@pytest.fixture(scope="module")
def run():
    records = []
    res = run_trajectory(SETUP, ["rewind", "reinit", "supermask", "supermask_kaiming"], device=CPU,
                         on_record=records.append)
    return res, records


def test_supermask_resets_keep_the_tickets_counts_layer_by_layer(run):
    res, records = run
    sm = [r for r in records if isinstance(r, SupermaskLayerStats)]
    assert {(r.level, r.reset) for r in sm} == {(lv, m) for lv in (1, 2) for m in ("supermask", "supermask_kaiming")}
    for r in sm:
        ticket = res.masks[r.level][r.layer]
        assert r.kept == int(ticket.sum()) and r.params == ticket.numel()
        assert 0.0 <= r.jaccard_ticket <= 1.0
        d = r.density
        assert r.jaccard_chance == pytest.approx(d * d / (2 * d - d * d))
    sums = {(s.level, s.reset): s for s in res.summaries}
    for level in (1, 2):
        # the supermask's density is the ticket's, so the levels line up in the tables
        assert sums[level, "supermask"].density == pytest.approx(sums[level, "rewind"].density)
        assert math.isnan(sums[level, "supermask"].best_test_accuracy)  # regression
        assert sums[level, "supermask"].best_test_loss > 0


def test_lucky_node_rows_for_the_dense_run_and_every_trained_branch(run):
    _, records = run
    nodes = [r for r in records if isinstance(r, NodeMatch)]
    per_run = {}
    for r in nodes:
        per_run.setdefault((r.level, r.reset), []).append(r)
    expected = {(0, "dense")} | {(lv, m) for lv in (1, 2) for m in ("rewind", "reinit")}
    assert set(per_run) == expected  # supermasks train no weights: no rows
    for rows in per_run.values():
        assert sorted((r.layer, r.node) for r in rows) == [(0, n) for n in range(8)] + [(1, n) for n in range(6)]


def test_a_supermask_cannot_drive_the_masks():
    bad = dataclasses.replace(SETUP, prune=dataclasses.replace(SETUP.prune, mask_driver="supermask"))
    with pytest.raises(ValueError, match="cannot rank"):
        mask_driver(bad, ["supermask", "rewind"])
    assert mask_driver(SETUP, ["supermask", "reinit", "rewind"]) == "rewind"
    assert parse_reset("supermask_kaiming").mode == "supermask_kaiming"


def test_new_tables_round_trip_through_the_store_and_the_views(run, tmp_path):
    _, records = run
    store = Store(str(tmp_path / "store"))
    store.write_records("c", "u-1", "u-1", ["trial-a", "trial-b"], records)
    con = connect(store, warn=False)
    nodes = [r for r in records if isinstance(r, NodeMatch)]
    sm = [r for r in records if isinstance(r, SupermaskLayerStats)]
    for view, rows, cls in (("nodes", nodes, NodeMatch), ("supermasks", sm, SupermaskLayerStats)):
        fields = [f.name for f in dataclasses.fields(cls)]
        got = con.sql(f"SELECT {', '.join(fields)} FROM {view} WHERE trial_id = 'trial-b' "
                      f"ORDER BY level, reset, {'layer, node' if cls is NodeMatch else 'layer'}").fetchall()
        want = sorted((tuple(getattr(r, f) for f in fields) for r in rows),
                      key=lambda t: (t[0], t[1], t[2], t[3]) if cls is NodeMatch else (t[0], t[1], t[2]))
        assert len(want) > 0 and got == want  # float64 columns: bit-exact, None stays NULL
        assert con.sql(f"SELECT count(*) FROM {view}").fetchall()[0][0] == 2 * len(rows)
    levels = con.sql("SELECT best_test_loss, final_test_loss FROM levels WHERE trial_id = 'trial-a'").fetchall()
    summaries = [r for r in records if isinstance(r, LevelSummary)]
    assert sorted(levels) == sorted((s.best_test_loss, s.final_test_loss) for s in summaries)


def test_the_campaign_default_driver_skips_supermasks_and_the_committed_campaigns_plan():
    from orchestrator.spec import load_campaign, parse_campaign

    c = parse_campaign("name: s\ndata: {dataset: digits}\nmodel: {arch: mlp}\nresets: [supermask, reinit, rewind]\n")
    assert {cell.config["prune"]["mask_driver"] for cell in c.cells} == {"rewind"}
    for name in ("supermask", "lucky_nodes"):
        camp = load_campaign(Path(__file__).resolve().parents[1] / "campaigns" / f"{name}.yaml")
        assert camp.cells and {cell.config["prune"]["mask_driver"] for cell in camp.cells} == {"rewind"}
