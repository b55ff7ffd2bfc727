"""A unit's training checkpoint in the store (``paths.checkpoint(campaign, unit_id)``).

A unit runs one training at a time (the dense run, or one level of a trajectory or branch), so
it has one checkpoint slot. Each checkpoint is written atomically through ``Store.put_bytes``
(temporary name + rename locally and on NFS, one PUT on object stores): a kill during a write
leaves the previous checkpoint, and a retry on any node continues the training from it. A
resume is recorded in the unit's marker (``extra["resumes"]``: attempt, level, reset, epoch,
iteration), so the store shows where each retry started. The checkpoint is removed once the
level's rows are staged and when the unit finishes: the rows and level artifacts are the record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestrator import paths
from orchestrator.ledger import UnitMarker
from orchestrator.store import Store
from trainers.checkpoint import CheckpointSlot, TrainingCheckpoint
from trainers.config import CheckpointConfig

log = logging.getLogger(__name__)


@dataclass
class UnitCheckpoints:
    store: Store
    campaign: str
    marker: UnitMarker  # the running unit's marker (rewritten on a resume)
    config: CheckpointConfig
    touched: bool = False  # this attempt wrote or found a checkpoint (else there is nothing to remove)

    @property
    def path(self) -> str:
        return paths.checkpoint(self.campaign, self.marker.unit_id)

    def slot(self) -> CheckpointSlot:
        return CheckpointSlot(save=self._save, load=self._load, every_epochs=self.config.every_epochs,
                              every_minutes=self.config.every_minutes, on_resume=self._resumed)

    def _save(self, ckpt: TrainingCheckpoint) -> None:
        self.touched = True
        self.store.put_bytes(self.path, ckpt.to_bytes())

    def _load(self) -> TrainingCheckpoint | None:
        if self.marker.attempts <= 1 and not self.touched:
            return None  # a first attempt finds none: no store read per training on the happy path
        data = self.store.get_bytes(self.path)
        if data is None:
            return None
        self.touched = True
        try:
            return TrainingCheckpoint.from_bytes(data, self.store.full(self.path))
        except ValueError as e:  # e.g. written by another format version: start the training over
            log.warning("%s; the training restarts from its beginning", e)
            self.marker.extra["checkpoint_discarded"] = str(e)
            return None

    def _resumed(self, ckpt: TrainingCheckpoint) -> None:
        resumes = list(self.marker.extra.get("resumes", []))
        resumes.append({"attempt": self.marker.attempts, "level": ckpt.run.get("level"),
                        "reset": ckpt.run.get("reset"), "epoch": ckpt.epoch, "iteration": ckpt.iteration})
        self.marker.extra["resumes"] = resumes
        self.marker.save(self.store, self.campaign)

    def clear(self) -> None:
        """Remove the checkpoint (its training's rows are staged, or the unit finished)."""
        if self.touched or self.marker.attempts > 1:
            self.store.delete(self.path)
            self.touched = False
