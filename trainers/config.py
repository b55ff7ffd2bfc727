"""Plain typed settings the trainers take, and the one place their constraints are written.

Each field's range is an ``annotated_types`` constraint on its type (``Annotated[float, Gt(0)]``):
plain metadata the trainers ignore and the orchestrator's campaign validation (pydantic) enforces,
so a setting's type, default and range are defined once, here. Rules that relate several fields
(one budget, milestones inside it, warm-up shorter than it) are :func:`train_problems`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Lt, MinLen

PositiveInt = Annotated[int, Ge(1)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Gt(0), Lt(1)]  # open interval (0, 1): a pruning rate
Seed = Annotated[int, Ge(0), Lt(2**32)]  # numpy and torch generators both take it
Widths = Annotated[tuple[PositiveInt, ...], MinLen(1)]  # hidden-layer sizes


@dataclass(frozen=True)
class DataConfig:
    dataset: str  # registry name: mnist1d | digits | teacher_student | mnist | cifar10
    root: str | None = None  # on-disk root for torchvision datasets / cache dir for generated ones
    val_size: NonNegativeInt = 0  # examples carved from train by a seeded split; 0 = no validation split
    options: dict = field(default_factory=dict)  # dataset-specific, declared by the dataset's registration


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # registry name: mlp | lenet300_100 | cnn1d | conv2 | conv4 | conv6 | vgg11 | vgg16 |
    #           vgg19 | resnet20 | resnet56 | resnet | student_mlp
    options: dict = field(default_factory=dict)  # arch-specific, declared by the model's registration


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: PositiveFloat = 0.1
    momentum: Annotated[float, Ge(0), Lt(1)] = 0.9
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 1e-4
    batch_size: PositiveInt = 64
    epochs: PositiveInt | None = 10  # budget in epochs, or
    iterations: PositiveInt | None = None  # budget in optimizer steps (exactly one of the two is set)
    schedule: Literal["constant", "step", "cosine"] = "step"
    milestones: tuple[PositiveInt, ...] = ()  # step schedule: epochs at which lr *= gamma
    gamma: PositiveFloat = 0.1
    warmup_iterations: NonNegativeInt = 0  # linear warm-up from 0 to lr
    augment: bool = False  # CIFAR pad-4 crop + flip on tensors
    eval_batch_size: PositiveInt = 1024


@dataclass(frozen=True)
class PruneConfig:
    structure: Literal["unstructured", "structured"] = "unstructured"
    method: str = "magnitude_global"  # pruning registry name (see trainers/pruning.py)
    schedule: Literal["oneshot", "iterative"] = "iterative"
    rate: Fraction = 0.2  # fraction of the remaining weights pruned per round
    levels: PositiveInt = 5  # level k has density (1 - rate) ** k, for both schedules
    layer_rates: dict[str, Fraction] = field(default_factory=dict)  # per-layer rate overrides by name
    exclude: tuple[str, ...] = ()  # parameter names never pruned
    finetune_lr: PositiveFloat | None = None  # "finetune" reset lr; None = training lr / 10
    # Reset whose trained weights give the next level's mask in iterative pruning; the other
    # resets of the trajectory retrain on the same masks (reinit reuses rewind's, as in the papers).
    mask_driver: str = "rewind"


@dataclass(frozen=True)
class CheckpointConfig:
    """When a training checkpoints (trainers/checkpoint.py): every ``every_epochs`` epochs or
    ``every_minutes`` minutes, whichever comes first (None turns a trigger off). Not part of any
    run's identity: changing it never changes a result, only how much a kill can lose."""

    every_epochs: PositiveInt | None = None
    every_minutes: PositiveFloat | None = 10.0


@dataclass(frozen=True)
class RunSetup:
    """Everything that determines one trajectory, bar the reset modes."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    prune: PruneConfig
    seed: Seed = 0


def train_problems(cfg: TrainConfig, steps_per_epoch: int | None) -> list[tuple[str, str]]:
    """(key path under ``train``, problem) for settings inconsistent with each other or with the
    budget. ``steps_per_epoch`` (None when unknown) sizes a budget given in the other unit; the
    rules that need it are skipped without it."""
    out: list[tuple[str, str]] = []
    if (cfg.epochs is None) == (cfg.iterations is None):
        got = "both" if cfg.epochs is not None else "neither"
        return [("train", f"set exactly one of epochs / iterations, got {got}")]
    for i in range(1, len(cfg.milestones)):
        if cfg.milestones[i] <= cfg.milestones[i - 1]:
            out.append((f"train.milestones[{i}]", f"milestones must increase, got {cfg.milestones[i]} after "
                                                  f"{cfg.milestones[i - 1]}"))
    if steps_per_epoch is not None:
        total = cfg.iterations if cfg.iterations is not None else cfg.epochs * steps_per_epoch
        last_epoch = cfg.epochs if cfg.epochs is not None else -(-cfg.iterations // steps_per_epoch)
    else:
        total = cfg.iterations
        last_epoch = cfg.epochs
    budget = f"epochs = {cfg.epochs}" if cfg.epochs is not None else f"iterations = {cfg.iterations}"
    if last_epoch is not None:
        for i, m in enumerate(cfg.milestones):
            if m >= last_epoch:
                out.append((f"train.milestones[{i}]", f"milestone {m} is not before the end of training "
                                                      f"({last_epoch} epochs, {budget}); expected milestones < {last_epoch}"))
    if total is not None and cfg.warmup_iterations >= total:
        out.append(("train.warmup_iterations", f"warm-up of {cfg.warmup_iterations} iterations is not shorter than "
                                               f"the budget of {total} iterations ({budget})"))
    return out
