"""One pruning trajectory as an API, in pieces the orchestrator composes.

``train_dense`` -> ``DenseState``; ``level_masks`` -> the mask of level k; ``retrain`` ->
``BranchResult`` for one (level, reset); ``run_trajectory`` chains them for levels 1..L and
several resets, emitting ``EpochMetrics`` / ``LevelSummary`` (through ``train``) and one set
of ``MaskLayerStats`` per level through ``on_record``.

Semantics (docs/DESIGN.md): level k has density (1-rate)^k for both schedules. One-shot
masks come from the dense run's final weights; iterative masks prune ``rate`` of the weights
remaining after level k-1, ranked on the *mask driver*'s trained weights at level k-1
(``PruneConfig.mask_driver`` if requested, else the first requested reset that is not
``reinit``); every other reset of a level retrains on that same mask (reinit reuses the
driver's masks, as in the papers). All runs use ``setup.seed`` for the data order, so the
resets of a level see the same batches and seeds pair across resets.

All state objects hold plain tensors / numbers: ``to_state()`` gives a dict that
``torch.save`` writes and ``torch.load(weights_only=True)`` reads back; ``from_state`` rebuilds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from trainers.checkpoint import CheckpointSlot, train_kwargs
from trainers.config import RunSetup
from trainers.datasets import DataSplits, load_data
from trainers.masks import Mask, Weights, apply_mask, density, mask_weights
from trainers.models import build_model
from trainers.models.base import PrunableModel
from trainers.pruning import compute_mask
from trainers.records import DENSE, LevelSummary, RecordCallback, SupermaskLayerStats
from trainers.resets import SUPERMASK_RESETS, initial_weights, parse_reset
from trainers.stats import mask_statistics
from trainers.training import train


def _lucky_rows(setup: RunSetup, data: DataSplits, model, start: Weights, final: Weights, mask: Mask | None,
                level: int, reset: str, emit: RecordCallback | None) -> None:
    """Lucky-node rows (trainers.lucky) of a run on teacher-student data with a student MLP;
    nothing for other datasets or models."""
    from trainers.lucky import is_student, node_matches

    if emit is None or setup.data.dataset != "teacher_student" or not is_student(model):
        return
    for row in node_matches(setup.data, data.test.x, start, final, mask, level=level, reset=reset):
        emit(row)


def _summary_state(s: LevelSummary) -> dict:
    return dataclasses.asdict(s)


@dataclass
class DenseState:
    """The dense run: weights at init, at the requested rewind iterations, and at the end."""

    init: Weights
    rewind_points: dict[int, Weights]
    final: Weights
    summary: LevelSummary
    input_shape: tuple[int, ...]
    num_classes: int

    def to_state(self) -> dict:
        return {"init": self.init, "rewind_points": self.rewind_points, "final": self.final,
                "summary": _summary_state(self.summary), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes}

    @classmethod
    def from_state(cls, d: dict) -> DenseState:
        return cls(d["init"], {int(k): v for k, v in d["rewind_points"].items()}, d["final"],
                   LevelSummary(**d["summary"]), tuple(d["input_shape"]), int(d["num_classes"]))


@dataclass
class BranchResult:
    """One retrained (level, reset): final weights (CPU state_dict) and its summary."""

    level: int
    reset: str
    weights: Weights
    summary: LevelSummary
    diverged: bool


@dataclass
class TrajectoryState:
    """What ``on_level_done`` hands the caller after level ``level``: enough to resume."""

    level: int
    mask: Mask
    driver_weights: Weights

    def to_state(self) -> dict:
        return {"level": self.level, "mask": self.mask, "driver_weights": self.driver_weights}

    @classmethod
    def from_state(cls, d: dict) -> TrajectoryState:
        return cls(int(d["level"]), d["mask"], d["driver_weights"])


@dataclass
class TrajectoryResult:
    dense: DenseState
    summaries: list[LevelSummary] = field(default_factory=list)  # every (level, reset) run, in order
    masks: dict[int, Mask] = field(default_factory=dict)  # level -> mask (levels run in this call)
    last: TrajectoryState | None = None  # state after the last completed level
    stopped: str | None = None  # why levels stopped early (the driver diverged), else None


# One cached dataset: a trajectory loads the same data for the dense run and every branch.
_DATA_CACHE: dict[tuple, DataSplits] = {}


def _data(setup: RunSetup, device) -> DataSplits:
    key = (repr(setup.data), setup.seed, str(device))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(setup.data, setup.seed, device)
    return _DATA_CACHE[key]


def _model(setup: RunSetup, input_shape, num_classes) -> PrunableModel:
    return build_model(setup.model, tuple(input_shape), num_classes, setup.seed)


def train_dense(setup: RunSetup, *, device, on_record: RecordCallback | None = None,
                rewind_iterations: Sequence[int] = (), checkpoints: CheckpointSlot | None = None) -> DenseState:
    """Train the dense network (level 0, reset "dense"); keep copies at ``rewind_iterations``.
    ``checkpoints``: where the training checkpoints and resumes from (trainers.checkpoint)."""
    data = _data(setup, device)
    model = _model(setup, data.input_shape, data.num_classes)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    res = train(model, data, setup.train, device=device, seed=setup.seed, level=0, reset=DENSE, density=1.0,
                on_record=on_record, snapshot_iterations=tuple(k for k in rewind_iterations if k > 0),
                **train_kwargs(checkpoints, 0, DENSE))
    _lucky_rows(setup, data, model, init, res.weights, None, 0, DENSE, on_record)
    missing = [k for k in rewind_iterations if k > 0 and k not in res.snapshots]
    if missing and not res.diverged:
        raise ValueError(f"rewind iterations {missing} are beyond the dense run's {res.summary.iterations} steps")
    points = dict(res.snapshots)
    if 0 in rewind_iterations:
        points[0] = init
    return DenseState(init, points, res.weights, res.summary, tuple(data.input_shape), data.num_classes)


def level_masks(setup: RunSetup, dense: DenseState, level: int, source: Weights | None,
                previous_mask: Mask | None, model: PrunableModel | None = None) -> Mask:
    """Mask of ``level``. One-shot: from ``dense.final`` (``source``/``previous_mask`` ignored).
    Iterative: ``rate`` of what ``previous_mask`` kept, ranked on ``source`` (the driver's
    trained weights at level-1; ``dense.final`` when None)."""
    model = model or _model(setup, dense.input_shape, dense.num_classes)
    if setup.prune.schedule == "oneshot" or source is None:
        source = dense.final
    if setup.prune.schedule == "oneshot":
        previous_mask = None
    return compute_mask(model, source, setup.prune, level, previous_mask, setup.seed)


def retrain(setup: RunSetup, *, level: int, mask: Mask, reset: str, dense: DenseState, source: Weights,
            device, on_record: RecordCallback | None = None, checkpoints: CheckpointSlot | None = None) -> BranchResult:
    """Retrain the ``mask``ed network of ``level`` from the start ``reset`` prescribes (see
    trainers.resets); ``source`` is the trained weights the mask came from (finetune/lr_rewind)."""
    data = _data(setup, device)
    model = _model(setup, dense.input_shape, dense.num_classes)
    if parse_reset(reset).mode in SUPERMASK_RESETS:
        return _supermask_branch(setup, data, model, level, mask, reset, dense, device, on_record)
    start = initial_weights(reset, dense, source, setup, level, model)
    model.load_state_dict(start.weights)
    apply_mask(model, mask)
    start_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = setup.train
    if start.lr_override is not None:  # fine-tuning: a small constant lr, no warm-up
        cfg = dataclasses.replace(cfg, lr=start.lr_override, schedule="constant", warmup_iterations=0)
    res = train(model, data, cfg, device=device, seed=setup.seed, level=level, reset=reset,
                density=density(mask, model.prunable()), on_record=on_record, mask=mask,
                start_iteration=start.start_iteration, **train_kwargs(checkpoints, level, reset))
    _lucky_rows(setup, data, model, start_weights, res.weights, mask, level, reset, on_record)
    return BranchResult(level, reset, res.weights, res.summary, res.diverged)


def _supermask_branch(setup: RunSetup, data: DataSplits, model: PrunableModel, level: int, mask: Mask, reset: str,
                      dense: DenseState, device, on_record: RecordCallback | None) -> BranchResult:
    """Edge-popup on the dense run's theta_0 (re-initialised as the reset's weight init
    prescribes), keeping in every layer as many weights as the level's ticket ``mask``, so the
    supermask's density is the ticket's; one ``SupermaskLayerStats`` row per layer compares the
    two masks. The returned weights are the frozen weights with the supermask applied."""
    from trainers.supermask import densities_of, mask_overlap, train_supermask

    model.load_state_dict(dense.init)
    densities = densities_of(mask, model)
    res = train_supermask(model, data, setup.train, densities, SUPERMASK_RESETS[parse_reset(reset).mode],
                          device=device, seed=setup.seed, level=level, reset=reset, on_record=on_record)
    if on_record is not None:
        overlap = mask_overlap(res.mask, mask, list(densities))
        for name in densities:
            m = res.mask[name]
            on_record(SupermaskLayerStats(level=level, reset=reset, layer=name, params=m.numel(), kept=int(m.sum()),
                                          density=int(m.sum()) / m.numel(), jaccard_ticket=overlap[name][0],
                                          jaccard_chance=overlap[name][1]))
    return BranchResult(level, reset, mask_weights(res.weights, res.mask), res.summary, res.diverged)


def mask_driver(setup: RunSetup, resets: Sequence[str]) -> str:
    """Reset whose trained weights drive iterative masks (see module docstring)."""
    if setup.prune.mask_driver in resets:
        driver = setup.prune.mask_driver
    else:  # only reinit / supermasks requested: the configured driver is trained too
        driver = next((r for r in resets if parse_reset(r).mode not in ("reinit", *SUPERMASK_RESETS)),
                      setup.prune.mask_driver)
    if parse_reset(driver).mode in SUPERMASK_RESETS:
        raise ValueError(f"prune.mask_driver: {driver!r} trains no weights, so it cannot rank them for the next "
                         "level's mask; use a reset that trains them (rewind, lr_rewind, ...)")
    return driver


def run_trajectory(setup: RunSetup, resets: Sequence[str], *, device, on_record: RecordCallback | None = None,
                   dense: DenseState | None = None, resume: TrajectoryState | None = None,
                   on_level_done: Callable[[TrajectoryState], None] | None = None,
                   checkpoints: CheckpointSlot | None = None) -> TrajectoryResult:
    """Dense run (unless ``dense`` given) then levels 1..``prune.levels``, each reset retrained per
    level (the driver first). ``resume`` continues after ``resume.level``. Mask statistics are
    emitted once per level; iterative driver divergence stops the trajectory (``result.stopped``)."""
    resets = list(dict.fromkeys(resets))
    for r in resets:
        parse_reset(r)  # fail fast on a bad name
    driver = mask_driver(setup, resets)
    runs = [driver] + [r for r in resets if r != driver]
    if dense is None:
        rewind_at = sorted({parse_reset(r).k for r in runs if parse_reset(r).k})
        dense = train_dense(setup, device=device, on_record=on_record, rewind_iterations=rewind_at,
                            checkpoints=checkpoints)
    emit = on_record or (lambda rec: None)
    result = TrajectoryResult(dense)
    model = _model(setup, dense.input_shape, dense.num_classes)
    first = 1
    prev_mask: Mask | None = None
    source = dense.final
    if resume is not None:
        first, prev_mask, source = resume.level + 1, resume.mask, resume.driver_weights
        result.last = resume
    iterative = setup.prune.schedule == "iterative"
    for level in range(first, setup.prune.levels + 1):
        mask = level_masks(setup, dense, level, source, prev_mask, model)
        stats_from = source if iterative else dense.final
        for row in mask_statistics(model, level, mask, prev_mask if iterative else None, dense.init, stats_from):
            emit(row)
        driver_res = None
        for r in runs:
            br = retrain(setup, level=level, mask=mask, reset=r, dense=dense, source=stats_from,
                         device=device, on_record=on_record, checkpoints=checkpoints)
            result.summaries.append(br.summary)
            if r == driver:
                driver_res = br
        result.masks[level] = mask
        state = TrajectoryState(level, mask, driver_res.weights)
        result.last = state
        if on_level_done is not None:
            on_level_done(state)
        prev_mask, source = mask, driver_res.weights
        if iterative and driver_res.diverged:
            result.stopped = f"mask driver {driver!r} diverged at level {level}: {driver_res.summary.reason}"
            break
    return result


def save_state(obj: DenseState | TrajectoryState, path) -> None:
    """``torch.save`` of the plain-tensor state dict."""
    torch.save(obj.to_state(), path)
