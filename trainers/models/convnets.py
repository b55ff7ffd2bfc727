"""Plain convolutional stacks: cnn1d (MNIST-1D), conv2/conv4/conv6 (LTH paper), CIFAR VGG-11/16/19 (BN).

All are one ``ConvNet``: convs (each optionally followed by BatchNorm, always by ReLU, maybe
by 2x max-pool), then flatten (or global average pool), hidden linear layers, output layer.
Channel groups are derived from that structure, so a new stack is one spec + one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainers.config import PositiveInt
from trainers.models import register_model
from trainers.models.base import ChannelGroup, PrunableModel


@dataclass(frozen=True)
class ConvSpec:
    channels: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    pool: bool = False  # 2x max-pool after the ReLU


class ConvNet(PrunableModel):
    """Modules are named ``convs.<i>``, ``bns.<i>`` (if batch_norm), ``fcs.<j>``, ``out``."""

    def __init__(self, input_shape: tuple[int, ...], specs: list[ConvSpec], fc_widths: tuple[int, ...],
                 num_classes: int, *, batch_norm: bool = False, global_pool: bool = False):
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ValueError(f"ConvNet: expected input_shape (C, L) or (C, H, W), got {input_shape}")
        conv, bn, self._pool = ((nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d) if len(input_shape) == 2
                                else (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d))
        self.specs = specs
        chans = [input_shape[0]] + [s.channels for s in specs]
        # Bias is redundant before BatchNorm (its shift absorbs it).
        self.convs = nn.ModuleList(conv(chans[i], s.channels, s.kernel, s.stride, s.padding, bias=not batch_norm)
                                   for i, s in enumerate(specs))
        self.bns = nn.ModuleList(bn(s.channels) for s in specs) if batch_norm else None
        self.global_pool = global_pool
        with torch.no_grad():  # infer the flattened width (per-channel spatial size) by a dry run
            self.eval()  # (BatchNorm in train mode rejects a 1x1 batch of one)
            feat = self.features(torch.zeros(1, *input_shape))
            self.train()
        if feat.shape[-1] == 0:
            raise ValueError(f"ConvNet: input_shape {input_shape} is too small for {len(specs)} conv layers")
        self.spatial = 1 if global_pool else math.prod(feat.shape[2:])
        sizes = (chans[-1] * self.spatial, *fc_widths)
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], num_classes)
        self.output_weight = "out.weight"

    def features(self, x: Tensor) -> Tensor:
        for i, (c, s) in enumerate(zip(self.convs, self.specs)):
            x = c(x)
            if self.bns is not None:
                x = self.bns[i](x)
            x = x.relu()
            if s.pool:
                x = self._pool(2)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = x.mean(dim=tuple(range(2, x.dim()))) if self.global_pool else x.flatten(1)
        for fc in self.fcs:
            x = fc(x).relu()
        return self.out(x)

    def channel_groups(self) -> list[ChannelGroup]:
        groups = []
        linears = [f"fcs.{j}" for j in range(len(self.fcs))] + ["out"]
        for i, c in enumerate(self.convs):
            last = i == len(self.convs) - 1
            consumer = (linears[0], self.spatial) if last else (f"convs.{i + 1}", 1)
            groups.append(ChannelGroup(
                weight=f"convs.{i}.weight",
                bias=f"convs.{i}.bias" if c.bias is not None else None,
                bn_weight=f"bns.{i}.weight" if self.bns is not None else None,
                bn_bias=f"bns.{i}.bias" if self.bns is not None else None,
                consumers=((f"{consumer[0]}.weight", consumer[1]),),
            ))
        for j in range(len(self.fcs)):
            groups.append(ChannelGroup(weight=f"fcs.{j}.weight", bias=f"fcs.{j}.bias",
                                       consumers=((f"{linears[j + 1]}.weight", 1),)))
        return groups


@dataclass(frozen=True)
class CNN1dOptions:
    channels: PositiveInt = 25


@register_model("cnn1d", options=CNN1dOptions)
def cnn1d(options: CNN1dOptions, input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    """The MNIST-1D paper's CNN: three strided Conv1d (kernels 5, 3, 3; stride 2) of ``channels``
    channels, then one linear layer."""
    ch = options.channels
    specs = [ConvSpec(ch, 5, 2, 1), ConvSpec(ch, 3, 2, 1), ConvSpec(ch, 3, 2, 1)]
    return ConvNet(input_shape, specs, (), num_classes)


def _lth_conv(blocks: int, input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    # LTH paper Conv-2/4/6: pairs of 3x3 convs (64, 128, 256 channels) each followed by max-pool,
    # then FC 256-256-classes.
    specs = []
    for b in range(blocks):
        specs += [ConvSpec(64 * 2**b), ConvSpec(64 * 2**b, pool=True)]
    return ConvNet(input_shape, specs, (256, 256), num_classes)


@register_model("conv2")
def conv2(options, input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    return _lth_conv(1, input_shape, num_classes)


@register_model("conv4")
def conv4(options, input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    return _lth_conv(2, input_shape, num_classes)


@register_model("conv6")
def conv6(options, input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    return _lth_conv(3, input_shape, num_classes)


# CIFAR VGG plans ("M" = max-pool); the final pool is replaced by global average pooling, as in
# the Rethinking / network-slimming CIFAR VGGs.
_VGG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


def _vgg(plan: list, input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    specs: list[ConvSpec] = []
    for v in plan:
        if v == "M":
            specs[-1] = ConvSpec(specs[-1].channels, pool=True)
        else:
            specs.append(ConvSpec(int(v)))
    return ConvNet(input_shape, specs, (), num_classes, batch_norm=True, global_pool=True)


def _register_vgg(name: str) -> None:
    @register_model(name)
    def build(options, input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
        return _vgg(_VGG[name], input_shape, num_classes)


for _name in _VGG:
    _register_vgg(_name)
