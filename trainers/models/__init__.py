"""Model registry: ``@register_model("name", options=Options)`` on a builder ``(options,
input_shape, num_classes) -> PrunableModel``, where ``Options`` is a frozen dataclass declaring
the arch's ``model.options`` (types, defaults, ranges; none: ``NoOptions``) and the builder gets
an instance of it; ``build_model`` builds and applies the seeded init.

Importing this package imports every architecture module so the registry is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainers.config import ModelConfig
from trainers.models.base import ChannelGroup, PrunableModel
from trainers.registry import Registry

Builder = Callable[[Any, tuple[int, ...], int], PrunableModel]
MODELS: Registry[Builder] = Registry("model")
# Decorator: ``@register_model("name")`` makes ``ModelConfig(arch="name")`` build it.
register_model = MODELS.register


def init_weights(model: nn.Module, seed: int) -> None:
    """Seeded Kaiming-normal (fan-in, ReLU) init of every conv / linear weight; zero biases;
    BatchNorm weight 1, bias 0. Uses its own generator: the global RNG is untouched."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=g)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.reset_running_stats()


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, seed: int) -> PrunableModel:
    """Build ``cfg.arch`` for examples of ``input_shape`` (channels first) and ``num_classes``
    outputs, with deterministic weights given ``seed``. Returned on the CPU."""
    if cfg.arch not in MODELS:
        raise ValueError(f"ModelConfig.arch: unknown architecture {cfg.arch!r}; expected one of {sorted(MODELS)}")
    # torch's default init draws from the global RNG; fork it so building a model has no side effect.
    with torch.random.fork_rng(devices=[]):
        model = MODELS[cfg.arch](MODELS.parse_options(cfg.arch, cfg.options), tuple(input_shape), num_classes)
    init_weights(model, seed)
    return model


# Architecture modules register themselves on import (kept last: they import the registry above).
from trainers.models import convnets, mlp, resnet  # noqa: E402, F401

__all__ = ["MODELS", "ChannelGroup", "PrunableModel", "build_model", "init_weights", "register_model"]
