"""Run-time device choice. Nothing else in the trainers hard-codes a device.

AMP, channels-last and pinned memory are CUDA-only speed-ups; ``is_cuda`` is the one
predicate the training loop asks before turning any of them on.
"""

from __future__ import annotations

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """Return ``prefer`` ("cpu", "cuda", "cuda:1", ...) if given, else CUDA when present, else CPU.

    Raises ValueError if ``prefer`` names CUDA on a machine without it.
    """
    if prefer:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} requested but CUDA is not available on this machine")
        return device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def is_cuda(device: torch.device | str) -> bool:
    """True when AMP / channels-last / pinned memory may be used on ``device``."""
    return torch.device(device).type == "cuda"
