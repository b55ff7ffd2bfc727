"""Fully-connected models: mlp (configurable widths), lenet300_100, student_mlp."""

from __future__ import annotations

import math

from torch import Tensor, nn

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


def _widths(options: dict, default: tuple[int, ...]) -> tuple[int, ...]:
    widths = tuple(int(w) for w in options.get("widths", default))
    if not widths or min(widths) < 1:
        raise ValueError(f"ModelConfig.options.widths: expected positive hidden-layer widths, got {widths}")
    return widths


@register_model("mlp")
def mlp(options: dict, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """options: ``widths`` (hidden layer sizes, default (100, 100) as in the MNIST-1D paper)."""
    return MLP(math.prod(input_shape), _widths(options, (100, 100)), num_classes)


@register_model("lenet300_100")
def lenet300_100(options: dict, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """LeNet-300-100 of the LTH paper."""
    return MLP(math.prod(input_shape), (300, 100), num_classes)


@register_model("student_mlp")
def student_mlp(options: dict, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """Tian et al.'s over-parameterised student: ``teacher_widths`` (default (10, 15, 20, 25), keep
    equal to the dataset's ``widths``) times ``multiplier`` (default 10)."""
    mult = int(options.get("multiplier", 10))
    teacher = _widths({"widths": options.get("teacher_widths", (10, 15, 20, 25))}, ())
    return MLP(math.prod(input_shape), tuple(w * mult for w in teacher), num_classes)
