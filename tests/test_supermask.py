"""Edge-popup supermasks (trainers/supermask.py) on tiny nets, against numpy recomputations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainers.config import DataConfig, ModelConfig, TrainConfig
from trainers.datasets import load_data
from trainers.models import build_model
from trainers.supermask import (
    Supermask,
    SupermaskConfig,
    densities_of,
    frozen_init,
    mask_overlap,
    n_kept,
    topk_mask,
    train_supermask,
    uniform_densities,
)

CPU = torch.device("cpu")
CFG = TrainConfig(lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=64, epochs=3)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig("digits", val_size=0), 0, CPU)


def _net(data, widths=(48,), seed=0):
    return build_model(ModelConfig("mlp", {"widths": list(widths)}), data.input_shape, data.num_classes, seed)


@pytest.mark.parametrize("k", [0.05, 0.3, 0.5, 0.77, 1.0])
def test_topk_mask_keeps_exactly_the_largest_abs_scores_per_layer(k):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(37, 11, generator=g)
    scores[3, :5] = scores[0, 0]  # ties: resolved by position
    m = topk_mask(scores, k)
    flat = np.abs(scores.numpy().ravel())
    want = n_kept(flat.size, k)
    assert want == flat.size - int(round((1 - k) * flat.size))
    order = np.argsort(-flat, kind="stable")[:want]
    expected = np.zeros(flat.size, bool)
    expected[order] = True
    assert int(m.sum()) == want
    np.testing.assert_array_equal(m.numpy().ravel(), expected)


def test_supermask_training_never_changes_the_frozen_weights_and_keeps_exact_counts(digits):
    net = _net(digits)
    dens = uniform_densities(net, 0.4)
    res = train_supermask(net, digits, CFG, dens, SupermaskConfig(), device=CPU, seed=0)
    # The frozen weights: what frozen_init makes of the same seeded model, bit for bit.
    ref = _net(digits)
    frozen_init(ref, dens, SupermaskConfig())
    for name, v in ref.state_dict().items():
        assert torch.equal(res.weights[name], v), name
    params = dict(ref.named_parameters())
    for name, k in dens.items():
        assert int(res.mask[name].sum()) == n_kept(params[name].numel(), k)
        np.testing.assert_array_equal(res.mask[name].numpy(), topk_mask(res.scores[name], k).numpy())
    total = sum(params[n].numel() for n in dens)
    assert res.summary.density == sum(int(res.mask[n].sum()) for n in dens) / total
    # Scores were trained, and the trained mask beats the mask the initial scores give.
    init_scores = Supermask(_net(digits), dens, SupermaskConfig(), 0)
    assert any(not torch.equal(init_scores.score(n).detach(), res.scores[n]) for n in dens)


def test_trained_supermask_beats_its_initial_mask(digits):
    net = _net(digits, widths=(64,))
    dens = uniform_densities(net, 0.5)
    before = Supermask(_net(digits, widths=(64,)), dens, SupermaskConfig(), 0)
    frozen_init(before.net, dens, SupermaskConfig())
    with torch.no_grad():
        acc0 = (before(digits.test.x).argmax(1) == digits.test.y).float().mean().item()
    res = train_supermask(net, digits, CFG, dens, SupermaskConfig(), device=CPU, seed=0)
    assert res.summary.best_test_accuracy > acc0 + 0.2, (acc0, res.summary.best_test_accuracy)


def test_signed_constant_is_plus_minus_the_layers_kaiming_std_with_the_init_signs(digits):
    net = _net(digits)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    dens = uniform_densities(net, 0.25)
    frozen_init(net, dens, SupermaskConfig("signed_constant", scale_fan=True))
    for name in dens:
        w0, w = init[name], dict(net.named_parameters())[name].detach()
        std = math.sqrt(2.0 / w0.shape[1]) / math.sqrt(0.25)
        np.testing.assert_allclose(w.abs().numpy(), std, rtol=1e-6)
        assert torch.equal(torch.sign(w), torch.sign(w0))
    net2 = _net(digits)
    frozen_init(net2, dens, SupermaskConfig("kaiming_normal", scale_fan=False))
    for name in dens:
        assert torch.equal(dict(net2.named_parameters())[name], init[name])


def test_straight_through_gradient_reaches_the_scores_as_computed_by_hand(digits):
    """One hidden layer, cross-entropy: backprop written out in numpy with the mask treated as
    the identity; the score gradient is dL/d(w*m) * w * sign(s)."""
    net = _net(digits, widths=(16,))
    dens = {"hidden.0.weight": 0.3, "out.weight": 0.6}
    sm = Supermask(net, dens, SupermaskConfig(), seed=3)
    x, y = digits.train.x[:50], digits.train.y[:50]
    loss = F.cross_entropy(sm(x), y)
    loss.backward()
    for p in net.parameters():
        assert p.grad is None  # frozen: no gradient is even computed for the weights

    X = x.flatten(1).double().numpy()
    W1, b1 = net.hidden[0].weight.double().numpy(), net.hidden[0].bias.double().numpy()
    W2, b2 = net.out.weight.double().numpy(), net.out.bias.double().numpy()
    S1, S2 = sm.score("hidden.0.weight").detach().double().numpy(), sm.score("out.weight").detach().double().numpy()

    def top(s, k):
        flat = np.abs(s).ravel()
        keep = np.zeros(flat.size)
        keep[np.argsort(-flat, kind="stable")[: n_kept(flat.size, k)]] = 1
        return keep.reshape(s.shape)

    M1, M2 = top(S1, 0.3), top(S2, 0.6)
    z1 = X @ (W1 * M1).T + b1
    a1 = np.maximum(z1, 0)
    out = a1 @ (W2 * M2).T + b2
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(out.shape[1])[y.numpy()]
    assert abs(loss.item() - (-np.log((p * onehot).sum(1)).mean())) < 1e-5
    d_out = (p - onehot) / len(X)
    g_w2 = d_out.T @ a1
    d_z1 = (d_out @ (W2 * M2)) * (z1 > 0)
    g_w1 = d_z1.T @ X
    np.testing.assert_allclose(sm.score("out.weight").grad.double().numpy(), g_w2 * W2 * np.sign(S2),
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(sm.score("hidden.0.weight").grad.double().numpy(), g_w1 * W1 * np.sign(S1),
                               rtol=1e-4, atol=1e-7)
    # Pruned weights get score gradient too (straight-through), so a score can climb back in.
    pruned = M1 == 0
    assert np.abs(sm.score("hidden.0.weight").grad.numpy()[pruned]).sum() > 0


def test_same_seed_gives_bit_identical_masks_and_metrics(digits):
    def run():
        records = []
        net = _net(digits)
        res = train_supermask(net, digits, CFG, uniform_densities(net, 0.5), SupermaskConfig(), device=CPU,
                              seed=4, on_record=records.append)
        return res, records

    (a, ra), (b, rb) = run(), run()
    for n in a.mask:
        assert torch.equal(a.mask[n], b.mask[n])
        assert torch.equal(a.scores[n], b.scores[n])
    assert len(ra) == len(rb) > 0
    for x, y in zip(ra, rb):
        dx, dy = {f: getattr(x, f) for f in x.__dataclass_fields__}, {f: getattr(y, f) for f in y.__dataclass_fields__}
        dx.pop("seconds", None), dy.pop("seconds", None)
        assert dx == dy


def test_densities_follow_a_tickets_mask_layer_by_layer(digits):
    net = _net(digits)
    g = torch.Generator().manual_seed(0)
    ticket = {n: torch.rand(p.shape, generator=g) < 0.3 for n, p in net.named_parameters() if n in net.prunable()}
    dens = densities_of(ticket, net)
    sm = Supermask(net, dens, SupermaskConfig(), seed=0)
    for n, m in sm.mask().items():
        assert int(m.sum()) == int(ticket[n].sum())  # equal kept counts per layer
    ticket["out.weight"][:] = False
    with pytest.raises(ValueError, match="out.weight"):
        densities_of(ticket, net)


def test_mask_overlap_matches_a_direct_count():
    g = torch.Generator().manual_seed(2)
    a = {"l1": torch.rand(20, 30, generator=g) < 0.4, "l2": torch.rand(7, 5, generator=g) < 0.7}
    b = {"l1": torch.rand(20, 30, generator=g) < 0.4, "l2": torch.rand(7, 5, generator=g) < 0.2}
    got = mask_overlap(a, b, ["l1", "l2"])
    for n in ("l1", "l2"):
        A, B = a[n].numpy(), b[n].numpy()
        assert got[n][0] == pytest.approx((A & B).sum() / (A | B).sum())
        da, db = A.mean(), B.mean()
        assert got[n][1] == pytest.approx(da * db / (da + db - da * db))
    inter = sum((a[n].numpy() & b[n].numpy()).sum() for n in a)
    union = sum((a[n].numpy() | b[n].numpy()).sum() for n in a)
    assert got["all"][0] == pytest.approx(inter / union)


def test_bad_options_are_named(digits):
    with pytest.raises(ValueError, match="weight_init"):
        SupermaskConfig(weight_init="xavier")
    with pytest.raises(ValueError, match="score_init"):
        SupermaskConfig(score_init="zeros")
    net = _net(digits)
    with pytest.raises(ValueError, match="density k"):
        Supermask(net, {"out.weight": 0.0}, SupermaskConfig(), 0)
    with pytest.raises(ValueError, match="no parameter"):
        Supermask(net, {"nope.weight": 0.5}, SupermaskConfig(), 0)
