"""Mask files (plain tensors, weights_only loading), apply_mask and density."""

from __future__ import annotations

import io

import pytest
import torch

from trainers.config import ModelConfig, PruneConfig
from trainers.masks import apply_mask, density, load_mask, save_mask
from trainers.models import build_model
from trainers.pruning import compute_mask


def _model():
    return build_model(ModelConfig("mlp", {"widths": (16, 8)}), (1, 12), 4, seed=0)


def test_save_load_roundtrip_file_and_buffer(tmp_path):
    model = _model()
    mask = compute_mask(model, model.state_dict(), PruneConfig(rate=0.3), 1, None, 0)
    path = tmp_path / "mask.pt"
    save_mask(mask, path)
    buf = io.BytesIO()
    save_mask(mask, buf)
    buf.seek(0)
    for loaded in (load_mask(path), load_mask(buf)):
        assert loaded.keys() == mask.keys()
        assert all(torch.equal(loaded[k], mask[k]) and loaded[k].dtype == torch.bool for k in mask)


def test_load_rejects_non_mask_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(3)}, bad)  # float, not bool
    with pytest.raises(ValueError, match=r"bad\.pt.*'w'"):
        load_mask(bad)
    torch.save([1, 2], bad)
    with pytest.raises(ValueError, match="expected a dict"):
        load_mask(bad)


def test_apply_mask_zeroes_exactly_and_checks_names():
    model = _model()
    mask = compute_mask(model, model.state_dict(), PruneConfig(rate=0.5), 1, None, 0)
    apply_mask(model, mask)
    params = dict(model.named_parameters())
    for k, m in mask.items():
        assert bool((params[k][~m] == 0).all())
        assert bool((params[k][m] != 0).all())  # Kaiming-normal weights are never exactly 0
    with pytest.raises(ValueError, match="'nope'"):
        apply_mask(model, {"nope": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        apply_mask(model, {"out.weight": torch.ones(2, dtype=torch.bool)})


def test_density_counts_prunable_only():
    model = _model()
    mask = compute_mask(model, model.state_dict(), PruneConfig(rate=0.2), 1, None, 0)
    total = sum(model.get_parameter(n).numel() for n in model.prunable())
    kept = sum(int(mask[n].sum()) for n in model.prunable())
    assert density(mask, model.prunable()) == kept / total
    assert kept == total - round(0.2 * total)
