"""Best / final / validation-selected accuracy and the early-stop point, on a run whose accuracy
goes up AND down (a too-large constant lr), recomputed from the run's own per-epoch rows.

A run whose accuracy rises every epoch cannot tell "best" from "final"; this one is chosen so
that the best test epoch, the best validation epoch and the last epoch are three different
epochs (asserted first, so the test cannot quietly lose its power if training changes).
"""

from __future__ import annotations

import numpy as np
import pytest

from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig
from trainers.datasets import load_data
from trainers.models import build_model
from trainers.records import EpochMetrics, LevelSummary
from trainers.training import train


def _run(val_size: int, seed: int = 1):
    s = RunSetup(DataConfig("digits", val_size=val_size), ModelConfig("mlp", {"widths": (32,)}),
                 TrainConfig(lr=0.8, epochs=6, batch_size=128, schedule="constant"), PruneConfig(), seed=seed)
    data = load_data(s.data, s.seed, "cpu")
    model = build_model(s.model, tuple(data.input_shape), data.num_classes, s.seed)
    records = []
    res = train(model, data, s.train, device="cpu", seed=s.seed, on_record=records.append)
    rows = {split: [r for r in records if isinstance(r, EpochMetrics) and r.split == split]
            for split in ("train", "val", "test")}
    summaries = [r for r in records if isinstance(r, LevelSummary)]
    assert summaries == [res.summary]
    return res.summary, rows


@pytest.fixture(scope="module", params=[1, 3], ids=["seed1", "seed3"])
def with_val(request):
    return (request.param, *_run(300, request.param))


def test_the_runs_go_up_and_down(with_val):
    seed, _, rows = with_val
    test = np.array([r.accuracy for r in rows["test"]])
    val = np.array([r.accuracy for r in rows["val"]])
    val_loss = np.array([r.loss for r in rows["val"]])
    assert len(test) == 6 and np.any(np.diff(test) < 0) and np.any(np.diff(test) > 0)
    assert int(np.argmax(test)) != len(test) - 1  # best is not final
    if seed == 1:  # best test, best validation and last epoch: three different epochs
        assert len({int(np.argmax(test)), int(np.argmax(val)), len(test) - 1}) == 3
    else:  # the lowest validation loss is not at the best validation accuracy
        assert int(np.argmin(val_loss)) != int(np.argmax(val))


def test_best_final_and_val_selected_match_the_epoch_rows(with_val):
    _, summary, rows = with_val
    test = [r.accuracy for r in rows["test"]]
    val = [r.accuracy for r in rows["val"]]
    best_i = int(np.argmax(test))  # first epoch reaching the maximum
    assert summary.best_test_accuracy == max(test)
    assert summary.best_test_epoch == rows["test"][best_i].epoch
    assert summary.final_test_accuracy == test[-1]
    assert summary.val_selected_test_accuracy == test[int(np.argmax(val))]
    assert summary.final_train_loss == rows["train"][-1].loss
    assert summary.best_test_loss == min(r.loss for r in rows["test"])
    assert summary.final_test_loss == rows["test"][-1].loss
    # early stopping: the iteration of the epoch with the lowest validation loss
    stop = int(np.argmin([r.loss for r in rows["val"]]))
    assert summary.early_stop_iteration == rows["val"][stop].iteration
    assert summary.epochs == 6 and summary.iterations == rows["test"][-1].iteration
    assert summary.status == "done" and summary.reason is None


def test_without_validation_split_nothing_is_val_selected():
    # (what early stopping falls back to without a validation split is issue 16's to settle)
    summary, rows = _run(0)
    assert rows["val"] == []
    assert summary.val_selected_test_accuracy is None
    test = [r.accuracy for r in rows["test"]]
    assert summary.best_test_accuracy == max(test) and summary.final_test_accuracy == test[-1]
    assert summary.best_test_epoch == rows["test"][int(np.argmax(test))].epoch
