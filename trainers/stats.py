"""Per-layer statistics of one pruning level's mask (-> ``MaskLayerStats`` rows).

For each prunable weight (kind ``"weight"``) and each BatchNorm layer (kind ``"bn"``,
named by module): size, kept count, density, Jaccard overlap with the previous level's
mask, mean |theta_final - theta_init| of kept vs pruned entries, sign agreement of kept
weights between init and final, and for BN layers the fraction of negative final biases
among kept channels (Tian et al.: most BN biases of trained VGGs are negative).

"Pruned" means pruned *at this level* (kept by ``previous_mask``, removed now), so travel
compares the weights this level chose between; at level 1 it is every pruned weight.
``final_weights`` are the trained weights the mask was computed from.

Kept weights travelling further than pruned ones is expected of magnitude pruning whatever the
training did: the survivors are the large final weights, and a weight that moved far tends to end
large. ``travel_kept_null`` measures that selection effect alone: each candidate weight (alive
before this level) gets the displacement θ_final − θ_init of a random other candidate of its layer
(a seeded permutation), the same number of weights as kept is selected by |θ_init + displacement|,
and their mean |displacement| is reported. Kept travel above this null is more than selection.
(It is the unstructured magnitude null in every layer, structured ones too.)

Channel rows (kind ``"channel"``, one per channel group of a ``PrunableModel``: ``params`` =
output channels / neurons, ``kept`` = those with any weight kept) give structured levels in
channels as well as in weights; travel and sign fields are None there.

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


def _selection_null(m: torch.Tensor, prev: torch.Tensor | None, init: torch.Tensor, final: torch.Tensor,
                    generator: torch.Generator) -> float | None:
    """``travel_kept_null`` of one layer (module docstring); None when nothing is kept."""
    m = m.flatten()
    cand = torch.ones_like(m) if prev is None else prev.flatten().to(m.device)
    k = int(m.sum())
    if k == 0:
        return None
    idx = cand.nonzero().flatten()
    disp = (final.flatten().float() - init.flatten().float())[idx]
    shuffled = disp[torch.randperm(len(idx), generator=generator)]
    pseudo_final = init.flatten().float()[idx] + shuffled
    top = torch.topk(pseudo_final.abs(), k, sorted=False).indices
    return float(shuffled[top].abs().mean())


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

    generator = torch.Generator().manual_seed(1_000_003 * level + 17)  # the null's permutations: deterministic

    def row(layer: str, kind: str, weight: str, bias: str | None = None) -> MaskLayerStats:
        """Stats of tensor ``weight`` (a BN layer: its scale, whose mask is the channel's);
        ``bias`` given: the fraction of negative final biases among kept channels."""
        init = init_weights[weight].detach().cpu()
        final = final_weights[weight].detach().cpu()
        m = get(mask, weight, init)
        prev = get(previous_mask, weight, init)
        kept, jac, t_kept, t_pruned, sign, _ = _layer_numbers(m, prev, init, final)
        null = _selection_null(m, prev, init, final, generator) if kind == "weight" else None
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
            travel_kept_null=null,
        )

    def channel_row(group) -> MaskLayerStats:
        w = get(mask, group.weight, init_weights[group.weight])
        alive = w.flatten(1).any(1)
        return MaskLayerStats(
            level=level, layer=group.weight, kind="channel", params=alive.numel(), kept=int(alive.sum()),
            density=int(alive.sum()) / alive.numel(), jaccard_prev=None, travel_kept=None, travel_pruned=None,
            bn_negative_bias_fraction=None, sign_agreement_kept=None,
        )

    rows = [row(name, "weight", name) for name in prunable]
    rows += [
        row(mod_name, "bn", f"{mod_name}.weight", f"{mod_name}.bias")
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine
    ]
    if hasattr(model, "channel_groups"):
        rows += [channel_row(g) for g in model.channel_groups()]
    return rows
