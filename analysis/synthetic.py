"""Synthetic stores with known numbers, written through the real store writer.

Used by the analysis tests (expected verdicts are known because the accuracies are chosen)
and by ``benchmarks/bench_queries.py`` (a 10,000-trial store). The layout mirrors what the
orchestrator writes: a shared dense unit per (dataset, arch, lr, seed) whose level-0 rows are
fanned out to every trial it serves, and one unit per trial for its pruning levels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import product

import numpy as np
import pyarrow as pa

from orchestrator.store import Store
from trainers.records import DENSE, EpochMetrics, LevelSummary, MaskLayerStats

# accuracy(cell, reset, level, seed) -> best test accuracy of that run
AccuracyFn = Callable[[dict, str, int, int], float]
LAYERS = ("fc1.weight", "fc2.weight", "fc3.weight")


def trial_id(cell: dict, reset: str, seed: int) -> str:
    parts = [cell["dataset"], cell["arch"], cell["structure"], cell["schedule"], f"lr{cell['lr']:g}", reset, f"s{seed}"]
    return "-".join(parts).replace("@", "at")


def _trial_row(cell: dict, reset: str, seed: int, units: list[str]) -> dict:
    axes = {**cell, "reset": reset, "seed": seed}
    return {
        "trial_id": trial_id(cell, reset, seed), **axes, "axes_json": json.dumps(axes, sort_keys=True),
        "config_json": json.dumps(axes, sort_keys=True), "status": "done", "reason": None, "attempts": 1,
        "host": "synthetic", "device": "cpu", "units_json": json.dumps(units), "started_at": None,
        "finished_at": None, "seconds": 1.0,
    }


def channels_kept(density: float, channels: int = 100) -> int:
    """Neurons kept per hidden layer of a synthetic structured level: weights scale as neurons squared."""
    return int(channels * density ** 0.5)


def _run_records(level: int, reset: str, density: float, best: float, epochs: int, val: bool,
                 diverged: bool = False, structured: bool = False) -> list:
    """Epoch metrics rising to ``best`` at the last-but-one epoch, then a summary and mask stats.
    ``diverged``: the last epoch's losses are NaN and the summary says "diverged" (its recorded
    accuracies stay what the run reached before, as the trainer records them)."""
    recs: list = []
    accs = [best * (0.6 + 0.4 * e / max(epochs - 1, 1)) for e in range(epochs)]
    if epochs > 1:
        accs[-1] = best - 0.002  # final slightly below best, as with a noisy last epoch
        accs[-2] = best
    for e, acc in enumerate(accs, start=1):
        for split in ("train", "test") + (("val",) if val else ()):
            loss = float("nan") if diverged and e == epochs else 1.0 - acc
            recs.append(EpochMetrics(level, reset, density, e, 10 * e, split, loss, acc, 0.1))
    recs.append(LevelSummary(
        level=level, reset=reset, density=density, status="diverged" if diverged else "done",
        reason=f"non-finite test loss after epoch {epochs}" if diverged else None, final_test_accuracy=accs[-1],
        best_test_accuracy=best, best_test_epoch=max(epochs - 1, 1), val_selected_test_accuracy=best if val else None,
        early_stop_iteration=10 * epochs if val else None, final_train_loss=1.0 - best, epochs=epochs, iterations=10 * epochs,
        seconds=0.5,
    ))
    if level > 0:
        for i, layer in enumerate(LAYERS):
            params = 1000 * (3 - i)
            layer_density = min(1.0, density * (1.0 + 0.2 * i))
            recs.append(MaskLayerStats(
                level=level, layer=layer, kind="weight", params=params, kept=int(params * layer_density),
                density=layer_density, jaccard_prev=None if level == 1 else 0.9, travel_kept=0.3 + 0.05 * i,
                travel_pruned=0.1 + 0.02 * i, bn_negative_bias_fraction=None, sign_agreement_kept=0.8,
                travel_kept_null=0.28 + 0.05 * i,
            ))
        if structured:  # channel rows of the two hidden layers (trainers/stats.py)
            for layer in LAYERS[:2]:
                recs.append(MaskLayerStats(
                    level=level, layer=layer, kind="channel", params=100, kept=channels_kept(density),
                    density=channels_kept(density) / 100, jaccard_prev=None, travel_kept=None, travel_pruned=None,
                    bn_negative_bias_fraction=None, sign_agreement_kept=None))
    return recs


def write_campaign(
    store: Store,
    campaign: str,
    cells: Sequence[dict],
    accuracy: AccuracyFn,
    *,
    resets: Sequence[str] = ("rewind", "reinit"),
    seeds: Sequence[int] = (0, 1, 2),
    levels: int = 3,
    rate: float = 0.2,
    epochs: int = 3,
    val: bool = False,
    diverges: Callable[[dict, str, int, int], bool] | None = None,
) -> list[str]:
    """Write trials, metrics, levels and masks of a campaign; return the trial ids.

    ``cells`` are dicts with dataset, arch, structure, schedule, lr (other keys become extra
    axes). Level k has density (1 - rate) ** k; the dense run's accuracy is
    ``accuracy(cell, "dense", 0, seed)``. ``diverges(cell, reset, level, seed)`` marks runs that
    diverge (their trial's status is then "diverged").
    """
    ids = []
    dense_groups: dict[tuple, list[str]] = {}
    for cell, seed in product(cells, seeds):
        dense_groups.setdefault((cell["dataset"], cell["arch"], cell["lr"], seed), []).extend(
            trial_id(cell, r, seed) for r in resets)
    for (dataset, arch, lr, seed), served in dense_groups.items():
        unit = f"dense-{dataset}-{arch}-lr{lr:g}-s{seed}"
        cell = next(c for c in cells if (c["dataset"], c["arch"], c["lr"]) == (dataset, arch, lr))
        store.write_records(campaign, unit, unit, served,
                            _run_records(0, DENSE, 1.0, accuracy(cell, DENSE, 0, seed), epochs, val))
    trials = []
    for cell, reset, seed in product(cells, resets, seeds):
        tid = trial_id(cell, reset, seed)
        ids.append(tid)
        recs, any_diverged = [], False
        for level in range(1, levels + 1):
            div = bool(diverges and diverges(cell, reset, level, seed))
            any_diverged |= div
            recs += _run_records(level, reset, (1 - rate) ** level, accuracy(cell, reset, level, seed), epochs, val,
                                 div, cell["structure"] == "structured")
        store.write_records(campaign, tid, tid, [tid], recs)
        trials.append(_trial_row(cell, reset, seed, [tid]))
        if any_diverged:
            trials[-1].update(status="diverged", reason="a pruning level diverged")
    store.write_table("trials", campaign, "trials", trials)
    return ids


def write_bulk(store: Store, campaign: str, n_trials: int, *, levels: int = 9, epochs: int = 25,
               trials_per_file: int = 100, seed: int = 0) -> int:
    """A large store fast: ``n_trials`` trials x (levels + 1) runs x ``epochs`` x 2 splits metric rows.

    Columns are built with numpy (no per-row Python objects) and written with
    ``Store.write_table`` in files of ``trials_per_file`` trials. Returns the metric row count.
    """
    rng = np.random.default_rng(seed)
    grid = list(product(["digits", "mnist1d"], ["mlp", "cnn1d"], ["unstructured", "structured"],
                        ["oneshot", "iterative"], [0.1, 0.01], ["rewind", "reinit"]))
    n_rows = 0
    for start in range(0, n_trials, trials_per_file):
        stop = min(start + trials_per_file, n_trials)
        tids, trial_rows = [], []
        for t in range(start, stop):
            dataset, arch, structure, sched, lr, reset = grid[t % len(grid)]
            cell = {"dataset": dataset, "arch": arch, "structure": structure, "schedule": sched, "lr": lr}
            s = t // len(grid)
            tid = trial_id(cell, reset, s)
            tids.append(tid)
            trial_rows.append(_trial_row(cell, reset, s, [tid]))
        store.write_table("trials", campaign, f"trials-{start:06d}", trial_rows)
        runs = len(tids) * (levels + 1)
        lvl = np.tile(np.arange(levels + 1), len(tids))
        run_tid = np.repeat(np.array(tids, dtype=object), levels + 1)
        run_reset = np.where(lvl == 0, DENSE, [tid.split("-")[-2] for tid in run_tid])
        density = 0.8 ** lvl
        best = 0.9 - 0.02 * lvl + rng.normal(0, 0.01, runs)
        levels_table = pa.table({
            "trial_id": run_tid, "unit_id": run_tid, "level": lvl, "reset": run_reset, "density": density,
            "status": np.full(runs, "done", dtype=object), "final_test_accuracy": best - 0.002,
            "best_test_accuracy": best, "best_test_epoch": np.full(runs, epochs - 1),
            "val_selected_test_accuracy": pa.nulls(runs, pa.float64()), "early_stop_iteration": pa.nulls(runs, pa.int64()),
            "final_train_loss": 1 - best, "epochs": np.full(runs, epochs), "iterations": np.full(runs, 10 * epochs),
            "seconds": np.full(runs, 1.0), "reason": pa.nulls(runs, pa.string()),
        })
        store.write_table("levels", campaign, f"levels-{start:06d}", levels_table)
        per_run = epochs * 2
        m = runs * per_run
        epoch = np.tile(np.repeat(np.arange(1, epochs + 1), 2), runs)
        acc = np.repeat(best, per_run) * (0.6 + 0.4 * epoch / epochs)
        metrics_table = pa.table({
            "trial_id": np.repeat(run_tid, per_run), "unit_id": np.repeat(run_tid, per_run),
            "level": np.repeat(lvl, per_run), "reset": np.repeat(run_reset, per_run),
            "density": np.repeat(density, per_run), "epoch": epoch, "iteration": 10 * epoch,
            "split": np.tile(np.array(["train", "test"], dtype=object), m // 2), "loss": 1 - acc, "accuracy": acc,
            "lr": np.full(m, 0.1),
        })
        store.write_table("metrics", campaign, f"metrics-{start:06d}", metrics_table)
        n_rows += m
        mask_rows = runs * len(LAYERS)
        mlvl = np.repeat(lvl, len(LAYERS))
        masks_table = pa.table({
            "trial_id": np.repeat(run_tid, len(LAYERS)), "unit_id": np.repeat(run_tid, len(LAYERS)),
            "level": mlvl, "layer": np.tile(np.array(LAYERS, dtype=object), runs),
            "kind": np.full(mask_rows, "weight", dtype=object), "params": np.full(mask_rows, 1000),
            "kept": (1000 * 0.8 ** mlvl).astype(np.int64), "density": 0.8 ** mlvl,
            "jaccard_prev": np.full(mask_rows, 0.9), "travel_kept": np.full(mask_rows, 0.3),
            "travel_pruned": np.full(mask_rows, 0.1), "bn_negative_bias_fraction": pa.nulls(mask_rows, pa.float64()),
            "sign_agreement_kept": np.full(mask_rows, 0.8), "travel_kept_null": np.full(mask_rows, 0.28),
        })
        store.write_table("masks", campaign, f"masks-{start:06d}", masks_table)
    return n_rows
