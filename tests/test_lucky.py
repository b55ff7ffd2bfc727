"""Teacher-student regression and lucky-node measurements (trainers/lucky.py) on tiny nets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainers.config import DataConfig, ModelConfig, TrainConfig
from trainers.datasets import load_data, teacher_student_setup
from trainers.lucky import node_matches
from trainers.models import build_model
from trainers.records import EpochMetrics, LevelSummary
from trainers.training import train

CPU = torch.device("cpu")
OPTS = {"input_dim": 6, "widths": [4, 3], "num_classes": 2, "n_train": 512, "n_test": 256, "task": "regression",
        "normalize_targets": False}
CFG = TrainConfig(lr=0.02, momentum=0.9, weight_decay=0.0, batch_size=64, epochs=3, schedule="constant")


def _data(**extra):
    return DataConfig("teacher_student", options={**OPTS, **extra})


def _student(data, mult=2, seed=0):
    return build_model(ModelConfig("student_mlp", {"teacher_widths": [4, 3], "multiplier": mult}),
                       data.input_shape, data.num_classes, seed)


def test_regression_targets_are_the_teachers_outputs_on_the_raw_inputs():
    cfg = _data()
    d = load_data(cfg, 0, CPU)
    ts = teacher_student_setup(cfg.options)
    assert d.task == "regression" and d.train.y.dtype == torch.float32 and d.train.y.shape == (512, 2)
    x_raw = d.test.x.double().numpy() * 10.0  # the student sees x / input_std
    h = x_raw
    for w, b in zip(ts.teacher.weights[:-1], ts.teacher.biases[:-1]):
        h = np.maximum(h @ w.double().numpy().T + b.double().numpy(), 0)
    out = h @ ts.teacher.weights[-1].double().numpy().T + ts.teacher.biases[-1].double().numpy()
    np.testing.assert_allclose(d.test.y.numpy(), out / 10.0, rtol=1e-4, atol=1e-5)
    norm = load_data(_data(normalize_targets=True), 0, CPU)  # each output standardised over all inputs
    both = torch.cat([norm.train.y, norm.test.y]).double().numpy()
    np.testing.assert_allclose(both.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(both.std(0, ddof=1), 1, rtol=1e-4)
    raw = torch.cat([d.train.y, d.test.y]).double().numpy()
    np.testing.assert_allclose(both, (raw - raw.mean(0)) / raw.std(0, ddof=1), rtol=1e-3, atol=1e-4)
    cls = load_data(_data(task="classification"), 0, CPU)
    assert cls.task == "classification" and cls.train.y.dtype == torch.long
    assert torch.equal(cls.test.x, d.test.x)
    with pytest.raises(Exception, match="task"):
        load_data(_data(task="ranking"), 0, CPU)


def test_regression_training_records_mse_and_no_accuracy():
    d = load_data(_data(), 0, CPU)
    model = _student(d)
    records = []
    res = train(model, d, CFG, device=CPU, seed=0, on_record=records.append)
    tests = [r for r in records if isinstance(r, EpochMetrics) and r.split == "test"]
    assert len(tests) == 3 and all(math.isnan(r.accuracy) for r in tests)
    with torch.no_grad():
        pred = model(d.test.x).double().numpy()
    mse = ((pred - d.test.y.double().numpy()) ** 2).mean()
    assert tests[-1].loss == pytest.approx(mse, rel=1e-5)
    s = res.summary
    assert isinstance(s, LevelSummary) and math.isnan(s.best_test_accuracy)
    assert s.best_test_loss == min(r.loss for r in tests)
    assert s.final_test_loss == tests[-1].loss
    assert tests[s.best_test_epoch - 1].loss == s.best_test_loss
    assert s.final_train_loss < tests[0].loss * 10  # finite, and the task trained (MSE, not CE)


def test_node_correlations_match_a_direct_numpy_computation():
    cfg = _data()
    d = load_data(cfg, 0, CPU)
    model = _student(d, mult=3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    final = train(model, d, CFG, device=CPU, seed=0).weights
    rows = node_matches(cfg, d.test.x, start, final, None, level=0, reset="dense")
    assert len(rows) == 3 * 4 + 3 * 3
    ts = teacher_student_setup(cfg.options)
    x = d.test.x.double().numpy()
    t_h, acts = x * 10.0, {}
    for i, (w, b) in enumerate(zip(ts.teacher.weights[:-1], ts.teacher.biases[:-1])):
        t_h = np.maximum(t_h @ w.double().numpy().T + b.double().numpy(), 0)
        acts[i] = t_h
    for which, weights in (("init", start), ("final", final)):
        h = x
        for i in range(2):
            h = np.maximum(h @ weights[f"hidden.{i}.weight"].double().numpy().T
                           + weights[f"hidden.{i}.bias"].double().numpy(), 0)
            width_s = h.shape[1]
            with np.errstate(invalid="ignore", divide="ignore"):  # dead nodes: NaN rows, as expected
                c = np.corrcoef(h.T, acts[i].T)[:width_s, width_s:]
            for r in (r for r in rows if r.layer == i):
                col = c[r.node]
                val, teach = getattr(r, f"{which}_correlation"), getattr(r, f"{which}_teacher")
                if np.all(np.isnan(col)):
                    assert val is None and teach is None
                else:
                    assert teach == int(np.nanargmax(col))
                    assert val == pytest.approx(np.nanmax(col), abs=1e-9)
    fan_out = final["out.weight"].double().norm(dim=0).numpy()
    np.testing.assert_allclose([r.fan_out_norm for r in rows if r.layer == 1], fan_out)


def test_a_student_equal_to_the_teacher_matches_every_node_perfectly():
    cfg = _data()
    d = load_data(cfg, 0, CPU)
    ts = teacher_student_setup(cfg.options)
    model = _student(d, mult=1)
    w = model.state_dict()
    for i in range(2):  # the student sees x / 10: same weights, biases / 10 (activations / 10)
        w[f"hidden.{i}.weight"] = ts.teacher.weights[i].clone()
        w[f"hidden.{i}.bias"] = ts.teacher.biases[i] / 10.0
    rows = node_matches(cfg, d.test.x, w, w, None, level=0, reset="dense")
    alive = [r for r in rows if r.final_correlation is not None]
    assert len(alive) >= 5
    for r in alive:
        assert r.final_teacher == r.node and r.final_correlation == pytest.approx(1.0, abs=1e-9)


def test_pruned_nodes_have_no_correlation_and_report_their_kept_fan_in():
    cfg = _data()
    d = load_data(cfg, 0, CPU)
    model = _student(d)
    w = model.state_dict()
    mask = {"hidden.0.weight": torch.ones(8, 6, dtype=torch.bool), "hidden.0.bias": torch.ones(8, dtype=torch.bool)}
    mask["hidden.0.weight"][[1, 5]] = False
    mask["hidden.0.bias"][[1, 5]] = False
    mask["hidden.0.weight"][2, :3] = False
    rows = {(r.layer, r.node): r for r in node_matches(cfg, d.test.x, w, w, mask, level=2, reset="rewind")}
    for n in (1, 5):
        assert rows[0, n].fan_in_kept == 0.0 and rows[0, n].init_correlation is None
    assert rows[0, 2].fan_in_kept == 0.5
    assert rows[0, 0].fan_in_kept == 1.0 and rows[0, 0].level == 2 and rows[0, 0].reset == "rewind"


def test_bad_settings_are_named():
    d = load_data(_data(), 0, CPU)
    deep = build_model(ModelConfig("mlp", {"widths": [5, 5, 5]}), d.input_shape, d.num_classes, 0).state_dict()
    with pytest.raises(ValueError, match="hidden layers"):
        node_matches(_data(), d.test.x, deep, deep, None, level=0, reset="dense")
    with pytest.raises(ValueError, match="teacher_student"):
        node_matches(DataConfig("digits"), d.test.x, deep, deep, None, level=0, reset="dense")
