"""Pruning masks: plain ``{parameter name: bool tensor}`` dicts.

A mask names only the parameters it constrains; a parameter absent from a mask is fully
kept. Unstructured masks cover every ``model.prunable()`` weight; structured masks also
cover biases, BatchNorm weight/bias and the consumer layers' input slices of removed
channels. Masks are saved as plain tensors (``torch.save`` / ``torch.load(weights_only=True)``),
never as pickled modules, so loading one runs no code.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

Mask = dict[str, torch.Tensor]
Weights = dict[str, torch.Tensor]


def save_mask(mask: Mapping[str, torch.Tensor], path_or_buffer: str | os.PathLike | io.IOBase) -> None:
    """Write ``mask`` as a dict of CPU bool tensors."""
    torch.save({k: v.detach().to("cpu", torch.bool).contiguous() for k, v in mask.items()}, path_or_buffer)


def load_mask(path_or_buffer: str | os.PathLike | io.IOBase) -> Mask:
    """Read a mask written by :func:`save_mask`; a file that is not a ``{str: bool tensor}`` dict
    raises ``ValueError`` naming the file and the offending entry."""
    where = getattr(path_or_buffer, "name", path_or_buffer)
    obj = torch.load(path_or_buffer, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"mask file {where!s}: expected a dict of bool tensors, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor) or v.dtype != torch.bool:
            raise ValueError(f"mask file {where!s}: entry {k!r} is not a bool tensor keyed by a parameter name")
    return obj


def check_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` if a mask entry names no parameter of ``model`` or has the wrong shape."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise ValueError(f"mask entry {name!r} names no parameter of {type(model).__name__}")
        if tuple(m.shape) != tuple(params[name].shape):
            raise ValueError(
                f"mask entry {name!r} has shape {tuple(m.shape)}, parameter has {tuple(params[name].shape)}"
            )


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked-out entries of ``model``'s parameters in place."""
    check_mask(model, mask)
    params = dict(model.named_parameters())
    for name, m in mask.items():
        p = params[name]
        p.mul_(m.to(device=p.device, dtype=p.dtype))


def mask_weights(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> Weights:
    """A copy of a weights dict with masked-out entries zeroed (entries not in ``mask`` copied as is)."""
    out = {}
    for k, v in weights.items():
        m = mask.get(k)
        out[k] = v.clone() if m is None else v * m.to(device=v.device, dtype=v.dtype)
    return out


def ones_mask(model: nn.Module, names: Iterable[str]) -> Mask:
    """All-kept mask over the named parameters."""
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in names}


def density(mask: Mapping[str, torch.Tensor], prunable_names: Iterable[str]) -> float:
    """Fraction of the weights of ``prunable_names`` kept by ``mask``. Names absent from the mask
    are skipped (their sizes are unknown here); every mask :mod:`trainers.pruning` returns covers all
    ``model.prunable()`` names, so for those this is the true density."""
    kept = total = 0
    for n in prunable_names:
        m = mask.get(n)
        if m is None:
            continue
        kept += int(m.sum())
        total += m.numel()
    return 1.0 if total == 0 else kept / total
