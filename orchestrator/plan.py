"""Grid cells -> units of shared work, in three stages, so nothing is trained twice.

- stage ``dense``: one unit per distinct (data, model, train, seed [+ rewind points]);
  it trains the dense network once for every cell that needs it.
- stage ``trajectory``: one unit per (dense unit, prune settings incl. the mask driver);
  it computes the mask of every level and trains the mask-driver reset on it.
- stage ``branch``: one unit per (trajectory, reset != driver); it retrains that reset at
  every level on the trajectory's masks (reinit reuses rewind's masks, as in the papers).

A unit's rows are written once per cell it serves (``serves``); ``unit_id`` names the
computing unit. ids are short sha256 hashes of canonical settings plus the version stamps
of the trainer code the unit runs (``trainers/versions.py``), so they are stable across runs
and machines (resume relies on it) and name a result exactly: the store serves a finished
unit to any campaign that plans the same id (``orchestrator/reuse.py``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field

from orchestrator.ids import stable_hash
from orchestrator.spec import Campaign, Cell
from trainers.config import PruneConfig, RunSetup
from trainers.records import DENSE
from trainers.versions import unit_stamps

STAGES = ("dense", "trajectory", "branch")


@dataclass(frozen=True)
class Unit:
    """One Ray Tune trial's worth of work."""

    unit_id: str
    stage: str  # one of STAGES
    setup: RunSetup  # dense units carry a default PruneConfig (dense training ignores it)
    reset: str  # "dense" | the mask driver (trajectory) | the branch's reset
    depends: tuple[str, ...] = ()  # unit ids that must be done first, in stage order
    serves: tuple[str, ...] = ()  # trial ids that get this unit's training rows
    mask_serves: tuple[str, ...] = ()  # trajectory: trial ids that get its mask statistics
    rewind_iterations: tuple[int, ...] = ()  # dense: snapshot iterations for rewind@k resets
    # trajectory / branch: the id settings without prune.levels; units of one lineage share their
    # first levels, so a longer one continues a finished shorter one (orchestrator/continuation.py)
    lineage: str | None = None

    @property
    def trainings(self) -> int:
        return 1 if self.stage == "dense" else self.setup.prune.levels

    @property
    def served_key(self) -> str:
        """Digest of the cells that get this unit's rows: a marker keeps the one its rows were
        written for, so a campaign that grew finds the units to write again (orchestrator/reuse.py)."""
        return stable_hash({"serves": sorted(self.serves), "mask_serves": sorted(self.mask_serves)})

    @property
    def budget(self) -> tuple[int | None, int | None]:
        """(epochs, iterations) of one training of this unit."""
        return self.setup.train.epochs, self.setup.train.iterations


@dataclass(frozen=True)
class PlanSummary:
    cells: int
    units: dict[str, int]
    trainings_planned: int
    trainings_naive: int  # every cell: its own dense run + one retraining per level
    epochs_planned: int  # over trainings with an epoch budget
    epochs_naive: int
    iterations_planned: int  # over trainings with an iteration budget
    iterations_naive: int

    def lines(self) -> list[str]:
        units = ", ".join(f"{s} {self.units[s]}" for s in STAGES)
        out = [
            f"cells: {self.cells}",
            f"units: {sum(self.units.values())} ({units})",
            f"trainings: {self.trainings_planned} planned vs {self.trainings_naive} naive "
            f"({_ratio(self.trainings_naive, self.trainings_planned)})",
        ]
        if self.epochs_naive:
            out.append(
                f"epochs: {self.epochs_planned} planned vs {self.epochs_naive} naive "
                f"({_ratio(self.epochs_naive, self.epochs_planned)})"
            )
        if self.iterations_naive:
            out.append(
                f"iterations: {self.iterations_planned} planned vs {self.iterations_naive} naive "
                f"({_ratio(self.iterations_naive, self.iterations_planned)})"
            )
        return out


def _ratio(naive: int, planned: int) -> str:
    return f"{naive / planned:.2f}x fewer" if planned else "nothing to train"


@dataclass
class Plan:
    campaign: str
    cells: list[Cell]
    units: dict[str, Unit]  # in stage order
    cell_units: dict[str, tuple[str, ...]] = field(default_factory=dict)  # trial_id -> unit ids

    def stage(self, name: str) -> list[Unit]:
        return [u for u in self.units.values() if u.stage == name]

    def cell(self, trial_id: str) -> Cell:
        return self._cells_by_id[trial_id]

    @property
    def _cells_by_id(self) -> dict[str, Cell]:
        return {c.trial_id: c for c in self.cells}

    def summary(self) -> PlanSummary:
        planned = [0, 0, 0]
        naive = [0, 0, 0]

        def add(acc: list[int], n: int, epochs: int | None, iterations: int | None) -> None:
            acc[0] += n
            acc[1] += n * (epochs or 0)
            acc[2] += n * (iterations or 0)

        for u in self.units.values():
            add(planned, u.trainings, *u.budget)
        for c in self.cells:
            add(naive, 1 + c.setup.prune.levels, c.setup.train.epochs, c.setup.train.iterations)
        return PlanSummary(
            cells=len(self.cells),
            units={s: len(self.stage(s)) for s in STAGES},
            trainings_planned=planned[0],
            trainings_naive=naive[0],
            epochs_planned=planned[1],
            epochs_naive=naive[1],
            iterations_planned=planned[2],
            iterations_naive=naive[2],
        )

    def expected_level_rows(self) -> int:
        """Rows of the ``levels`` table a complete run writes: each training once per cell served."""
        return sum(u.trainings * len(u.serves) for u in self.units.values())

    def to_json(self) -> dict:
        return {
            "campaign": self.campaign,
            "cells": {c.trial_id: {"axes": c.axes, "units": list(self.cell_units[c.trial_id])} for c in self.cells},
            "units": {
                uid: {
                    "stage": u.stage,
                    "reset": u.reset,
                    "depends": list(u.depends),
                    "serves": list(u.serves),
                    "mask_serves": list(u.mask_serves),
                    "rewind_iterations": list(u.rewind_iterations),
                    "setup": dataclasses.asdict(u.setup),
                }
                for uid, u in self.units.items()
            },
        }


def _rewind_k(reset: str) -> int | None:
    mode, sep, arg = reset.partition("@")
    return int(arg) if sep and mode == "rewind" and arg.isdigit() else None


def _trajectory_settings(dense_id: str, cell: Cell, lineage: bool = False) -> dict:
    """What a trajectory's id hashes; ``lineage``: without ``prune.levels`` (Unit.lineage)."""
    prune = dict(cell.config["prune"])
    if lineage:
        prune.pop("levels")
    return {"stage": "trajectory", "dense": dense_id, "prune": prune,
            "code": unit_stamps("trajectory", cell.setup, cell.config["prune"]["mask_driver"])}


def make_plan(campaign: Campaign) -> Plan:
    """Expand the campaign's cells into staged, shared units."""
    cells = campaign.cells
    # --- stage 1: dense runs, keyed by everything but the prune settings and the reset.
    dense_key: dict[str, str] = {}  # trial_id -> dense key
    dense_cells: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        k = stable_hash({x: c.config[x] for x in ("data", "model", "train", "seed")})
        dense_key[c.trial_id] = k
        dense_cells[k].append(c)
    dense_id: dict[str, str] = {}
    units: dict[str, Unit] = {}
    for k, group in dense_cells.items():
        c0 = group[0]
        points = sorted(
            {
                p
                for c in group
                for p in (_rewind_k(c.reset), _rewind_k(c.config["prune"]["mask_driver"]))
                if p is not None
            }
        )
        settings = {"stage": "dense", **{x: c0.config[x] for x in ("data", "model", "train", "seed")},
                    "rewind_iterations": points, "code": unit_stamps("dense", c0.setup, DENSE)}
        uid = "d-" + stable_hash(settings)
        dense_id[k] = uid
        units[uid] = Unit(
            unit_id=uid,
            stage="dense",
            setup=dataclasses.replace(c0.setup, prune=PruneConfig()),
            reset=DENSE,
            serves=tuple(c.trial_id for c in group),
            rewind_iterations=tuple(points),
        )
    # --- stage 2: trajectories, keyed by dense unit + prune settings (mask driver included).
    traj_cells: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        d = dense_id[dense_key[c.trial_id]]
        tid = "t-" + stable_hash(_trajectory_settings(d, c))
        traj_cells[tid].append(c)
    branch_units: dict[str, Unit] = {}
    cell_units: dict[str, tuple[str, ...]] = {}
    for tid, group in traj_cells.items():
        c0 = group[0]
        d = dense_id[dense_key[c0.trial_id]]
        driver = c0.config["prune"]["mask_driver"]
        lineage = "l-" + stable_hash(_trajectory_settings(d, c0, lineage=True))
        units[tid] = Unit(
            lineage=lineage,
            unit_id=tid,
            stage="trajectory",
            setup=c0.setup,
            reset=driver,
            depends=(d,),
            serves=tuple(c.trial_id for c in group if c.reset == driver),
            mask_serves=tuple(c.trial_id for c in group),
        )
        by_reset: dict[str, list[Cell]] = defaultdict(list)
        for c in group:
            if c.reset != driver:
                by_reset[c.reset].append(c)
        for reset, rc in by_reset.items():
            bid = "b-" + stable_hash({"stage": "branch", "trajectory": tid, "reset": reset,
                                      "code": unit_stamps("branch", c0.setup, reset)})
            branch_units[bid] = Unit(
                lineage="l-" + stable_hash({"stage": "branch", "trajectory": lineage, "reset": reset,
                                            "code": unit_stamps("branch", c0.setup, reset)}),
                unit_id=bid,
                stage="branch",
                setup=c0.setup,
                reset=reset,
                depends=(d, tid),
                serves=tuple(c.trial_id for c in rc),
            )
            for c in rc:
                cell_units[c.trial_id] = (d, tid, bid)
        for c in group:
            cell_units.setdefault(c.trial_id, (d, tid))
    units.update(branch_units)
    ordered = {uid: u for s in STAGES for uid, u in units.items() if u.stage == s}
    return Plan(campaign=campaign.name, cells=cells, units=ordered, cell_units=cell_units)
