"""Structured export: the physically smaller network computes what the masked one does."""

from __future__ import annotations

import pytest
import torch

from trainers.config import ModelConfig, PruneConfig
from trainers.export import export_structured
from trainers.masks import apply_mask
from trainers.models import build_model
from trainers.pruning import compute_mask

CASES = [
    ("mlp", {"widths": (24, 16)}, (1, 10)),
    ("cnn1d", {"channels": 8}, (1, 40)),
    ("vgg11", {}, (3, 32, 32)),
    ("resnet20", {"width": 8}, (3, 16, 16)),
]


def _perturb_bn(model, seed):
    """Trained-looking BN (non-trivial affine + running stats) so the test exercises them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("arch,options,shape", CASES)
def test_export_matches_masked_model(arch, options, shape):
    model = build_model(ModelConfig(arch, options), shape, 5, seed=1)
    _perturb_bn(model, 0)
    assert model.channel_groups(), f"{arch} declares no channel groups"
    prev = None
    for level in (1, 2):  # iterative: exports of nested masks too
        mask = compute_mask(model, model.state_dict(), PruneConfig(structure="structured", method="l1_structured",
                                                                   rate=0.5), level, prev, seed=0)
        prev = mask
    masked = model
    apply_mask(masked, mask)
    small = export_structured(masked, mask)
    n_small = sum(p.numel() for p in small.parameters())
    n_big = sum(p.numel() for p in masked.parameters())
    assert n_small < n_big
    x = torch.randn(7, *shape, generator=torch.Generator().manual_seed(2))
    masked.eval()
    small.eval()
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-5)


def test_export_refuses_empty_group():
    model = build_model(ModelConfig("mlp", {"widths": (4,)}), (1, 6), 3, seed=0)
    mask = {"hidden.0.weight": torch.zeros(4, 6, dtype=torch.bool)}
    with pytest.raises(ValueError, match="hidden.0.weight"):
        export_structured(model, mask)
