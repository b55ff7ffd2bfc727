"""Training checkpoints: what a killed training needs to continue, bit-identically on CPU.

A :class:`TrainingCheckpoint` is taken by ``trainers.training.train`` at a *safe point* (the end
of a batch or of an epoch) and holds the weights, the optimizer state (momentum / Adam moments
and step counts), the AMP scaler, the position in the run (iteration, epochs completed, the
partial sums of an unfinished epoch), every RNG the run draws from (torch CPU / CUDA, numpy,
python, the augmentation generator of the current epoch; the data order needs none: each
epoch's order comes from its own generator seeded by ``(seed, epoch)``), the per-epoch
evaluations behind the best-so-far metrics, the records already emitted and the rewind
snapshots taken so far. ``train(..., resume=ckpt)`` in a fresh process continues from it;
its final weights, masks and every record equal those of an uninterrupted run
(tests/test_checkpoint.py).

A :class:`Checkpointer` decides *when* (every N epochs or T minutes, whichever comes first, or
at once when preemption is requested, see ``trainers.preemption``) and hands the checkpoint to
a ``save`` callable: the trainers never write to a store, the caller does (a local file with
:func:`file_sink`, the orchestrator's store through its layout module).

Checkpoints are plain tensors, numbers and strings: ``to_bytes`` is ``torch.save`` and
``from_bytes`` reads it back with ``torch.load(weights_only=True)`` (no pickled code).
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trainers import preemption
from trainers.config import CheckpointConfig
from trainers.records import EpochMetrics

FORMAT = 1  # bumped when the fields change; an older checkpoint is refused, never misread
# The default period is the campaign setting's (one source of truth): an hour-long training loses
# at most a sixth of itself to a kill.
DEFAULT_EVERY_MINUTES = CheckpointConfig().every_minutes


@dataclass
class TrainingCheckpoint:
    """One training's state at a safe point (see module docstring)."""

    run: dict[str, Any]  # identity of the run (settings, seed, level, reset, ...): refused for another run
    iteration: int  # optimizer steps done
    epoch: int  # epochs completed before the current (possibly partial) one
    model: dict[str, Tensor]  # CPU state_dict (parameters and buffers)
    optimizer: dict  # optimizer.state_dict(), tensors on the CPU
    scaler: dict  # GradScaler.state_dict() (empty when AMP scaling is off)
    rng: dict  # global RNG states: torch, cuda (list), numpy, python
    aug_rng: Tensor | None  # the current epoch's augmentation generator (None at an epoch boundary)
    partial: tuple[Tensor, Tensor, int] | None  # unfinished epoch: loss sum, correct, examples seen
    rows: list[dict]  # per-epoch evaluations so far (the summary's best / final / val-selected come from them)
    records: list[EpochMetrics]  # records emitted so far, in order
    snapshots: dict[int, dict[str, Tensor]]  # rewind snapshots taken so far (iteration -> state_dict)
    lr: float  # the lr in force at the last step
    seconds: float  # training seconds before this checkpoint (the summary sums them)

    @property
    def mid_epoch(self) -> bool:
        return self.partial is not None

    def to_state(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["records"] = [dataclasses.asdict(r) for r in self.records]
        d["partial"] = list(self.partial) if self.partial is not None else None
        d["format"] = FORMAT
        return d

    @classmethod
    def from_state(cls, d: dict) -> TrainingCheckpoint:
        if d.get("format") != FORMAT:
            raise ValueError(f"checkpoint: format {d.get('format')!r}, this code reads format {FORMAT}")
        d = dict(d)
        d.pop("format")
        d["records"] = [EpochMetrics(**r) for r in d["records"]]
        d["partial"] = tuple(d["partial"]) if d["partial"] is not None else None
        d["snapshots"] = {int(k): v for k, v in d["snapshots"].items()}
        return cls(**d)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.to_state(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "checkpoint") -> TrainingCheckpoint:
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say which one
            raise ValueError(f"{source}: not a readable training checkpoint ({type(e).__name__}: {e})") from e
        if not isinstance(state, dict):
            raise ValueError(f"{source}: not a training checkpoint (got {type(state).__name__})")
        return cls.from_state(state)

    def check_run(self, run: dict[str, Any]) -> None:
        """Raise ValueError naming the first setting in which this checkpoint's run differs from ``run``."""
        for key in sorted(set(run) | set(self.run)):
            if self.run.get(key) != run.get(key):
                raise ValueError(f"checkpoint: taken for {key} = {self.run.get(key)!r}, this run has "
                                 f"{key} = {run.get(key)!r}; a checkpoint resumes only the run that wrote it")


# ----------------------------------------------------------------------------- RNG states


def rng_state() -> dict:
    """The global RNG states a training may draw from (dropout, any numpy / python use)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def to_cpu(obj: Any) -> Any:
    """A deep copy of ``obj`` with every tensor cloned to the CPU (safe to keep while training goes on)."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


# ----------------------------------------------------------------------------- when to save


@dataclass
class Checkpointer:
    """When to checkpoint a training and where the checkpoint goes.

    ``save`` receives each checkpoint (it must write it atomically: a kill during the write
    must leave the previous checkpoint readable). A checkpoint is due every ``every_epochs``
    completed epochs or ``every_minutes`` of training, whichever comes first (None turns that
    trigger off), and at once when preemption was requested (``trainers.preemption``): then
    ``train`` saves at the end of the current batch and raises ``preemption.Preempted``.
    """

    save: Callable[[TrainingCheckpoint], None]
    every_epochs: int | None = None
    every_minutes: float | None = DEFAULT_EVERY_MINUTES
    clock: Callable[[], float] = time.monotonic
    written: int = 0  # checkpoints saved
    seconds: float = 0.0  # time spent capturing and saving them (what a checkpoint costs the run)
    last_iteration: int | None = None  # iteration of the last checkpoint saved
    _last_time: float = field(default=0.0, repr=False)
    _last_epoch: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.every_epochs is not None and self.every_epochs < 1:
            raise ValueError(f"Checkpointer.every_epochs: expected an integer >= 1 or None, got {self.every_epochs}")
        if self.every_minutes is not None and not self.every_minutes > 0:
            raise ValueError(f"Checkpointer.every_minutes: expected a number > 0 or None, got {self.every_minutes}")

    def start(self, epoch: int) -> None:
        """The training starts (or resumes) with ``epoch`` epochs completed: periods count from now."""
        self._last_time, self._last_epoch = self.clock(), epoch

    @property
    def preempted(self) -> bool:
        return preemption.requested()

    def due_in_epoch(self) -> bool:
        """At the end of a batch: preemption requested or the time period elapsed."""
        return self.preempted or (self.every_minutes is not None
                                  and self.clock() - self._last_time >= 60.0 * self.every_minutes)

    def due_after_epoch(self, epoch: int) -> bool:
        """After epoch ``epoch`` (its records emitted): any trigger, the epoch count included."""
        return self.due_in_epoch() or (self.every_epochs is not None and epoch - self._last_epoch >= self.every_epochs)

    def write(self, capture: Callable[[], TrainingCheckpoint]) -> TrainingCheckpoint:
        t = time.perf_counter()
        ckpt = capture()
        self.save(ckpt)
        self.seconds += time.perf_counter() - t
        self.written += 1
        self.last_iteration = ckpt.iteration
        self._last_time, self._last_epoch = self.clock(), ckpt.epoch
        if self.preempted:
            preemption.honoured()  # a SIGTERM handler waiting for this checkpoint may end the process now
        return ckpt


@dataclass
class CheckpointSlot:
    """Where a caller keeps the checkpoint of the training it is running (one slot holds one
    training's latest checkpoint: a unit of the orchestrator has one). ``for_training`` gives
    ``train`` its ``checkpointer`` and, when the slot holds a checkpoint of that same training
    (level and reset), its ``resume``; ``on_resume`` hears of it (the orchestrator records the
    resume point in the unit's marker)."""

    save: Callable[[TrainingCheckpoint], None]
    load: Callable[[], TrainingCheckpoint | None]
    every_epochs: int | None = None
    every_minutes: float | None = DEFAULT_EVERY_MINUTES
    on_resume: Callable[[TrainingCheckpoint], None] | None = None

    def for_training(self, level: int, reset: str) -> dict[str, Any]:
        ckpt = self.load()
        if ckpt is not None and (ckpt.run.get("level"), ckpt.run.get("reset")) != (level, reset):
            ckpt = None  # another training's (an earlier level, killed before its removal): overwritten
        if ckpt is not None and self.on_resume is not None:
            self.on_resume(ckpt)
        return {"checkpointer": Checkpointer(self.save, self.every_epochs, self.every_minutes), "resume": ckpt}


def train_kwargs(slot: CheckpointSlot | None, level: int, reset: str) -> dict[str, Any]:
    """``train`` keyword arguments for one training (none without a slot)."""
    return slot.for_training(level, reset) if slot is not None else {}


def file_sink(path: str | os.PathLike) -> Callable[[TrainingCheckpoint], None]:
    """A ``Checkpointer.save`` writing to a local file atomically (temporary file, fsync, rename)."""
    target = Path(path)

    def save(ckpt: TrainingCheckpoint) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(ckpt.to_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    return save


def load_file(path: str | os.PathLike) -> TrainingCheckpoint | None:
    """The checkpoint at ``path``, or None when there is none."""
    p = Path(path)
    return TrainingCheckpoint.from_bytes(p.read_bytes(), str(p)) if p.exists() else None
