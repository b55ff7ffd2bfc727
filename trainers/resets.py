"""Reset modes: what the surviving weights start from before a pruned network is retrained.

Registry ``RESETS`` (``@register_reset("name")``); a reset name is ``mode`` or ``mode@k``
(only ``rewind@k`` takes an argument). Each mode returns a :class:`ResetStart`:

- ``rewind``    -- theta_0 (the winning ticket), schedule from iteration 0;
- ``rewind@k``  -- the dense run's weights at iteration k, schedule resumed at k;
- ``reinit``    -- a fresh seeded init from the same distribution (seed from (setup.seed, level));
- ``finetune``  -- the trained source weights, constant lr ``prune.finetune_lr`` (default lr/10);
- ``lr_rewind`` -- the trained source weights, original schedule replayed (Renda et al. 2020);
- ``supermask`` / ``supermask_kaiming`` -- no weight training: edge-popup (trainers.supermask)
  on theta_0 with signed-constant / Kaiming-normal weights, keeping in every layer as many
  weights as the level's ticket (``trajectory.retrain`` runs it; ``SUPERMASK_RESETS``).

The caller multiplies the weights by the mask; the start weights are returned unmasked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from trainers.config import RunSetup
from trainers.masks import Weights
from trainers.registry import Registry
from trainers.supermask import SupermaskConfig

if TYPE_CHECKING:  # trajectory imports this module
    from trainers.models.base import PrunableModel
    from trainers.trajectory import DenseState


def derive_seed(*parts: object) -> int:
    """A 63-bit seed determined by ``parts`` (ints / strings), stable across runs and platforms."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class ResetSpec:
    mode: str
    k: int | None = None  # rewind iteration for rewind@k

    @property
    def name(self) -> str:
        return self.mode if self.k is None else f"{self.mode}@{self.k}"


@dataclass(frozen=True)
class ResetStart:
    """Where retraining starts: weights (unmasked), the iteration the schedule resumes at, and a
    constant lr that replaces the configured schedule (None = the configured schedule; the
    trajectory then trains with ``schedule="constant"``, no warm-up, at this lr)."""

    weights: Weights
    start_iteration: int = 0
    lr_override: float | None = None


ResetFn = Callable[..., ResetStart]
RESETS: Registry[ResetFn] = Registry("reset mode")
# Modes that take "@k".
_TAKES_K = {"rewind"}
# Decorator: ``@register_reset("name")`` makes the reset mode usable in campaigns.
register_reset = RESETS.register


def parse_reset(name: str) -> ResetSpec:
    """``"rewind"`` -> ResetSpec("rewind"); ``"rewind@500"`` -> ResetSpec("rewind", 500).
    Unknown modes or a bad ``@k`` raise ``ValueError`` naming the reset."""
    mode, sep, arg = name.partition("@")
    if mode not in RESETS:
        raise ValueError(f"reset {name!r}: unknown mode {mode!r}; known: {sorted(RESETS)} (+ rewind@<k>)")
    if not sep:
        return ResetSpec(mode)
    if mode not in _TAKES_K:
        raise ValueError(f"reset {name!r}: only {sorted(_TAKES_K)} take '@<iteration>'")
    if not arg.isdigit():
        raise ValueError(f"reset {name!r}: expected '@<non-negative integer iteration>', got {arg!r}")
    return ResetSpec(mode, int(arg))


def _copy(w: Weights) -> Weights:
    return {k: v.detach().clone() for k, v in w.items()}


@register_reset("rewind")
def _rewind(spec, dense, source, setup, level, model) -> ResetStart:
    if spec.k is None or spec.k == 0:
        return ResetStart(_copy(dense.init))
    if spec.k not in dense.rewind_points:
        raise ValueError(
            f"reset {spec.name!r} needs the dense run's weights at iteration {spec.k}; the dense run kept "
            f"{sorted(dense.rewind_points)} (pass rewind_iterations=({spec.k},) to train_dense)"
        )
    return ResetStart(_copy(dense.rewind_points[spec.k]), start_iteration=spec.k)


@register_reset("reinit")
def _reinit(spec, dense, source, setup, level, model) -> ResetStart:
    from trainers.models import build_model  # other engineer's registry; imported when used

    seed = derive_seed(setup.seed, level, "reinit")
    fresh = build_model(setup.model, tuple(dense.input_shape), dense.num_classes, seed)
    return ResetStart({k: v.detach().clone() for k, v in fresh.state_dict().items()})


@register_reset("finetune")
def _finetune(spec, dense, source, setup, level, model) -> ResetStart:
    lr = setup.prune.finetune_lr if setup.prune.finetune_lr is not None else setup.train.lr / 10
    return ResetStart(_copy(source), lr_override=lr)


@register_reset("lr_rewind")
def _lr_rewind(spec, dense, source, setup, level, model) -> ResetStart:
    return ResetStart(_copy(source))


# Reset modes that train a supermask instead of weights, with their options (the paper's best,
# signed constant, and Kaiming normal; scores start as nn.Linear's default init in both).
SUPERMASK_RESETS: dict[str, SupermaskConfig] = {
    "supermask": SupermaskConfig(weight_init="signed_constant"),
    "supermask_kaiming": SupermaskConfig(weight_init="kaiming_normal"),
}


def trains_weights(name: str) -> bool:
    """Whether reset ``name`` trains weights, so its trained weights can rank the next level's
    mask (a supermask trains scores only)."""
    return name.partition("@")[0] not in SUPERMASK_RESETS


def _supermask(spec, dense, source, setup, level, model) -> ResetStart:
    raise ValueError(f"reset {spec.name!r} trains scores, not weights: run it with trajectory.retrain")


for _name in SUPERMASK_RESETS:
    register_reset(_name)(_supermask)


def initial_weights(
    reset: str,
    dense: DenseState,
    source: Weights,
    setup: RunSetup,
    level: int,
    model: PrunableModel | None = None,
) -> ResetStart:
    """Start of retraining at ``level`` for ``reset`` (unmasked weights + schedule info).
    ``source`` is the mask driver's trained weights the level's mask came from."""
    spec = parse_reset(reset)
    return RESETS[spec.mode](spec, dense, source, setup, level, model)


def to_device(weights: Weights, device: torch.device | str) -> Weights:
    return {k: v.to(device) for k, v in weights.items()}
