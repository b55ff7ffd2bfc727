"""Training loop: determinism, budgets and schedules, resume at k, masks, divergence, summaries."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from trainers.config import DataConfig, ModelConfig, TrainConfig
from trainers.datasets import Split, load_data
from trainers.models import build_model
from trainers.records import EpochMetrics, LevelSummary
from trainers.training import MaskEnforcer, lr_at, steps_per_epoch, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig("digits", val_size=200), 0, CPU)


def _run(data, cfg, arch="mlp", seed=0, options=None, **kw):
    records: list = []
    model = build_model(ModelConfig(arch, {"widths": [32]} if options is None else options), data.input_shape, data.num_classes, seed)
    res = train(model, data, cfg, device=CPU, seed=seed, on_record=records.append, **kw)
    return model, res, records


def test_same_seed_gives_bit_identical_weights_and_metrics(digits):
    cfg = TrainConfig(lr=0.05, epochs=2, batch_size=64, milestones=(1,))
    _, a, ra = _run(digits, cfg)
    _, b, rb = _run(digits, cfg)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    strip = [dataclass_tuple(r) for r in ra]
    assert strip == [dataclass_tuple(r) for r in rb]
    _, c, _ = _run(digits, cfg, seed=1)
    assert not torch.equal(a.weights["out.weight"], c.weights["out.weight"])


def dataclass_tuple(r):
    # everything but wall-clock seconds
    return tuple(getattr(r, f) for f in r.__slots__ if f != "seconds")


def test_learns_and_emits_one_row_per_split_per_epoch_and_one_summary(digits):
    cfg = TrainConfig(optimizer="adam", lr=1e-2, epochs=3, batch_size=64, weight_decay=0.0, schedule="constant")
    _, res, recs = _run(digits, cfg)
    epochs = [r for r in recs if isinstance(r, EpochMetrics)]
    assert [(r.epoch, r.split) for r in epochs] == [(e, s) for e in (1, 2, 3) for s in ("train", "val", "test")]
    assert isinstance(recs[-1], LevelSummary) and recs[-1] is res.summary and res.summary.status == "done"
    test = [r for r in epochs if r.split == "test"]
    val = [r for r in epochs if r.split == "val"]
    assert test[-1].accuracy > 0.8  # 10 classes: chance is 0.1; an MLP gets digits right quickly
    s = res.summary
    assert s.final_test_accuracy == test[-1].accuracy and s.best_test_accuracy == max(r.accuracy for r in test)
    assert test[s.best_test_epoch - 1].accuracy == s.best_test_accuracy
    assert s.val_selected_test_accuracy == test[max(range(3), key=lambda i: val[i].accuracy)].accuracy
    assert s.early_stop_iteration == min(val, key=lambda r: r.loss).iteration
    spe = steps_per_epoch(len(digits.train), 64)
    assert s.iterations == 3 * spe and s.epochs == 3 and [r.iteration for r in test] == [spe, 2 * spe, 3 * spe]


def test_without_a_validation_split_nothing_is_chosen_on_test():
    """No validation split: no early-stop iteration (it used to be the argmin of test loss) and no
    val-selected accuracy; only best-over-epochs (the documented Rethinking metric) looks at test."""
    data = load_data(DataConfig("digits", val_size=0), 0, CPU)
    cfg = TrainConfig(lr=0.05, epochs=3, batch_size=64, schedule="constant")
    _, res, recs = _run(data, cfg)
    test = [r for r in recs if isinstance(r, EpochMetrics) and r.split == "test"]
    assert len({r.loss for r in test}) == 3  # distinct test losses: an argmin would have picked one
    assert res.summary.early_stop_iteration is None and res.summary.val_selected_test_accuracy is None
    assert res.summary.best_test_accuracy == max(r.accuracy for r in test)


def test_iteration_budget_evaluates_the_last_partial_epoch(digits):
    spe = steps_per_epoch(len(digits.train), 128)
    cfg = TrainConfig(lr=0.05, epochs=None, iterations=spe + 3, batch_size=128)
    _, res, recs = _run(digits, cfg)
    test = [r for r in recs if isinstance(r, EpochMetrics) and r.split == "test"]
    assert [(r.epoch, r.iteration) for r in test] == [(1, spe), (2, spe + 3)]
    assert res.summary.iterations == spe + 3
    with pytest.raises(ValueError, match="exactly one of epochs / iterations"):
        _run(digits, TrainConfig(epochs=1, iterations=5))


def test_lr_schedules_follow_their_definitions():
    step = TrainConfig(lr=0.1, schedule="step", milestones=(2, 4), gamma=0.1, warmup_iterations=5)
    assert [lr_at(step, i, 10, 60) for i in (0, 4)] == pytest.approx([0.1 * 1 / 5, 0.1])
    assert math.isclose(lr_at(step, 25, 10, 60), 0.1 * 0.1) and math.isclose(lr_at(step, 45, 10, 60), 0.1 * 0.01)
    cos = TrainConfig(lr=0.2, schedule="cosine")
    assert lr_at(cos, 0, 10, 100) == 0.2 and math.isclose(lr_at(cos, 50, 10, 100), 0.1)
    assert lr_at(TrainConfig(lr=0.3, schedule="constant"), 99, 10, 100) == 0.3
    assert lr_at(cos, 50, 10, 100, base_lr=0.02) == pytest.approx(0.01)


def test_resuming_at_k_replays_the_rest_of_the_schedule_and_data_order(digits):
    # Momentum-free SGD keeps no optimizer state, so training from the iteration-k snapshot with
    # start_iteration=k must land on exactly the weights of the uninterrupted run.
    cfg = TrainConfig(lr=0.1, momentum=0.0, epochs=3, batch_size=64, schedule="cosine", warmup_iterations=4)
    k = steps_per_epoch(len(digits.train), 64) + 5  # mid-epoch
    model, full, _ = _run(digits, cfg, snapshot_iterations=(0, k))
    assert set(full.snapshots) == {0, k}
    model.load_state_dict(full.snapshots[k])
    res = train(model, digits, cfg, device=CPU, seed=0, start_iteration=k)
    assert all(torch.equal(full.weights[n], res.weights[n]) for n in full.weights)
    assert res.summary.iterations == full.summary.iterations


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mask_keeps_pruned_weights_and_their_optimizer_state_at_zero(digits, optimizer):
    model = build_model(ModelConfig("mlp", {"widths": [32]}), digits.input_shape, 10, 0)
    g = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(p.shape, generator=g) > 0.5 for n, p in model.named_parameters() if n.endswith("weight")}
    cfg = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-2, epochs=2, batch_size=64)
    res = train(model, digits, cfg, device=CPU, seed=0, mask=mask)
    for n, m in mask.items():
        assert torch.count_nonzero(res.weights[n][~m]) == 0
        assert torch.count_nonzero(res.weights[n][m]) == int(m.sum())  # survivors did train
    # The optimizer state is zeroed too: one step with a fresh optimizer, then enforcement.
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd" else \
        torch.optim.Adam(model.parameters(), lr=0.1)
    enforcer = MaskEnforcer(model, mask, CPU)
    model(digits.train.x[:32]).sum().backward()
    opt.step()
    enforcer.apply(opt)
    for n, p in model.named_parameters():
        if n in mask:
            for buf in opt.state[p].values():
                if buf.shape == p.shape:
                    assert torch.count_nonzero(buf[~mask[n]]) == 0


def test_bad_masks_are_named(digits):
    model = build_model(ModelConfig("mlp", {"widths": [8]}), digits.input_shape, 10, 0)
    with pytest.raises(ValueError, match="'nope.weight'"):
        train(model, digits, TrainConfig(epochs=1), device=CPU, seed=0, mask={"nope.weight": torch.ones(1, dtype=bool)})
    with pytest.raises(ValueError, match="hidden.0.weight.*shape"):
        train(model, digits, TrainConfig(epochs=1), device=CPU, seed=0,
              mask={"hidden.0.weight": torch.ones(3, dtype=bool)})


def test_divergence_is_reported_not_raised(digits):
    cfg = TrainConfig(lr=1e6, momentum=0.9, epochs=3, batch_size=64, schedule="constant")
    _, res, recs = _run(digits, cfg)
    assert res.diverged and res.summary.status == "diverged" and "non-finite" in res.summary.reason
    assert recs[-1] is res.summary and res.summary.iterations < 3 * steps_per_epoch(len(digits.train), 64)


def test_augmented_conv_training_with_lr_override_runs_deterministically(digits):
    small = dataclasses.replace(digits, train=Split(digits.train.x[:256], digits.train.y[:256]))
    cfg = TrainConfig(lr=123.0, epochs=1, batch_size=128, augment=True, schedule="constant")
    _, a, recs = _run(small, cfg, arch="conv2", options={}, lr_override=0.01)
    _, b, _ = _run(small, cfg, arch="conv2", options={}, lr_override=0.01)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert {r.lr for r in recs if isinstance(r, EpochMetrics)} == {0.01} and not a.diverged


def test_cli_runs_a_short_training_and_prints_accuracy(data_root):
    out = subprocess.run([sys.executable, "-m", "trainers", "--dataset", "mnist1d", "--arch", "mlp", "--root",
                          data_root, "--data-options", '{"num_samples": 500}', "--epochs", "2", "--quiet"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    assert "mlp on mnist1d" in out and "final test accuracy" in out
