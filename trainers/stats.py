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
    rows: list[MaskLayerStats] = []
    prunable = model.prunable() if hasattr(model, "prunable") else [
        f"{n}.weight" for n, mod in model.named_modules() if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d)
    ]

    def get(m: Mapping[str, torch.Tensor] | None, name: str, like: torch.Tensor) -> torch.Tensor | None:
        if m is None:
            return None
        t = m.get(name)
        return torch.ones(like.shape, dtype=torch.bool) if t is None else t.to("cpu", torch.bool)

    for name in prunable:
        init = init_weights[name].detach().cpu()
        final = final_weights[name].detach().cpu()
        m = get(mask, name, init)
        prev = get(previous_mask, name, init)
        kept, jac, t_kept, t_pruned, sign, _ = _layer_numbers(m, prev, init, final)
        rows.append(
            MaskLayerStats(
                level=level,
                layer=name,
                kind="weight",
                params=m.numel(),
                kept=int(kept),
                density=kept / m.numel(),
                jaccard_prev=None if prev is None else jac,
                travel_kept=_opt(t_kept),
                travel_pruned=_opt(t_pruned),
                bn_negative_bias_fraction=None,
                sign_agreement_kept=_opt(sign),
            )
        )

    for mod_name, mod in model.named_modules():
        if not isinstance(mod, nn.modules.batchnorm._BatchNorm) or not mod.affine:
            continue
        w_name, b_name = f"{mod_name}.weight", f"{mod_name}.bias"
        init = init_weights[w_name].detach().cpu()
        final = final_weights[w_name].detach().cpu()
        m = get(mask, w_name, init)
        prev = get(previous_mask, w_name, init)
        kept, jac, t_kept, t_pruned, sign, _ = _layer_numbers(m, prev, init, final)
        bias = final_weights[b_name].detach().cpu().float()
        neg = ((bias < 0) & m).sum().item() / max(int(kept), 1) if kept > 0 else None
        rows.append(
            MaskLayerStats(
                level=level,
                layer=mod_name,
                kind="bn",
                params=m.numel(),
                kept=int(kept),
                density=kept / m.numel(),
                jaccard_prev=None if prev is None else jac,
                travel_kept=_opt(t_kept),
                travel_pruned=_opt(t_pruned),
                bn_negative_bias_fraction=neg,
                sign_agreement_kept=_opt(sign),
            )
        )
    return rows
