"""Plain typed settings the trainers take. The orchestrator's pydantic campaign spec
validates user input and builds these; the trainers trust them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class DataConfig:
    dataset: str  # registry name: mnist1d | digits | teacher_student | mnist | cifar10
    root: str | None = None  # on-disk root for torchvision datasets / cache dir for generated ones
    val_size: int = 0  # examples carved from train by a seeded split; 0 = no validation split
    options: dict = field(default_factory=dict)  # dataset-specific (e.g. teacher widths)


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # registry name: mlp | lenet300_100 | cnn1d | conv2 | conv4 | conv6 | vgg11 | vgg16 |
    #           vgg19 | resnet20 | resnet56 | resnet | student_mlp
    options: dict = field(default_factory=dict)  # arch-specific (e.g. widths, depth)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int | None = 10  # budget in epochs, or
    iterations: int | None = None  # budget in optimizer steps (exactly one of the two is set)
    schedule: Literal["constant", "step", "cosine"] = "step"
    milestones: tuple[int, ...] = ()  # step schedule: epochs at which lr *= gamma
    gamma: float = 0.1
    warmup_iterations: int = 0  # linear warm-up from 0 to lr
    augment: bool = False  # CIFAR pad-4 crop + flip on tensors
    eval_batch_size: int = 1024


@dataclass(frozen=True)
class PruneConfig:
    structure: Literal["unstructured", "structured"] = "unstructured"
    method: str = "magnitude_global"  # pruning registry name (see trainers/pruning.py)
    schedule: Literal["oneshot", "iterative"] = "iterative"
    rate: float = 0.2  # fraction of the remaining weights pruned per round
    levels: int = 5  # level k has density (1 - rate) ** k, for both schedules
    layer_rates: dict[str, float] = field(default_factory=dict)  # per-layer rate overrides by name
    exclude: tuple[str, ...] = ()  # parameter names never pruned
    finetune_lr: float | None = None  # "finetune" reset lr; None = training lr / 10
    # Reset whose trained weights give the next level's mask in iterative pruning; the other
    # resets of the trajectory retrain on the same masks (reinit reuses rewind's, as in the papers).
    mask_driver: str = "rewind"


@dataclass(frozen=True)
class RunSetup:
    """Everything that determines one trajectory, bar the reset modes."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    prune: PruneConfig
    seed: int = 0
