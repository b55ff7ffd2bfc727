"""Mask statistics against a plain per-element recomputation (independent of the vectorised code)."""

from __future__ import annotations

import math

import torch

from trainers.config import ModelConfig, PruneConfig
from trainers.models import build_model
from trainers.pruning import compute_mask
from trainers.stats import mask_statistics


def _slow(mask, prev, init, final):
    m, i, f = mask.flatten().tolist(), init.flatten().tolist(), final.flatten().tolist()
    p = [True] * len(m) if prev is None else prev.flatten().tolist()
    kept = [k for k in range(len(m)) if m[k]]
    pruned_now = [k for k in range(len(m)) if p[k] and not m[k]]
    union = sum(1 for k in range(len(m)) if m[k] or p[k])
    inter = sum(1 for k in range(len(m)) if m[k] and p[k])
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    return dict(
        kept=len(kept),
        jaccard=None if prev is None else inter / union,
        travel_kept=sum(abs(f[k] - i[k]) for k in kept) / len(kept),
        travel_pruned=(sum(abs(f[k] - i[k]) for k in pruned_now) / len(pruned_now)) if pruned_now else None,
        sign=sum(1 for k in kept if sign(i[k]) == sign(f[k])) / len(kept),
    )


def test_stats_match_plain_recomputation():
    model = build_model(ModelConfig("cnn1d", {"channels": 6}), (1, 40), 4, seed=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    final = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in init.items()}
    final2 = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in final.items()}
    cfg = PruneConfig(rate=0.4)
    m1 = compute_mask(model, final, cfg, 1, None, 0)
    m2 = compute_mask(model, final2, cfg, 2, m1, 0)
    for level, mask, prev, fin in ((1, m1, None, final), (2, m2, m1, final2)):
        rows = mask_statistics(model, level, mask, prev, init, fin)
        by_layer = {r.layer: r for r in rows}
        assert set(by_layer) == set(model.prunable())
        for name in model.prunable():
            r, want = by_layer[name], _slow(mask[name], None if prev is None else prev[name], init[name], fin[name])
            assert r.level == level and r.kind == "weight" and r.params == mask[name].numel()
            assert r.kept == want["kept"] and r.density == want["kept"] / r.params
            for got, exp in ((r.jaccard_prev, want["jaccard"]), (r.travel_kept, want["travel_kept"]),
                             (r.travel_pruned, want["travel_pruned"]), (r.sign_agreement_kept, want["sign"])):
                assert (got is None) == (exp is None)
                if exp is not None:
                    assert math.isclose(got, exp, rel_tol=1e-5, abs_tol=1e-7)


def test_bn_rows_report_negative_bias_fraction_of_kept_channels():
    model = build_model(ModelConfig("vgg11"), (3, 32, 32), 10, seed=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    final = {k: (v + 0.2 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v for k, v in init.items()}
    cfg = PruneConfig(structure="structured", method="l1_structured", rate=0.5)
    mask = compute_mask(model, final, cfg, 1, None, 0)
    rows = [r for r in mask_statistics(model, 1, mask, None, init, final) if r.kind == "bn"]
    assert [r.layer for r in rows] == [f"bns.{i}" for i in range(len(model.bns))]
    for r in rows:
        keep = mask[f"{r.layer}.weight"]
        bias = final[f"{r.layer}.bias"]
        assert r.kept == int(keep.sum()) == r.params - round(0.5 * r.params)
        assert r.bn_negative_bias_fraction == (int((bias[keep] < 0).sum()) / int(keep.sum()))
