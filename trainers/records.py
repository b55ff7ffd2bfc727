"""Typed rows that leave the trainers through a callback.

The trainers never write files: every measurement is one of these frozen dataclasses,
handed to an ``on_record`` callable supplied by the caller (the orchestrator turns them
into Parquet rows, tests collect them in a list). The orchestrator's store schema
(``orchestrator/schema.py``) has one table per record type with these fields as columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Reset name used for the dense (unpruned) training, level 0.
DENSE = "dense"


@dataclass(frozen=True, slots=True)
class EpochMetrics:
    """Loss and accuracy of one split after one epoch of one training run."""

    level: int  # 0 = dense training, k = k-th pruning level
    reset: str  # "dense" at level 0, else the reset mode name ("rewind", "rewind@500", ...)
    density: float  # fraction of prunable weights kept (1.0 at level 0)
    epoch: int  # 1-based; epoch 0 = evaluation before training
    iteration: int  # optimizer steps done when measured
    split: str  # "train" | "val" | "test"
    loss: float  # the task's loss: cross-entropy, or mean squared error for regression
    accuracy: float  # NaN for regression tasks
    lr: float  # learning rate in force at the end of the epoch


@dataclass(frozen=True, slots=True)
class LevelSummary:
    """One finished training run: one (level, reset) of a trajectory, or the dense run."""

    level: int
    reset: str
    density: float
    status: str  # "done" | "diverged"
    final_test_accuracy: float
    best_test_accuracy: float  # max over epochs: the number the Rethinking code reports
    best_test_epoch: int
    val_selected_test_accuracy: float | None  # test acc at the best-val-accuracy epoch; None if no val split
    # Iteration of minimum validation loss (LTH's "learning speed"); None without a validation split:
    # only the documented best-over-epochs accuracy may be chosen on the test set.
    early_stop_iteration: int | None
    final_train_loss: float
    epochs: int
    iterations: int
    seconds: float
    reason: str | None = None  # why a run diverged (first non-finite loss), else None
    # Test loss (the task's loss: cross-entropy, or MSE for regression, where accuracy is NaN):
    # minimum over epochs and at the last epoch. None only in rows written before they existed.
    best_test_loss: float | None = None
    final_test_loss: float | None = None


@dataclass(frozen=True, slots=True)
class MaskLayerStats:
    """Mask statistics of one prunable tensor (or BN layer) at one pruning level."""

    level: int
    layer: str  # parameter name, e.g. "features.0.weight", or a BN module name
    kind: str  # "weight" | "bn" | "channel" (output channels / neurons of a channel group)
    params: int
    kept: int
    density: float
    jaccard_prev: float | None  # overlap with the previous level's mask (None at level 1)
    travel_kept: float | None  # mean |theta_final - theta_init| of kept weights
    travel_pruned: float | None  # same for pruned weights (None when nothing is pruned)
    bn_negative_bias_fraction: float | None  # BN layers only (Tian et al.)
    sign_agreement_kept: float | None  # fraction of kept weights with sign(init) == sign(final)
    # travel_kept if magnitude selection alone acted (displacements permuted; trainers/stats.py)
    travel_kept_null: float | None = None


@dataclass(frozen=True, slots=True)
class NodeMatch:
    """One student hidden node of one training run on teacher-student data (trainers.lucky):
    its best correlation with a teacher node of the same layer at the start and at the end of the
    run. None where the node's activation is constant over the inputs (dead or pruned)."""

    level: int
    reset: str
    layer: int  # hidden layer index, 0 = first
    node: int  # index of the node in its layer
    init_teacher: int | None  # teacher node (same layer) best correlated at the start of the run
    init_correlation: float | None  # Pearson correlation of post-ReLU activations over test inputs
    final_teacher: int | None
    final_correlation: float | None
    fan_in_kept: float  # fraction of the node's incoming weights the run's mask keeps (1.0 dense)
    fan_out_norm: float  # L2 norm of its (masked) outgoing weights after training


@dataclass(frozen=True, slots=True)
class SupermaskLayerStats:
    """A supermask (edge-popup, trainers.supermask) of one level vs that level's ticket mask."""

    level: int
    reset: str  # the supermask reset name
    layer: str  # parameter name
    params: int
    kept: int  # weights the supermask keeps (= the ticket's count in the layer)
    density: float
    jaccard_ticket: float  # |supermask and ticket| / |supermask or ticket|
    jaccard_chance: float  # expected Jaccard of independent random masks of the same densities


Record = EpochMetrics | LevelSummary | MaskLayerStats | NodeMatch | SupermaskLayerStats
RecordCallback = Callable[[Record], None]
