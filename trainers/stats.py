"""Per-layer statistics of one pruning level's mask (-> ``MaskLayerStats`` rows).

For each prunable weight (kind ``"weight"``) and each BatchNorm layer (kind ``"bn"``,
named by module): size, kept count, density, Jaccard overlap with the previous level's
mask, mean |theta_final - theta_init| of kept vs pruned entries, sign agreement of kept
weights between init and final, and for BN layers the fraction of negative final biases
among kept channels (Tian et al.: most BN biases of trained VGGs are negative).

"Pruned" means pruned *at this level* (kept by ``previous_mask``, removed now), so travel
compares the weights this level chose between; at level 1 it is every pruned weight.
``final_weights`` are the trained weights the mask was computed from.

All numbers of a layer are computed as tensors and fetched together in one ``tolist()``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from trainers.masks import Mask
from trainers.records import MaskLayerStats

_NAN = float("nan")


def _layer_numbers(
    m: torch.Tensor, prev: torch.Tensor | None, init: torch.Tensor, final: torch.Tensor
) -> list[float]:
    m = m.flatten()
    prev_m = torch.ones_like(m) if prev is None else prev.flatten().to(m.device)
    init = init.flatten().float()
    final = final.flatten().float()
    pruned_now = prev_m & ~m
    travel = (final - init).abs()
    kept_n = m.sum()
    pruned_n = pruned_now.sum()
    inter = (m & prev_m).sum()
    union = (m | prev_m).sum()
    zero = torch.zeros((), dtype=torch.float32)
    nan = torch.full((), _NAN)
    vals = torch.stack(
        [
            kept_n.float(),
            torch.where(union > 0, inter.float() / union.clamp(min=1), torch.ones(())),
            torch.where(kept_n > 0, (travel * m).sum() / kept_n.clamp(min=1), nan),
            torch.where(pruned_n > 0, (travel * pruned_now).sum() / pruned_n.clamp(min=1), nan),
            torch.where(
                kept_n > 0, ((torch.sign(init) == torch.sign(final)) & m).sum() / kept_n.clamp(min=1), nan
            ),
            zero + pruned_n.float(),
        ]
    )
    return vals.tolist()


def _opt(x: float) -> float | None:
    return None if x != x else x  # NaN -> None


def mask_statistics(
    model: nn.Module,
    level: int,
    mask: Mask,
    previous_mask: Mask | None,
    init_weights: Mapping[str, torch.Tensor],
    final_weights: Mapping[str, torch.Tensor],
) -> list[MaskLayerStats]:
    """One ``MaskLayerStats`` per prunable weight of ``model`` and per BatchNorm layer.
    Entries absent from ``mask`` count as fully kept. ``jaccard_prev`` is None without a
    previous mask; ``travel_pruned`` is None when this level pruned nothing in the layer."""
    prunable = model.prunable() if hasattr(model, "prunable") else [
        f"{n}.weight" for n, mod in model.named_modules() if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d)
    ]

    def get(m: Mapping[str, torch.Tensor] | None, name: str, like: torch.Tensor) -> torch.Tensor | None:
        if m is None:
            return None
        t = m.get(name)
        return torch.ones(like.shape, dtype=torch.bool) if t is None else t.to("cpu", torch.bool)

    def row(layer: str, kind: str, weight: str, bias: str | None = None) -> MaskLayerStats:
        """Stats of tensor ``weight`` (a BN layer: its scale, whose mask is the channel's);
        ``bias`` given: the fraction of negative final biases among kept channels."""
        init = init_weights[weight].detach().cpu()
        final = final_weights[weight].detach().cpu()
        m = get(mask, weight, init)
        prev = get(previous_mask, weight, init)
        kept, jac, t_kept, t_pruned, sign, _ = _layer_numbers(m, prev, init, final)
        neg = None
        if bias is not None and kept > 0:
            neg = ((final_weights[bias].detach().cpu().float() < 0) & m).sum().item() / int(kept)
        return MaskLayerStats(
            level=level,
            layer=layer,
            kind=kind,
            params=m.numel(),
            kept=int(kept),
            density=kept / m.numel(),
            jaccard_prev=None if prev is None else jac,
            travel_kept=_opt(t_kept),
            travel_pruned=_opt(t_pruned),
            bn_negative_bias_fraction=neg,
            sign_agreement_kept=_opt(sign),
        )

    rows = [row(name, "weight", name) for name in prunable]
    rows += [
        row(mod_name, "bn", f"{mod_name}.weight", f"{mod_name}.bias")
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine
    ]
    return rows
