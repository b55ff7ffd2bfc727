"""Physically smaller network from a structured mask.

Driven entirely by ``model.channel_groups()``: for each group the kept output channels
(rows of the group weight with any kept entry) are sliced out of the layer's weight and
bias, the following BatchNorm (weight, bias, running stats) and each consumer's input
columns (``width`` columns per channel when a conv output is flattened into a linear
layer). Works for any registered model whose groups are declared (MLP, conv nets, VGG,
ResNet first-conv-of-block). Any finer-grained mask entries left over are applied to the
sliced weights, so the result computes what the masked model computes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from trainers.masks import Mask, check_mask
from trainers.models.base import PrunableModel

# Attribute holding a module's output / input size, per module type (updated after slicing).
_OUT_ATTR = {nn.Linear: "out_features", nn.Conv1d: "out_channels", nn.Conv2d: "out_channels"}
_IN_ATTR = {nn.Linear: "in_features", nn.Conv1d: "in_channels", nn.Conv2d: "in_channels"}


def _owner(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    mod_name, _, attr = param_name.rpartition(".")
    return (model.get_submodule(mod_name) if mod_name else model), attr


def _set(module: nn.Module, attr: str, value: torch.Tensor) -> None:
    old = getattr(module, attr)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(module, attr, value.contiguous())  # buffer (running stats)


def _check_plain(module: nn.Module, name: str) -> None:
    if type(module) not in _OUT_ATTR and not isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"export_structured: layer {name!r} is a {type(module).__name__}; only Linear/Conv1d/"
                         "Conv2d/BatchNorm layers can be sliced")
    if getattr(module, "groups", 1) != 1:
        raise ValueError(f"export_structured: grouped conv {name!r} (groups={module.groups}) is not supported")


@torch.no_grad()
def export_structured(model: PrunableModel, mask: Mask) -> nn.Module:
    """A deep copy of ``model`` with the channels removed by ``mask`` physically deleted.
    Raises ``ValueError`` if a group would lose every channel or a layer type can't be sliced."""
    check_mask(model, mask)
    out = copy.deepcopy(model)
    # Which output channels of each group survive, from the *original* mask.
    plans = []
    for g in model.channel_groups():
        m = mask.get(g.weight)
        if m is None:
            continue
        keep = m.flatten(1).any(dim=1)
        if not bool(keep.any()):
            raise ValueError(f"export_structured: layer {g.weight!r} has no channel left")
        plans.append((g, keep.nonzero().flatten()))
    # Index the leftover fine-grained mask along with the weights: slice a copy of it too.
    residual = {k: v.clone() for k, v in mask.items()}

    for g, idx in plans:
        mod, attr = _owner(out, g.weight)
        _check_plain(mod, g.weight)
        _set(mod, attr, getattr(mod, attr).index_select(0, idx.to(getattr(mod, attr).device)))
        residual[g.weight] = residual[g.weight].index_select(0, idx)
        setattr(mod, _OUT_ATTR[type(mod)], len(idx))
        if g.bias is not None:
            bmod, battr = _owner(out, g.bias)
            _set(bmod, battr, getattr(bmod, battr)[idx])
            if g.bias in residual:
                residual[g.bias] = residual[g.bias][idx]
        if g.bn_weight is not None:
            bn, _ = _owner(out, g.bn_weight)
            _check_plain(bn, g.bn_weight)
            for a in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(bn, a)
                if t is not None:
                    _set(bn, a, t[idx])
            bn.num_features = len(idx)
            for n in (g.bn_weight, g.bn_bias):
                if n is not None and n in residual:
                    residual[n] = residual[n][idx]
        for cname, width in g.consumers:
            cmod, cattr = _owner(out, cname)
            _check_plain(cmod, cname)
            cols = (idx[:, None] * width + torch.arange(width)[None, :]).flatten()
            w = getattr(cmod, cattr)
            _set(cmod, cattr, w.index_select(1, cols.to(w.device)))
            residual[cname] = residual[cname].index_select(1, cols)
            setattr(cmod, _IN_ATTR[type(cmod)], len(cols))

    params = dict(out.named_parameters())
    for name, m in residual.items():
        p = params[name]
        p.mul_(m.to(device=p.device, dtype=p.dtype))
    return out
