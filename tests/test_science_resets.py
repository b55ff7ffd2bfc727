"""Where every reset mode starts retraining, tensor by tensor, against an independent computation:

- rewind      = theta_0 of the SAME seed (a model built afresh with ``setup.seed``);
- rewind@k    = the dense run's weights after k steps (recomputed by a separate k-step run);
- reinit      = a fresh init (not theta_0, different per level, same distribution);
- finetune    = the trained source weights, at a small constant lr;
- lr_rewind   = the trained source weights, at the configured schedule.

And ``retrain`` really trains from that start: its result equals a hand-written
``train`` call that loads the expected start weights (bit-identical on CPU).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig
from trainers.datasets import load_data
from trainers.masks import apply_mask
from trainers.models import build_model
from trainers.resets import initial_weights
from trainers.training import train
from trainers.trajectory import level_masks, retrain, train_dense

K = 5


def _setup(seed: int = 3) -> RunSetup:
    return RunSetup(
        data=DataConfig("digits"),
        model=ModelConfig("mlp", {"widths": (24, 12)}),
        train=TrainConfig(lr=0.05, epochs=2, batch_size=128, milestones=(1,)),
        prune=PruneConfig(rate=0.4, levels=2, finetune_lr=0.003),
        seed=seed,
    )


@pytest.fixture(scope="module")
def world():
    s = _setup()
    data = load_data(s.data, s.seed, "cpu")
    dense = train_dense(s, device="cpu", rewind_iterations=(K,))
    mask = level_masks(s, dense, 1, None, None)
    return s, data, dense, mask


def _fresh(s: RunSetup, data, seed: int):
    return build_model(s.model, tuple(data.input_shape), data.num_classes, seed)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rewind_starts_from_theta0_of_the_same_seed(world):
    s, data, dense, _ = world
    theta0 = _fresh(s, data, s.seed).state_dict()
    start = initial_weights("rewind", dense, dense.final, s, 1)
    assert _equal(start.weights, theta0)
    assert start.start_iteration == 0 and start.lr_override is None
    other = _fresh(s, data, s.seed + 1).state_dict()  # another seed's theta_0 is a different start
    assert not torch.equal(other["hidden.0.weight"], start.weights["hidden.0.weight"])
    # rewind@0 is plain rewind
    assert _equal(initial_weights("rewind@0", dense, dense.final, s, 1).weights, theta0)


def test_rewind_at_k_starts_from_the_iteration_k_weights(world):
    s, data, dense, _ = world
    # Independent recomputation of the snapshot: a run of exactly K steps from theta_0.
    model = _fresh(s, data, s.seed)
    short = dataclasses.replace(s.train, epochs=None, iterations=K)
    after_k = train(model, data, short, device="cpu", seed=s.seed).weights
    start = initial_weights(f"rewind@{K}", dense, dense.final, s, 1)
    assert start.start_iteration == K and start.lr_override is None
    assert _equal(start.weights, after_k)
    assert not torch.equal(start.weights["hidden.0.weight"], dense.init["hidden.0.weight"])
    assert not torch.equal(start.weights["hidden.0.weight"], dense.final["hidden.0.weight"])


def test_reinit_is_a_fresh_init_new_per_level_and_reproducible(world):
    s, data, dense, _ = world
    theta0 = dense.init
    r1 = initial_weights("reinit", dense, dense.final, s, 1).weights
    r2 = initial_weights("reinit", dense, dense.final, s, 2).weights
    assert _equal(r1, initial_weights("reinit", dense, dense.final, s, 1).weights)  # deterministic
    for name in ("hidden.0.weight", "hidden.1.weight", "out.weight"):
        assert not torch.equal(r1[name], theta0[name]) and not torch.equal(r1[name], r2[name])
        # same distribution as theta_0 (Kaiming normal, fan in): std within 15% on >= 300 entries
        assert abs(r1[name].std().item() / theta0[name].std().item() - 1) < 0.15
        assert not torch.equal(r1[name], dense.final[name])


def test_finetune_and_lr_rewind_start_from_the_trained_source(world):
    s, data, dense, _ = world
    g = torch.Generator().manual_seed(0)
    source = {k: v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
              for k, v in dense.final.items()}  # a source unlike any weights of the dense run
    ft = initial_weights("finetune", dense, source, s, 2)
    assert _equal(ft.weights, source) and ft.start_iteration == 0
    assert ft.lr_override == s.prune.finetune_lr
    default = dataclasses.replace(s, prune=dataclasses.replace(s.prune, finetune_lr=None))
    assert initial_weights("finetune", dense, source, default, 2).lr_override == pytest.approx(s.train.lr / 10)
    lr = initial_weights("lr_rewind", dense, source, s, 2)
    assert _equal(lr.weights, source) and lr.start_iteration == 0 and lr.lr_override is None
    # the start is a copy: training it does not touch the caller's tensors
    lr.weights["out.weight"].add_(1.0)
    assert not torch.equal(lr.weights["out.weight"], source["out.weight"])


def _by_hand(s: RunSetup, data, mask, weights, *, start_iteration=0, cfg=None, level=1, reset="x"):
    model = _fresh(s, data, 12345)  # any init: the start weights overwrite it
    model.load_state_dict(weights)
    apply_mask(model, mask)
    return train(model, data, cfg or s.train, device="cpu", seed=s.seed, level=level, reset=reset,
                 mask=mask, start_iteration=start_iteration)


@pytest.mark.parametrize("reset", ["rewind", f"rewind@{K}", "reinit", "finetune", "lr_rewind"])
def test_retrain_trains_from_the_reset_start(world, reset):
    s, data, dense, mask = world
    br = retrain(s, level=1, mask=mask, reset=reset, dense=dense, source=dense.final, device="cpu")
    if reset == "rewind":
        want = _by_hand(s, data, mask, _fresh(s, data, s.seed).state_dict())
    elif reset.startswith("rewind@"):
        want = _by_hand(s, data, mask, dense.rewind_points[K], start_iteration=K)
    elif reset == "reinit":
        want = _by_hand(s, data, mask, initial_weights("reinit", dense, dense.final, s, 1).weights)
    elif reset == "finetune":
        cfg = dataclasses.replace(s.train, lr=s.prune.finetune_lr, schedule="constant", warmup_iterations=0)
        want = _by_hand(s, data, mask, dense.final, cfg=cfg)
    else:
        want = _by_hand(s, data, mask, dense.final)
    assert _equal(br.weights, want.weights), reset
    assert br.summary.final_test_accuracy == want.summary.final_test_accuracy
    assert br.summary.iterations == dense.summary.iterations  # every reset ends at the full budget
    for k, m in mask.items():
        assert bool((br.weights[k][~m] == 0).all())
