"""`lth report` sections for supermasks and lucky nodes, and the loss report of a regression
campaign, on stores written from real tiny trajectories (no Ray: rows written as units would)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from analysis.report import build_report
from orchestrator.store import Store
from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig
from trainers.records import LevelSummary, MaskLayerStats, SupermaskLayerStats
from trainers.trajectory import run_trajectory

CPU = torch.device("cpu")
RESETS = ["rewind", "reinit", "supermask"]


def _write_campaign(store: Store, campaign: str, setup: RunSetup, seeds=(0, 1), resets=tuple(RESETS)) -> list:
    """Run each seed's trajectory and write its rows as the planner's cells would hold them: one
    cell per (seed, reset); dense rows and mask statistics go to every cell of the seed."""
    everything = []
    for seed in seeds:
        s = RunSetup(setup.data, setup.model, setup.train, setup.prune, seed)
        records = []
        run_trajectory(s, list(resets), device=CPU, on_record=records.append)
        everything += [(seed, r) for r in records]
        trials = {r: f"t-{seed}-{r}" for r in resets}
        shared = [r for r in records if isinstance(r, MaskLayerStats) or r.reset == "dense"]
        store.write_records(campaign, f"u-{seed}-shared", f"u-{seed}-shared", list(trials.values()), shared)
        for reset, tid in trials.items():
            own = [r for r in records if not isinstance(r, MaskLayerStats) and r.reset == reset]
            store.write_records(campaign, f"u-{seed}-{reset}", f"u-{seed}-{reset}", [tid], own)
        config = {"data": {"dataset": s.data.dataset, "options": s.data.options}, "prune": {"method": s.prune.method}}
        store.write_table("trials", campaign, f"trials-{seed}", [
            {"trial_id": tid, "dataset": s.data.dataset, "arch": s.model.arch, "lr": s.train.lr,
             "schedule": s.prune.schedule, "reset": reset, "structure": s.prune.structure, "seed": seed,
             "axes_json": json.dumps({"reset": reset, "seed": seed}), "config_json": json.dumps(config),
             "status": "done", "attempts": 1, "units_json": "[]"} for reset, tid in trials.items()])
    return everything


def test_supermask_section_reports_accuracy_and_jaccard_from_the_rows(tmp_path):
    setup = RunSetup(DataConfig("digits"), ModelConfig("mlp", {"widths": [32]}),
                     TrainConfig(lr=0.1, batch_size=128, epochs=1, schedule="cosine"),
                     PruneConfig(rate=0.5, levels=2), 0)
    store = Store(str(tmp_path / "s"))
    rows = _write_campaign(store, "sm", setup)
    rep = build_report(store, "sm", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Supermasks (edge-popup)" in md and "supermask_jaccard.png" in md
    assert (tmp_path / "out" / "supermask_jaccard.png").exists() and (tmp_path / "out" / "supermask_accuracy.png").exists()
    # the Jaccard cell of (supermask, level 2, out.weight) is the mean over seeds of the rows
    j = [r.jaccard_ticket for _, r in rows if isinstance(r, SupermaskLayerStats) and r.level == 2
         and r.layer == "out.weight"]
    c = [r.jaccard_chance for _, r in rows if isinstance(r, SupermaskLayerStats) and r.level == 2
         and r.layer == "out.weight"]
    assert f"{sum(j) / 2:.3f} ({sum(c) / 2:.3f})" in md
    acc = [r.best_test_accuracy for _, r in rows if isinstance(r, LevelSummary) and r.reset == "supermask"
           and r.level == 1]
    assert f"{100 * sum(acc) / 2:.1f} ± {100 * pd.Series(acc).std():.1f}" in md
    assert "Signed constant" not in md  # only one supermask reset in this campaign: no init comparison
    assert rep.files


def test_a_regression_campaign_is_reported_on_test_loss_with_the_lucky_node_section(tmp_path):
    setup = RunSetup(
        DataConfig("teacher_student", options={"input_dim": 6, "widths": [4, 3], "num_classes": 2, "n_train": 256,
                                               "n_test": 128, "task": "regression"}),
        ModelConfig("student_mlp", {"teacher_widths": [4, 3], "multiplier": 2}),
        TrainConfig(lr=0.05, weight_decay=0.0, batch_size=64, epochs=2, schedule="cosine"),
        PruneConfig(structure="structured", method="l1_structured", rate=0.5, levels=2), 0)
    store = Store(str(tmp_path / "s"))
    rows = _write_campaign(store, "ts", setup)
    rep = build_report(store, "ts", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "on test loss" in md and "## Lucky nodes (teacher–student)" in md and "regression" in md
    comp = pd.read_csv(tmp_path / "out" / "comparison.csv")
    for level in (1, 2):
        got = comp[comp["level"] == level].iloc[0]
        for reset in ("rewind", "reinit"):
            want = [r.best_test_loss for _, r in rows if isinstance(r, LevelSummary) and r.reset == reset
                    and r.level == level]
            assert got[f"{reset} loss"] == pytest.approx(sum(want) / len(want))
        assert got["pairs"] == 2
    assert list(rep.verdicts.columns)[-1] == "verdict"
    assert "Does structured IMP keep the lucky nodes?" in md


def test_bn_bias_signs_per_layer_of_a_batchnorm_net(tmp_path):
    setup = RunSetup(DataConfig("digits"), ModelConfig("resnet", {"depth": 8, "width": 4}),
                     TrainConfig(lr=0.1, batch_size=128, epochs=1, schedule="cosine"), PruneConfig(rate=0.5, levels=1), 0)
    store = Store(str(tmp_path / "s"))
    rows = _write_campaign(store, "bn", setup, seeds=(0,), resets=("rewind", "supermask"))
    build_report(store, "bn", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## BatchNorm bias signs" in md and (tmp_path / "out" / "bn_bias_sign.png").exists()
    bn = [r for _, r in rows if isinstance(r, MaskLayerStats) and r.kind == "bn" and r.level == 1]
    assert len(bn) >= 3
    shown = {cells[1]: float(cells[2]) for cells in (ln.strip("| ").split(" | ") for ln in md.splitlines())
             if cells[0] == "resnet" and len(cells) == 3}
    assert shown == {r.layer: round(100 * r.bn_negative_bias_fraction, 1) for r in bn}
    assert "## Supermasks (edge-popup)" in md  # edge-popup on a conv net with BatchNorm runs too
