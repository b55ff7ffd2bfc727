"""CIFAR ResNets of He et al. (2016): depth 6n+2, three stages of n basic blocks (16, 32, 64 x width).

Downsampling shortcuts are 1x1 conv + BN (option B), as in open_lth. Only each block's first
conv is a channel group: the second conv's output is summed with the shortcut, so its
channels cannot be removed independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Predicate
from torch import Tensor, nn

from trainers.config import PositiveInt
from trainers.models import register_model
from trainers.models.base import ChannelGroup, PrunableModel


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(h)) + self.shortcut(x)).relu()


class ResNet(PrunableModel):
    def __init__(self, depth: int, input_shape: tuple[int, ...], num_classes: int, width: int = 16):
        super().__init__()
        if not is_6n_plus_2(depth):
            raise ValueError(f"ModelConfig.options.depth: a CIFAR ResNet needs depth 6n+2 (8, 14, 20, 56, ...), got {depth}")
        if len(input_shape) != 3:
            raise ValueError(f"ResNet: expected input_shape (C, H, W), got {input_shape}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, c_in = [], width
        for stage in range(3):
            c_out = width * 2**stage
            for b in range(n):
                blocks.append(Block(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Linear(c_in, num_classes)
        self.output_weight = "out.weight"

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.bn(self.conv(x)).relu())
        return self.out(x.mean(dim=(2, 3)))

    def channel_groups(self) -> list[ChannelGroup]:
        return [
            ChannelGroup(weight=f"blocks.{i}.conv1.weight", bn_weight=f"blocks.{i}.bn1.weight",
                         bn_bias=f"blocks.{i}.bn1.bias", consumers=((f"blocks.{i}.conv2.weight", 1),))
            for i in range(len(self.blocks))
        ]


def is_6n_plus_2(depth: int) -> bool:
    """A CIFAR ResNet's depth: 3 stages of n basic blocks (2 convs each), plus the stem and the head."""
    return depth >= 8 and (depth - 2) % 6 == 0


@dataclass(frozen=True)
class ResNetWidthOptions:
    width: PositiveInt = 16  # channels of the first stage (doubled per stage)


@dataclass(frozen=True)
class ResNetOptions(ResNetWidthOptions):
    depth: Annotated[int, Predicate(is_6n_plus_2)] = 20  # 6n+2: 8, 14, 20, 32, 44, 56, 110, ...


@register_model("resnet", options=ResNetOptions)
def resnet(options: ResNetOptions, input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    return ResNet(options.depth, input_shape, num_classes, options.width)


@register_model("resnet20", options=ResNetWidthOptions)
def resnet20(options: ResNetWidthOptions, input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    return ResNet(20, input_shape, num_classes, options.width)


@register_model("resnet56", options=ResNetWidthOptions)
def resnet56(options: ResNetWidthOptions, input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    return ResNet(56, input_shape, num_classes, options.width)
