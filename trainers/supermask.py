"""Supermasks by edge-popup (Ramanujan et al. 2020, "What's hidden in a randomly weighted network?").

The network's weights stay frozen at their initialisation; every prunable weight gets a score,
and the forward pass uses, in each layer, the weights whose |score| is among the top ``k`` of
that layer. The top-k selection has no gradient, so the scores are trained with the
straight-through estimator: the gradient of the loss w.r.t. the masked weight ``w * m`` is
passed to the score as if the mask were the identity (``dL/ds = dL/d(w*m) * w * sign(s)``,
the sign from ranking on ``|s|`` as the paper's code does).

Pieces:
- :func:`topk_mask` -- the exact per-layer selection (kept = n - round((1 - k) * n), the same
  rounding as ``trainers.pruning``; ties broken by position, so equal scores give equal masks);
- :func:`frozen_init` -- ``kaiming_normal`` or ``signed_constant`` (each weight +-std of its
  layer's Kaiming std, the paper's best) from the seeded Kaiming init ``build_model`` gives;
- :class:`Supermask` -- a module wrapping the frozen net; its only trainable parameters are the
  scores, so the one training loop (``trainers.training.train``: SGD momentum, cosine lr,
  seeded data order, records) trains it unchanged. The forward pass is
  ``torch.func.functional_call`` with the masked weights substituted (no copy of the net);
- :func:`train_supermask` -- the whole run, returning the final mask and the training summary.

Density means what it means for tickets: the fraction of ``model.prunable()`` weights kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from trainers.config import TrainConfig
from trainers.datasets import DataSplits
from trainers.masks import Mask
from trainers.models.base import PrunableModel
from trainers.records import LevelSummary, RecordCallback
from trainers.training import train

WeightInit = Literal["kaiming_normal", "signed_constant"]
ScoreInit = Literal["kaiming_uniform", "kaiming_normal", "uniform"]
WEIGHT_INITS = ("kaiming_normal", "signed_constant")
SCORE_INITS = ("kaiming_uniform", "kaiming_normal", "uniform")


@dataclass(frozen=True)
class SupermaskConfig:
    """Options of an edge-popup run.

    ``scale_fan``: compute the Kaiming std with fan_in * k (the paper's "scaled" variant), so a
    layer that keeps a fraction k of its inputs keeps the activation variance of the dense
    layer. Our MLPs have no BatchNorm to undo the shrinkage, and without it the logits of a
    sparse net shrink by about k^(depth/2); on by default for that reason.
    """

    weight_init: WeightInit = "signed_constant"
    score_init: ScoreInit = "kaiming_uniform"
    scale_fan: bool = True

    def __post_init__(self) -> None:
        if self.weight_init not in WEIGHT_INITS:
            raise ValueError(f"SupermaskConfig.weight_init: expected one of {WEIGHT_INITS}, got {self.weight_init!r}")
        if self.score_init not in SCORE_INITS:
            raise ValueError(f"SupermaskConfig.score_init: expected one of {SCORE_INITS}, got {self.score_init!r}")


def n_kept(n: int, k: float) -> int:
    """Weights a layer of ``n`` keeps at density ``k``: the complement of ``round((1 - k) * n)``
    pruned, the rounding ``trainers.pruning`` uses, so equal densities give equal counts."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"supermask density k must be in (0, 1], got {k}")
    return n - int(round((1.0 - k) * n))


def topk_mask(scores: Tensor, k: float) -> Tensor:
    """Bool mask (shape of ``scores``) of the ``n_kept(numel, k)`` largest ``|scores|``; ties go
    to the earlier position (stable sort)."""
    flat = scores.detach().abs().flatten()
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    keep[order[: n_kept(flat.numel(), k)]] = True
    return keep.view_as(scores)


class _StraightThroughTopK(torch.autograd.Function):
    """Forward: the float top-k mask of ``|scores|``; backward: the gradient unchanged."""

    @staticmethod
    def forward(ctx, abs_scores: Tensor, k: float) -> Tensor:  # noqa: D401 - torch API
        return topk_mask(abs_scores, k).to(abs_scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def uniform_densities(model: PrunableModel, k: float) -> dict[str, float]:
    """The paper's setting: the same k in every prunable layer."""
    return {name: float(k) for name in model.prunable()}


def densities_of(mask: Mapping[str, Tensor], model: PrunableModel) -> dict[str, float]:
    """Per-layer densities of a ticket's mask (a layer absent from it is fully kept), so a
    supermask keeps exactly as many weights as the ticket in every layer."""
    params = dict(model.named_parameters())
    out = {}
    for name in model.prunable():
        m = mask.get(name)
        out[name] = 1.0 if m is None else int(m.sum()) / m.numel()
        if out[name] == 0.0:
            raise ValueError(f"ticket mask keeps no weight of layer {name!r} ({params[name].numel()} weights)")
    return out


@torch.no_grad()
def frozen_init(model: PrunableModel, densities: Mapping[str, float], cfg: SupermaskConfig) -> None:
    """Turn the Kaiming-normal weights ``build_model`` drew (fan_in, ReLU gain) into the frozen
    weights of ``cfg.weight_init``, in place: ``signed_constant`` keeps each weight's sign at
    magnitude ``std = sqrt(2 / fan_in)``; with ``scale_fan`` both inits use fan_in * k."""
    params = dict(model.named_parameters())
    for name, k in densities.items():
        w = params[name]
        fan_in = w[0].numel()
        std = math.sqrt(2.0 / fan_in)
        scale = 1.0 / math.sqrt(k) if cfg.scale_fan else 1.0  # std of fan_in*k = std / sqrt(k)
        if cfg.weight_init == "signed_constant":
            w.copy_(torch.sign(w) * std * scale)
        else:
            w.mul_(scale)


def init_scores(shape: torch.Size, cfg: SupermaskConfig, generator: torch.Generator) -> Tensor:
    """Seeded initial scores; ``kaiming_uniform`` is nn.Linear's default init (a = sqrt(5)), as
    in the paper's code."""
    t = torch.empty(shape)
    if cfg.score_init == "kaiming_uniform":
        nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator)
    elif cfg.score_init == "kaiming_normal":
        nn.init.kaiming_normal_(t, mode="fan_in", nonlinearity="relu", generator=generator)
    else:
        nn.init.uniform_(t, 0.0, 1.0, generator=generator)
    return t


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys may not contain dots


class Supermask(nn.Module):
    """The frozen network ``net`` with one score tensor per layer of ``densities``.

    Every parameter of ``net`` (weights, biases, BatchNorm scale/shift) is frozen
    (``requires_grad=False``); the scores are the only parameters an optimizer sees. BatchNorm
    running statistics still update in training mode, as in the paper's non-affine BN.
    """

    def __init__(self, net: PrunableModel, densities: Mapping[str, float], cfg: SupermaskConfig,
                 seed: int):
        super().__init__()
        params = dict(net.named_parameters())
        unknown = sorted(set(densities) - set(params))
        if unknown:
            raise ValueError(f"supermask densities name no parameter of {type(net).__name__}: {unknown}")
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.densities = {n: float(k) for n, k in densities.items()}
        for k in self.densities.values():
            n_kept(1, k)  # range check with the message of n_kept
        g = torch.Generator().manual_seed(seed)
        self.scores = nn.ParameterDict(
            {_key(n): nn.Parameter(init_scores(params[n].shape, cfg, g)) for n in self.densities})

    def score(self, name: str) -> Tensor:
        return self.scores[_key(name)]

    def masked_weights(self) -> dict[str, Tensor]:
        params = dict(self.net.named_parameters())
        return {n: params[n] * _StraightThroughTopK.apply(self.score(n).abs(), k)
                for n, k in self.densities.items()}

    def forward(self, x: Tensor) -> Tensor:
        return functional_call(self.net, self.masked_weights(), (x,))

    def mask(self) -> Mask:
        """The current supermask as CPU bool tensors keyed by the net's parameter names."""
        return {n: topk_mask(self.score(n), k).cpu() for n, k in self.densities.items()}

    def density(self) -> float:
        """Fraction of the layers' weights the mask keeps (counts are fixed by the densities)."""
        params = dict(self.net.named_parameters())
        kept = sum(n_kept(params[n].numel(), k) for n, k in self.densities.items())
        return kept / sum(params[n].numel() for n in self.densities)


@dataclass
class SupermaskResult:
    mask: Mask  # final top-k mask per layer (CPU bool)
    summary: LevelSummary
    scores: dict[str, Tensor]  # final scores keyed by parameter name (CPU)
    weights: dict[str, Tensor]  # the frozen weights used (CPU state_dict of the net)
    diverged: bool


def score_train_config(cfg: TrainConfig) -> TrainConfig:
    """The paper's optimiser for the scores: SGD with momentum and a cosine lr from
    ``cfg.lr`` to 0 over the same budget (no warm-up); momentum, weight decay, batch size and
    budget come from ``cfg``."""
    return dataclasses.replace(cfg, optimizer="sgd", schedule="cosine", milestones=(), warmup_iterations=0)


def train_supermask(net: PrunableModel, data: DataSplits, cfg: TrainConfig, densities: Mapping[str, float],
                    sm: SupermaskConfig, *, device: torch.device | str, seed: int, level: int = 0,
                    reset: str = "supermask", on_record: RecordCallback | None = None) -> SupermaskResult:
    """Edge-popup on ``net`` (its current weights are the random init): re-initialise the weights
    of ``densities``' layers as ``sm.weight_init`` prescribes, freeze everything, train scores
    with :func:`score_train_config` of ``cfg``. Records (``EpochMetrics`` per split and epoch,
    one ``LevelSummary``) go through ``on_record`` with ``reset`` and the supermask's density."""
    frozen_init(net, densities, sm)
    wrapper = Supermask(net, densities, sm, seed)
    res = train(wrapper, data, score_train_config(cfg), device=device, seed=seed, level=level, reset=reset,
                density=wrapper.density(), on_record=on_record)
    wrapper.to("cpu")
    scores = {n: wrapper.score(n).detach().clone() for n in densities}
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return SupermaskResult(wrapper.mask(), res.summary, scores, weights, res.diverged)


def mask_overlap(a: Mapping[str, Tensor], b: Mapping[str, Tensor], names: list[str]) -> dict[str, tuple[float, float]]:
    """Per layer (and ``"all"`` pooled): (Jaccard |A and B| / |A or B|, the Jaccard two
    independent random masks of the same densities have in expectation, da*db/(da+db-da*db))."""
    out: dict[str, tuple[float, float]] = {}
    inter_all = union_all = chance_inter = chance_union = 0.0
    for n in names:
        ma, mb = a[n].bool().cpu(), b[n].bool().cpu()
        inter, union = int((ma & mb).sum()), int((ma | mb).sum())
        da, db, size = int(ma.sum()) / ma.numel(), int(mb.sum()) / mb.numel(), ma.numel()
        out[n] = (inter / union if union else 1.0, _chance(da, db))
        inter_all, union_all = inter_all + inter, union_all + union
        chance_inter, chance_union = chance_inter + da * db * size, chance_union + (da + db - da * db) * size
    out["all"] = (inter_all / union_all if union_all else 1.0,
                  chance_inter / chance_union if chance_union else 1.0)
    return out


def _chance(da: float, db: float) -> float:
    union = da + db - da * db
    return da * db / union if union else 1.0
