"""Fully-connected models: mlp (configurable widths), lenet300_100, student_mlp."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from trainers.config import PositiveInt, Widths
from trainers.models import register_model
from trainers.models.base import ChannelGroup, PrunableModel


class MLP(PrunableModel):
    """Flatten, then ReLU hidden layers ``hidden.<i>``, then linear ``out``."""

    def __init__(self, in_features: int, widths: tuple[int, ...], num_classes: int):
        super().__init__()
        sizes = (in_features, *widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], num_classes)
        self.output_weight = "out.weight"

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = layer(x).relu()
        return self.out(x)

    def channel_groups(self) -> list[ChannelGroup]:
        nxt = [f"hidden.{i + 1}" for i in range(len(self.hidden) - 1)] + ["out"]
        return [
            ChannelGroup(weight=f"hidden.{i}.weight", bias=f"hidden.{i}.bias", consumers=((f"{nxt[i]}.weight", 1),))
            for i in range(len(self.hidden))
        ]


@dataclass(frozen=True)
class MLPOptions:
    widths: Widths = (100, 100)  # hidden layer sizes (the MNIST-1D paper's MLP)


@register_model("mlp", options=MLPOptions)
def mlp(options: MLPOptions, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    return MLP(math.prod(input_shape), tuple(options.widths), num_classes)


@register_model("lenet300_100")
def lenet300_100(options, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """LeNet-300-100 of the LTH paper."""
    return MLP(math.prod(input_shape), (300, 100), num_classes)


@dataclass(frozen=True)
class StudentOptions:
    teacher_widths: Widths = (10, 15, 20, 25)  # keep equal to the teacher_student dataset's widths
    multiplier: PositiveInt = 10  # student width per teacher node


@register_model("student_mlp", options=StudentOptions)
def student_mlp(options: StudentOptions, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """Tian et al.'s over-parameterised student: the teacher's widths times ``multiplier``."""
    return MLP(math.prod(input_shape), tuple(w * options.multiplier for w in options.teacher_widths), num_classes)
