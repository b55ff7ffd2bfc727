"""Training checkpoints (trainers/checkpoint.py): a training stopped at a checkpoint and resumed in a
fresh state ends with the weights, records and summary of an uninterrupted run, bit for bit."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from trainers.checkpoint import Checkpointer, TrainingCheckpoint, file_sink, load_file
from trainers.config import DataConfig, ModelConfig, TrainConfig
from trainers.datasets import load_data
from trainers.models import build_model
from trainers.preemption import Preempted, clear, request
from trainers.records import EpochMetrics, LevelSummary
from trainers.training import train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig("digits", val_size=200), 0, CPU)


def _model(data, arch, options, seed=0):
    if arch == "dropout_mlp":  # draws from the global torch RNG during training
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                   torch.nn.Dropout(0.3), torch.nn.Linear(32, data.num_classes))
    return build_model(ModelConfig(arch, options), data.input_shape, data.num_classes, seed)


def _fields(r):
    # every field but wall-clock seconds
    return tuple(getattr(r, f) for f in r.__slots__ if f != "seconds")


def _same_floats(a, b) -> bool:
    # bit-identical, NaN included (NaN != NaN)
    return len(a) == len(b) and all(
        (x == y) or (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y))
        for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def _scramble_global_rngs() -> None:
    """A fresh process would start from other global RNG states: make sure they do not leak in."""
    torch.manual_seed(987654)
    np.random.seed(4321)
    random.seed(77)


class _Ticks:
    """A clock that advances one second per reading: time-based checkpoints at deterministic batches."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


class _TrainSteps:
    """Counts training-mode forward passes of a model (optimizer steps taken by this call)."""

    def __init__(self, model):
        self.n = 0
        model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        if module.training:
            self.n += 1


CASES = {
    # SGD + momentum, step schedule, val split, epoch-boundary checkpoints
    "sgd_step_epochs": dict(arch="mlp", options={"widths": [32]},
                            cfg=TrainConfig(lr=0.05, epochs=4, batch_size=64, milestones=(2,)),
                            every_epochs=1, every_minutes=None),
    # Adam moments and step counts, cosine schedule with warm-up, mid-epoch (time-based) checkpoints
    "adam_cosine_mid_epoch": dict(arch="mlp", options={"widths": [32, 16]},
                                  cfg=TrainConfig(optimizer="adam", lr=3e-3, epochs=3, batch_size=128,
                                                  schedule="cosine", warmup_iterations=7, weight_decay=0.0),
                                  every_epochs=None, every_minutes=4 / 60),
    # dropout: the global torch RNG state, mid-epoch
    "dropout_global_rng_mid_epoch": dict(arch="dropout_mlp", options={},
                                         cfg=TrainConfig(lr=0.05, epochs=2, batch_size=128),
                                         every_epochs=None, every_minutes=5 / 60),
    # BatchNorm buffers and the augmentation generator inside an epoch
    "resnet_bn_augment_mid_epoch": dict(arch="resnet", options={"depth": 8, "width": 4},
                                        cfg=TrainConfig(lr=0.05, epochs=2, batch_size=256, augment=True,
                                                        schedule="constant"),
                                        every_epochs=None, every_minutes=3 / 60),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_from_every_checkpoint_is_bit_identical_to_an_uninterrupted_run(digits, case):
    c = CASES[case]
    cfg = c["cfg"]
    ref_records: list = []
    ref = train(_model(digits, c["arch"], c["options"]), digits, cfg, device=CPU, seed=3, on_record=ref_records.append)

    saved: list[bytes] = []
    ck = Checkpointer(lambda k: saved.append(k.to_bytes()), every_epochs=c["every_epochs"],
                      every_minutes=c["every_minutes"], clock=_Ticks())
    with_ck_records: list = []
    with_ck = train(_model(digits, c["arch"], c["options"]), digits, cfg, device=CPU, seed=3,
                    on_record=with_ck_records.append, checkpointer=ck)
    assert ck.written == len(saved) >= 2
    # taking checkpoints does not change the run
    assert all(torch.equal(ref.weights[k], with_ck.weights[k]) for k in ref.weights)
    assert _same_floats([_fields(r) for r in ref_records], [_fields(r) for r in with_ck_records])

    total = ref.summary.iterations
    kinds = set()
    picks = sorted({0, len(saved) // 2, len(saved) - 1})  # first, middle, last: keeps the test lean
    for blob in (saved[i] for i in picks):
        _scramble_global_rngs()
        ckpt = TrainingCheckpoint.from_bytes(blob)
        assert 0 < ckpt.iteration < total
        kinds.add(ckpt.mid_epoch)
        model = _model(digits, c["arch"], c["options"], seed=99)  # other init: everything must come from ckpt
        steps = _TrainSteps(model)
        records: list = []
        res = train(model, digits, cfg, device=CPU, seed=3, on_record=records.append, resume=ckpt)
        assert steps.n == total - ckpt.iteration  # continued from the checkpoint, not from 0
        assert all(torch.equal(ref.weights[k], res.weights[k]) for k in ref.weights), ckpt.iteration
        assert _same_floats([_fields(r) for r in ref_records], [_fields(r) for r in records]), ckpt.iteration
        epochs = [(r.epoch, r.split) for r in records if isinstance(r, EpochMetrics)]
        assert len(epochs) == len(set(epochs))  # no duplicated record
        assert isinstance(records[-1], LevelSummary) and records[-1].status == "done"
    expected_kinds = {False} if c["every_epochs"] else {True}
    assert expected_kinds <= kinds


def test_resume_of_a_masked_rewound_run_and_of_its_snapshots(digits):
    """A pruned retraining from iteration k (rewind@k: the first epoch is partial) with its mask,
    and a dense run keeping rewind snapshots: both resume exactly, masked weights stay zero."""
    cfg = TrainConfig(lr=0.05, epochs=3, batch_size=64, milestones=(2,))
    opts = {"widths": [32]}
    base = _model(digits, "mlp", opts)
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(5)) > 0.6
            for n, p in base.named_parameters() if n.endswith("weight")}
    kw = dict(device=CPU, seed=1, level=2, reset="rewind@5", density=0.4, mask=mask, start_iteration=5,
              snapshot_iterations=(9, 30))
    ref = train(_model(digits, "mlp", opts), digits, cfg, **kw)
    saved: list[bytes] = []
    train(_model(digits, "mlp", opts), digits, cfg, **kw,
          checkpointer=Checkpointer(lambda k: saved.append(k.to_bytes()), every_epochs=1, every_minutes=None))
    assert len(saved) == 2
    for blob in saved:
        _scramble_global_rngs()
        res = train(_model(digits, "mlp", opts, seed=7), digits, cfg, **kw, resume=TrainingCheckpoint.from_bytes(blob))
        assert all(torch.equal(ref.weights[k], res.weights[k]) for k in ref.weights)
        assert sorted(res.snapshots) == [9, 30]
        assert all(torch.equal(ref.snapshots[i][k], res.snapshots[i][k]) for i in ref.snapshots for k in ref.weights)
        assert all(not res.weights[n][~m].any() for n, m in mask.items())
        assert _fields(ref.summary) == _fields(res.summary)


def test_a_checkpoint_resumes_only_its_own_run(digits, tmp_path):
    cfg = TrainConfig(lr=0.05, epochs=2, batch_size=64)
    path = tmp_path / "ck" / "run.ckpt"
    train(_model(digits, "mlp", {"widths": [16]}), digits, cfg, device=CPU, seed=0,
          checkpointer=Checkpointer(file_sink(path), every_epochs=1, every_minutes=None))
    ckpt = load_file(path)
    assert ckpt is not None and ckpt.epoch == 1 and list(path.parent.iterdir()) == [path]  # no temporary left
    with pytest.raises(ValueError, match="checkpoint: taken for seed = 0, this run has seed = 1"):
        train(_model(digits, "mlp", {"widths": [16]}), digits, cfg, device=CPU, seed=1, resume=ckpt)
    with pytest.raises(ValueError, match="checkpoint: taken for base_lr = 0.05, this run has base_lr = 0.1"):
        train(_model(digits, "mlp", {"widths": [16]}), digits, dataclasses.replace(cfg, lr=0.1), device=CPU,
              seed=0, resume=ckpt)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="run.ckpt: not a readable training checkpoint"):
        load_file(path)
    assert load_file(tmp_path / "missing.ckpt") is None
    with pytest.raises(ValueError, match="every_epochs: expected an integer >= 1"):
        Checkpointer(lambda k: None, every_epochs=0)


def test_preemption_saves_at_the_end_of_the_current_batch_and_stops(digits):
    cfg = TrainConfig(lr=0.05, epochs=3, batch_size=64)
    ref = train(_model(digits, "mlp", {"widths": [16]}), digits, cfg, device=CPU, seed=0)
    saved: list[TrainingCheckpoint] = []
    model = _model(digits, "mlp", {"widths": [16]})
    steps = _TrainSteps(model)

    def request_at_step_7(module, args):
        if module.training and steps.n == 7:
            request()  # what the SIGTERM handler does

    model.register_forward_pre_hook(request_at_step_7)
    try:
        with pytest.raises(Preempted, match="checkpoint written at iteration 7"):
            train(model, digits, cfg, device=CPU, seed=0, checkpointer=Checkpointer(saved.append, every_minutes=None))
    finally:
        clear()
    assert len(saved) == 1 and saved[0].iteration == 7 and saved[0].mid_epoch
    res = train(_model(digits, "mlp", {"widths": [16]}), digits, cfg, device=CPU, seed=0, resume=saved[0])
    assert all(torch.equal(ref.weights[k], res.weights[k]) for k in ref.weights)
