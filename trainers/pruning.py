"""Pruning methods: a registry of functions that turn trained weights into a :data:`Mask`.

Every method has the signature ``fn(model, weights, target, previous_mask, generator) -> Mask``:

- ``weights``: the trained weights to rank (a state-dict-like ``{name: tensor}``);
- ``target``: ``{layer name: fraction}`` -- the fraction of each layer's (or pool's) *dense*
  weights (unstructured) or channels (structured) that are pruned once this level is done, counting
  what ``previous_mask`` already removed; layers absent from it are not pruned;
- ``previous_mask``: the mask the weights were trained under (iterative pruning) or None;
  what it pruned stays pruned, so masks of an iterative schedule are nested;
- ``generator``: a seeded ``torch.Generator`` (random baselines only).

The returned mask covers every ``model.prunable()`` weight (all-True where untouched) plus, for
structured methods, the biases / BatchNorm entries / consumer input slices of removed channels.
Kept counts are exact and depend on the level only: a layer (or pool) of ``n`` dense weights or
channels at target ``f`` keeps ``n - round(f * n)`` (Python rounding, as torch.nn.utils.prune does),
whether it gets there in one shot or round by round. (Rounding each round's share of what remains
instead would let the schedules drift apart: 20 vs 19 of 256 neurons after six rounds of 35%.)
Ties in magnitude are broken by position (stable sort), so equal inputs give equal masks.

Add a method: one function + ``@register_pruning("name")``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

import torch

from trainers.config import PruneConfig
from trainers.masks import Mask, Weights, check_mask
from trainers.models.base import ChannelGroup, PrunableModel
from trainers.registry import Registry

PruneFn = Callable[[PrunableModel, Weights, dict[str, float], Mask | None, torch.Generator], Mask]
PRUNING_METHODS: Registry[PruneFn] = Registry("pruning method")
# Methods that remove whole channels (need PruneConfig.structure == "structured").
STRUCTURED_METHODS: set[str] = set()

# Key of PruneConfig.layer_rates that stands for the model's output layer (model.output_weight).
OUTPUT_ALIAS = "output"


def register_pruning(name: str, *, structured: bool = False, version: int = 1) -> Callable[[PruneFn], PruneFn]:
    add = PRUNING_METHODS.register(name, version=version)  # version: see Registry

    def deco(fn: PruneFn) -> PruneFn:
        add(fn)
        if structured:
            STRUCTURED_METHODS.add(name)
        return fn

    return deco


def lth_layer_rates(model: PrunableModel, rate: float) -> dict[str, float]:
    """The LTH paper's per-layer overrides: the output layer pruned at half ``rate``."""
    return {model.output_weight: rate / 2}


# ----------------------------------------------------------------------------- helpers


def _n_keep(fraction: float, n_total: int, n_alive: int) -> int:
    """Entries kept of ``n_total`` when ``fraction`` of them is pruned in all (never more than alive)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"pruning fraction must be in [0, 1], got {fraction}")
    return min(n_alive, n_total - int(round(fraction * n_total)))


def _prev(previous_mask: Mask | None, name: str, like: torch.Tensor) -> torch.Tensor:
    m = None if previous_mask is None else previous_mask.get(name)
    return torch.ones_like(like, dtype=torch.bool) if m is None else m.to("cpu", torch.bool)


def _full_mask(model: PrunableModel, previous_mask: Mask | None) -> Mask:
    """Start mask: the previous mask (copied) over at least every prunable weight."""
    params = dict(model.named_parameters())
    out: Mask = {}
    if previous_mask is not None:
        check_mask(model, previous_mask)
        out = {k: v.to("cpu", torch.bool).clone() for k, v in previous_mask.items()}
    for n in model.prunable():
        out.setdefault(n, torch.ones(params[n].shape, dtype=torch.bool))
    return out


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask keeping the ``n_keep`` highest-scoring alive entries (flat tensors)."""
    s = torch.where(alive, scores, torch.full_like(scores, -1.0))  # scores >= 0: dead never win
    order = torch.sort(s, descending=True, stable=True).indices
    keep = torch.zeros_like(alive)
    keep[order[:n_keep]] = True
    return keep


def _check_nonempty(name: str, kept: int, what: str) -> None:
    if kept == 0:
        raise ValueError(f"pruning would remove every {what} of layer {name!r}; lower its rate or exclude it")


def _weight(weights: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in weights:
        raise ValueError(f"weights have no entry {name!r} (a prunable parameter of the model)")
    return weights[name].detach().to("cpu", torch.float32)


# ----------------------------------------------------------------------------- unstructured


@register_pruning("magnitude_global")
def magnitude_global(model, weights, target, previous_mask, generator) -> Mask:
    """One magnitude threshold over all layers that share a rate (with the default config: all
    prunable weights; a layer given its own rate in ``layer_rates`` is ranked on its own)."""
    mask = _full_mask(model, previous_mask)
    pools: dict[float, list[str]] = defaultdict(list)
    for name, rate in target.items():
        pools[rate].append(name)
    for rate, names in pools.items():
        flat_w = torch.cat([_weight(weights, n).abs().flatten() for n in names])
        alive = torch.cat([mask[n].flatten() for n in names])
        keep = _keep_top(flat_w, alive, _n_keep(rate, alive.numel(), int(alive.sum())))
        for n, part in zip(names, keep.split([mask[n].numel() for n in names])):
            mask[n] = part.view_as(mask[n])
            _check_nonempty(n, int(part.sum()), "weight")
    return mask


@register_pruning("magnitude_layerwise")
def magnitude_layerwise(model, weights, target, previous_mask, generator) -> Mask:
    """Each layer is pruned to its own target fraction, smallest magnitudes first."""
    mask = _full_mask(model, previous_mask)
    for name, rate in target.items():
        alive = mask[name].flatten()
        keep = _keep_top(_weight(weights, name).abs().flatten(), alive, _n_keep(rate, alive.numel(), int(alive.sum())))
        _check_nonempty(name, int(keep.sum()), "weight")
        mask[name] = keep.view_as(mask[name])
    return mask


@register_pruning("random_unstructured")
def random_unstructured(model, weights, target, previous_mask, generator) -> Mask:
    """Random baseline: per layer, as many kept weights as ``magnitude_global`` keeps, chosen
    uniformly among the remaining ones."""
    reference = magnitude_global(model, weights, target, previous_mask, generator)
    mask = _full_mask(model, previous_mask)
    for name in target:
        alive = mask[name].flatten()
        scores = torch.rand(alive.shape, generator=generator)
        mask[name] = _keep_top(scores, alive, int(reference[name].sum())).view_as(mask[name])
    return mask


# ----------------------------------------------------------------------------- structured


def _groups_by_weight(model: PrunableModel) -> dict[str, ChannelGroup]:
    return {g.weight: g for g in model.channel_groups()}


def _channel_alive(mask: Mask, group: ChannelGroup) -> torch.Tensor:
    w = mask[group.weight]
    return w.flatten(1).any(dim=1)


def _drop_channels(model: PrunableModel, mask: Mask, group: ChannelGroup, keep: torch.Tensor) -> None:
    """Mask out everything that belongs to the channels not in ``keep`` (bool over channels)."""
    params = dict(model.named_parameters())

    def get(name: str) -> torch.Tensor:
        if name not in mask:
            mask[name] = torch.ones(params[name].shape, dtype=torch.bool)
        return mask[name]

    drop = ~keep
    get(group.weight)[drop] = False
    for name in (group.bias, group.bn_weight, group.bn_bias):
        if name is not None:
            get(name)[drop] = False
    for name, width in group.consumers:
        m = get(name)
        cols = drop.repeat_interleave(width)
        if cols.numel() != m.shape[1]:
            raise ValueError(
                f"channel group {group.weight!r}: consumer {name!r} has {m.shape[1]} inputs, "
                f"expected {drop.numel()} channels x width {width}"
            )
        m[:, cols] = False


def _structured(model, weights, target, previous_mask, scores_fn) -> Mask:
    groups = _groups_by_weight(model)
    mask = _full_mask(model, previous_mask)
    for name, rate in target.items():
        if name not in groups:
            raise ValueError(
                f"structured pruning target {name!r} is not a channel group of {type(model).__name__} "
                f"(groups: {sorted(groups)})"
            )
        group = groups[name]
        alive = _channel_alive(mask, group)
        n_keep = _n_keep(rate, alive.numel(), int(alive.sum()))
        _check_nonempty(name, n_keep, "channel")
        keep = _keep_top(scores_fn(group), alive, n_keep)
        _drop_channels(model, mask, group, keep)
    return mask


@register_pruning("l1_structured", structured=True)
def l1_structured(model, weights, target, previous_mask, generator) -> Mask:
    """Li et al. (2017): per channel group, prune output channels to the target fraction, those with
    the smallest L1 norm of their weights (plus their bias, BN entries and consumer slices)."""
    return _structured(
        model, weights, target, previous_mask, lambda g: _weight(weights, g.weight).flatten(1).abs().sum(1)
    )


@register_pruning("random_structured", structured=True)
def random_structured(model, weights, target, previous_mask, generator) -> Mask:
    """Random baseline: same kept channel count per group as ``l1_structured``, channels drawn
    uniformly among the remaining ones."""
    return _structured(
        model,
        weights,
        target,
        previous_mask,
        lambda g: torch.rand(model.get_parameter(g.weight).shape[0], generator=generator),
    )


# ----------------------------------------------------------------------------- from a config


def layer_targets(model: PrunableModel, cfg: PruneConfig, rate: float | None = None) -> dict[str, float]:
    """``{layer: rate}`` for one round: ``rate`` (default ``cfg.rate``) for every candidate layer
    (prunable weights, or channel groups when structured) not in ``cfg.exclude``, overridden by
    ``cfg.layer_rates`` (key ``"output"`` = the output layer). Unknown names raise ``ValueError``."""
    rate = cfg.rate if rate is None else rate
    structured = cfg.structure == "structured"
    candidates = [g.weight for g in model.channel_groups()] if structured else list(model.prunable())
    known = set(model.prunable()) | set(candidates)
    for n in cfg.exclude:
        if n not in known:
            raise ValueError(f"prune.exclude: {n!r} is not a prunable weight of {type(model).__name__}")
    targets = {n: rate for n in candidates if n not in cfg.exclude}
    for key, r in cfg.layer_rates.items():
        name = model.output_weight if key == OUTPUT_ALIAS else key
        if name not in candidates:
            raise ValueError(
                f"prune.layer_rates: {key!r} is not a {'channel group' if structured else 'prunable weight'} "
                f"of {type(model).__name__} (candidates: {candidates})"
            )
        if name in cfg.exclude:
            continue
        targets[name] = r
    return targets


def level_rate(rate: float, level: int, schedule: str) -> float:
    """Fraction of the dense weights (channels) pruned once ``level`` is done: ``1 - (1-rate)**level``
    for both schedules. Iterative gets there by pruning ``rate`` of what remains each round, one-shot
    straight from dense; both keep the same count at every level (module docstring)."""
    if schedule not in ("oneshot", "iterative"):
        raise ValueError(f"prune.schedule must be 'oneshot' or 'iterative', got {schedule!r}")
    return 1.0 - (1.0 - rate) ** level


def compute_mask(
    model: PrunableModel,
    weights: Weights,
    prune_cfg: PruneConfig,
    level: int,
    previous_mask: Mask | None,
    seed: int,
) -> Mask:
    """The mask of pruning level ``level`` (>= 1) from trained ``weights``.

    Each layer (pool) goes to density ``(1-rate)**level`` of its dense size (per-layer overrides of
    ``rate``): iterative among the weights remaining under ``previous_mask``, one-shot from dense
    (``previous_mask`` ignored). Random methods draw from a generator seeded by (seed, level).
    """
    if level < 1:
        raise ValueError(f"pruning level must be >= 1, got {level}")
    method = prune_cfg.method
    if method not in PRUNING_METHODS:
        raise ValueError(f"prune.method: unknown {method!r}; registered: {sorted(PRUNING_METHODS)}")
    structured = method in STRUCTURED_METHODS
    if structured != (prune_cfg.structure == "structured"):
        raise ValueError(
            f"prune.method {method!r} is {'structured' if structured else 'unstructured'} but "
            f"prune.structure is {prune_cfg.structure!r}"
        )
    base = layer_targets(model, prune_cfg)
    target = {n: level_rate(r, level, prune_cfg.schedule) for n, r in base.items()}
    prev = previous_mask if prune_cfg.schedule == "iterative" else None
    from trainers.resets import derive_seed  # local: resets imports trajectory-level helpers

    gen = torch.Generator().manual_seed(derive_seed(seed, level, "prune"))
    return PRUNING_METHODS[method](model, weights, target, prev, gen)
