"""What every registered model declares, so pruning needs no per-architecture code."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels (or neurons) of one layer that structured pruning removes together.

    Channel ``c`` of the group is: row ``c`` (dim 0) of ``weight`` and entry ``c`` of
    ``bias``; entry ``c`` of the following BatchNorm's ``bn_weight`` / ``bn_bias``; and in
    each consumer ``(name, width)`` the input slice ``[c*width, (c+1)*width)`` along dim 1
    (width > 1 where a conv output is flattened into a linear layer). Masking all of these
    makes the masked network compute exactly what the physically smaller one would.
    Only layers whose channels can be removed independently are listed (in a ResNet, the
    first conv of each block, not convs whose outputs are summed by a residual).
    """

    weight: str
    bias: str | None = None
    bn_weight: str | None = None
    bn_bias: str | None = None
    consumers: tuple[tuple[str, int], ...] = ()


class PrunableModel(nn.Module):
    """Base class of registered models.

    ``prunable()`` names the weight tensors unstructured pruning may touch (by default
    every conv / linear weight); ``output_weight`` names the last layer's weight (the LTH
    paper prunes it at half the rate); ``channel_groups()`` lists the structured groups.
    """

    output_weight: str = ""

    def prunable(self) -> list[str]:
        return [
            f"{name}.weight"
            for name, m in self.named_modules()
            if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)
        ]

    def channel_groups(self) -> list[ChannelGroup]:
        return []
