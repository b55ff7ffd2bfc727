"""Models: registry, seeded init, declared prunable tensors, and exactness of channel groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainers.config import ModelConfig
from trainers.models import MODELS, build_model
from trainers.models.base import ChannelGroup

# A plausible input shape per architecture (small where the architecture allows it).
SHAPES = {
    "mlp": (1, 40), "lenet300_100": (1, 28, 28), "student_mlp": (20,), "cnn1d": (1, 40),
    # Conv / VGG / ResNet work at any size their pools allow; 16x16 (or 8x8) keeps the suite fast.
    "conv2": (3, 16, 16), "conv4": (3, 16, 16), "conv6": (3, 16, 16),
    "vgg11": (3, 16, 16), "vgg16": (3, 16, 16), "vgg19": (3, 16, 16),
    "resnet20": (3, 8, 8), "resnet56": (3, 8, 8), "resnet": (3, 8, 8),
}


# One architecture per model class and channel-group code path (the deeper VGGs / ResNets and
# LeNet share their class and group derivation with these), to keep the suite fast on 2 cores.
REPRESENTATIVE = ["mlp", "student_mlp", "cnn1d", "conv2", "conv6", "vgg11", "resnet"]


def test_every_design_model_is_registered():
    assert set(SHAPES) <= set(MODELS)


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_every_model_builds_runs_and_declares_its_tensors(arch):
    m = build_model(ModelConfig(arch), SHAPES[arch], 10, seed=0)
    assert m(torch.randn(2, *SHAPES[arch])).shape == (2, 10)
    params = dict(m.named_parameters())
    assert m.output_weight in m.prunable() and set(m.prunable()) <= set(params)
    for g in m.channel_groups():
        names = [g.weight, g.bias, g.bn_weight, g.bn_bias, *(n for n, _ in g.consumers)]
        assert set(filter(None, names)) <= set(params), f"{arch}: group {g} names unknown parameters"
        rows = params[g.weight].shape[0]
        for name, width in g.consumers:
            assert params[name].shape[1] == rows * width, f"{arch}: {name} does not take {rows}x{width} inputs"


@pytest.mark.parametrize("arch", REPRESENTATIVE)
def test_build_is_seeded_deterministic_and_leaves_the_global_rng_alone(arch):
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = build_model(ModelConfig(arch), SHAPES[arch], 10, seed=1)
    assert torch.equal(torch.rand(1), before)
    b = build_model(ModelConfig(arch), SHAPES[arch], 10, seed=1)
    c = build_model(ModelConfig(arch), SHAPES[arch], 10, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa[a.output_weight], sc[a.output_weight])


def test_init_is_kaiming_normal_fan_in():
    m = build_model(ModelConfig("lenet300_100"), (1, 28, 28), 10, seed=0)
    w = m.hidden[0].weight
    assert abs(w.std().item() / math.sqrt(2 / 784) - 1) < 0.02 and abs(w.mean().item()) < 0.002
    assert torch.count_nonzero(m.hidden[0].bias) == 0
    # LeNet-300-100's parameter count for 28x28 inputs, from its layer sizes.
    assert sum(p.numel() for p in m.parameters()) == (784 * 300 + 300) + (300 * 100 + 100) + (100 * 10 + 10)


def test_model_options_and_errors():
    m = build_model(ModelConfig("mlp", {"widths": [7, 5, 3]}), (1, 40), 4, 0)
    assert [layer.out_features for layer in m.hidden] == [7, 5, 3] and m.out.out_features == 4
    s = build_model(ModelConfig("student_mlp", {"teacher_widths": [2, 3], "multiplier": 4}), (20,), 5, 0)
    assert [layer.out_features for layer in s.hidden] == [8, 12]
    r = build_model(ModelConfig("resnet", {"depth": 14}), (3, 8, 8), 10, 0)
    assert len(r.blocks) == 6
    with pytest.raises(ValueError, match="depth 6n\\+2"):
        build_model(ModelConfig("resnet", {"depth": 21}), (3, 8, 8), 10, 0)
    with pytest.raises(ValueError, match="ModelConfig.arch.*'nope'"):
        build_model(ModelConfig("nope"), (1,), 2, 0)


def _channel_params(model: nn.Module, g: ChannelGroup, c: int):
    """(producer slices, consumer slices) of channel c of group g, as views into the parameters."""
    p = dict(model.named_parameters())
    prod = [p[g.weight][c]] + [p[n][c : c + 1] for n in (g.bias, g.bn_weight, g.bn_bias) if n]
    cons = [p[name][:, c * w : (c + 1) * w] for name, w in g.consumers]
    return prod, cons


@pytest.mark.parametrize("arch", REPRESENTATIVE)
def test_channel_groups_are_exact(arch):
    """For every group (middle channel), in eval mode:
    1. with the channel's producer side zeroed, its consumer slices can be anything: they only
       ever see this channel (a too-wide slice would touch live channels and change the output);
    2. with its consumer slices zeroed, its producer side can be anything: the channel reaches
       the output only through the listed consumers (a missed consumer, e.g. a residual sum, or a
       too-narrow slice would leak it)."""
    model = build_model(ModelConfig(arch), SHAPES[arch], 10, seed=0).eval()
    x = torch.randn(2, *SHAPES[arch], generator=torch.Generator().manual_seed(0))
    groups = model.channel_groups()
    assert groups, f"{arch} declares no channel groups"
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for g in groups:
            rows = dict(model.named_parameters())[g.weight].shape[0]
            c = rows // 2
            prod, cons = _channel_params(model, g, c)
            saved = [t.clone() for t in prod + cons]
            for t in prod:
                t.zero_()
            ref = model(x)
            for t in cons:
                t.copy_(torch.randn(t.shape, generator=gen) * 10)
            assert torch.allclose(model(x), ref, atol=1e-5), f"{arch}: consumers of {g.weight}[{c}] touch other channels"
            for t, s in zip(prod + cons, saved):
                t.copy_(s)
            for t in cons:
                t.zero_()
            ref = model(x)
            for t in prod:
                t.copy_(torch.randn(t.shape, generator=gen) * 10)
            assert torch.allclose(model(x), ref, atol=1e-5), f"{arch}: {g.weight}[{c}] leaks past its consumers"
            for t, s in zip(prod + cons, saved):
                t.copy_(s)


def test_resnet_groups_list_only_first_convs_of_blocks():
    m = build_model(ModelConfig("resnet20"), (3, 8, 8), 10, 0)
    names = [g.weight for g in m.channel_groups()]
    assert names == [f"blocks.{i}.conv1.weight" for i in range(9)]
