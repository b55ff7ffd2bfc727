"""Every setting that changes a result changes the unit that computes it (property tests).

Cells are built the way the campaign loader builds them (``config`` = the resolved settings
of ``trainers/config.py`` + the reset), perturbed in ONE field, and planned together with the
unperturbed cell:

- a data / model / train / seed field -> a different dense unit (and so different everything);
- a prune field -> the same dense unit (the dense run is shared), a different trajectory;
- the reset -> the same dense unit and trajectory (masks shared), a different branch.

A field added to the settings without a perturbation here fails ``test_every_field_is_covered``.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.ids import stable_hash
from orchestrator.plan import make_plan
from orchestrator.spec import Campaign, Cell
from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig

BASE = RunSetup(
    data=DataConfig("digits"),
    model=ModelConfig("mlp", {"widths": (32,)}),
    train=TrainConfig(lr=0.1, epochs=2, batch_size=64, milestones=(1,)),
    prune=PruneConfig(rate=0.2, levels=3),
    seed=0,
)
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "prune": PruneConfig}
DENSE_SECTIONS = ("data", "model", "train")

_pos_float = st.floats(1e-5, 10.0, allow_nan=False)
_name = st.text("abcdefghij_", min_size=1, max_size=8)
# One strategy per settings field: values of the field's type, compared against BASE below.
PERTURB = {
    "data.dataset": st.sampled_from(["mnist1d", "teacher_student", "mnist", "cifar10"]),
    "data.root": st.one_of(st.just("/data/a"), _name.map(lambda s: f"/data/{s}")),
    "data.val_size": st.integers(1, 10_000),
    "data.options": st.dictionaries(_name, st.integers(0, 100), min_size=1, max_size=2),
    "model.arch": st.sampled_from(["lenet300_100", "cnn1d", "conv2", "vgg11", "resnet20"]),
    "model.options": st.one_of(st.just({}), st.lists(st.integers(1, 512), min_size=1, max_size=3)
                               .map(lambda w: {"widths": tuple(w)})),
    "train.optimizer": st.just("adam"),
    "train.lr": _pos_float,
    "train.momentum": st.floats(0.0, 0.99),
    "train.nesterov": st.just(True),
    "train.weight_decay": st.floats(0.0, 0.1),
    "train.batch_size": st.integers(1, 4096),
    "train.epochs": st.one_of(st.none(), st.integers(1, 500)),
    "train.iterations": st.integers(1, 100_000),
    "train.schedule": st.sampled_from(["constant", "cosine"]),
    "train.milestones": st.lists(st.integers(1, 200), max_size=3).map(lambda m: tuple(sorted(set(m)))),
    "train.gamma": _pos_float,
    "train.warmup_iterations": st.integers(1, 1000),
    "train.augment": st.just(True),
    "train.eval_batch_size": st.integers(1, 4096),
    "prune.structure": st.just("structured"),
    "prune.method": st.sampled_from(["magnitude_layerwise", "random_unstructured", "l1_structured"]),
    "prune.schedule": st.just("oneshot"),
    "prune.rate": st.floats(0.01, 0.99),
    "prune.levels": st.integers(1, 30),
    "prune.layer_rates": st.dictionaries(st.sampled_from(["output", "hidden.0.weight"]), st.floats(0.01, 0.99),
                                         min_size=1),
    "prune.exclude": st.lists(st.sampled_from(["out.weight", "hidden.0.weight"]), min_size=1, unique=True)
    .map(tuple),
    "prune.finetune_lr": _pos_float,
    "prune.mask_driver": st.sampled_from(["lr_rewind", "finetune", "rewind@100"]),
    "seed": st.integers(1, 2**32 - 1),
}


def _cell(setup: RunSetup, reset: str) -> Cell:
    config = {**dataclasses.asdict(setup), "reset": reset}  # as orchestrator.spec resolves a cell
    return Cell(trial_id=stable_hash(config), axes={}, config=config, setup=setup, reset=reset)


def _plan(*cells: Cell):
    return make_plan(Campaign(spec=SimpleNamespace(name="keys"), text="", cells=list(cells)))


def _perturbed(path: str, value) -> RunSetup:
    if path == "seed":
        return dataclasses.replace(BASE, seed=value)
    section, name = path.split(".")
    return dataclasses.replace(BASE, **{section: dataclasses.replace(getattr(BASE, section), **{name: value})})


def _units(plan, cell: Cell) -> tuple[str, ...]:
    return plan.cell_units[cell.trial_id]


def test_every_field_is_covered():
    fields = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)} | {"seed"}
    assert fields == set(PERTURB)
    assert {f.name for f in dataclasses.fields(RunSetup)} == {*SECTIONS, "seed"}


def _base_value(path: str):
    return BASE.seed if path == "seed" else getattr(getattr(BASE, path.split(".")[0]), path.split(".")[1])


# Every field, each with a few drawn values (parametrize, so no field is left to chance).
@pytest.mark.parametrize("path", sorted(PERTURB))
@settings(max_examples=8, deadline=None)
@given(data=st.data(), reset=st.sampled_from(["rewind", "reinit", "finetune"]))
def test_a_changed_setting_changes_its_unit(path, data, reset):
    value = data.draw(PERTURB[path].filter(lambda v: stable_hash(v) != stable_hash(_base_value(path))))
    setup = _perturbed(path, value)
    a, b = _cell(BASE, reset), _cell(setup, reset)
    plan = _plan(a, b)
    ua, ub = _units(plan, a), _units(plan, b)
    if path == "seed" or path.split(".")[0] in DENSE_SECTIONS:
        assert ua[0] != ub[0], f"{path}: both cells share dense unit {ua[0]}"
        dense = plan.units[ub[0]]
        assert (dense.setup.data, dense.setup.model, dense.setup.train, dense.setup.seed) == (
            setup.data, setup.model, setup.train, setup.seed)
    else:
        assert ua[0] == ub[0], f"{path}: a prune setting must not split the dense run"
        assert plan.units[ub[1]].setup.prune == setup.prune
    assert ua[1] != ub[1], f"{path}: both cells share trajectory {ua[1]}"
    assert len(plan.stage("dense")) == len({ua[0], ub[0]})
    # the same settings again give the same ids (resume relies on it)
    again = _plan(_cell(BASE, reset), _cell(setup, reset))
    assert list(again.units) == list(plan.units)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(k for k in PERTURB if k.startswith("prune."))), st.data())
def test_prune_settings_share_the_dense_run_across_many_cells(path, data):
    values = data.draw(st.lists(PERTURB[path], min_size=1, max_size=5))
    setups = [BASE] + [_perturbed(path, v) for v in values]
    cells = list({c.trial_id: c for c in (_cell(s, "rewind") for s in setups)}.values())
    plan = _plan(*cells)
    assert len(plan.stage("dense")) == 1
    assert len(plan.stage("trajectory")) == len({stable_hash(dataclasses.asdict(c.setup.prune)) for c in cells})


def test_the_reset_changes_only_the_branch():
    cells = [_cell(BASE, r) for r in ("rewind", "reinit", "finetune", "lr_rewind", "rewind@5")]
    plan = _plan(*cells)
    units = [_units(plan, c) for c in cells]
    assert len({u[0] for u in units}) == 1 and len({u[1] for u in units}) == 1
    branches = [u[2] for u in units[1:]]
    assert units[0] == units[0][:2]  # rewind is the driver: no branch
    assert len(set(branches)) == len(branches) == 4
    assert [plan.units[b].reset for b in branches] == ["reinit", "finetune", "lr_rewind", "rewind@5"]
    assert plan.units[units[0][0]].rewind_iterations == (5,)  # the shared dense run keeps iteration 5


def test_units_carry_their_stage_settings_and_dependencies():
    iters = dataclasses.replace(BASE, train=dataclasses.replace(BASE.train, epochs=None, iterations=40))
    driver_k = dataclasses.replace(iters, prune=dataclasses.replace(iters.prune, mask_driver="rewind@7"))
    cells = [_cell(BASE, "rewind"), _cell(BASE, "reinit"), _cell(driver_k, "finetune"), _cell(driver_k, "rewind@7")]
    plan = _plan(*cells)
    assert plan.campaign == "keys"
    assert [u.stage for u in plan.units.values()] == sorted((u.stage for u in plan.units.values()),
                                                            key=("dense", "trajectory", "branch").index)
    for d in plan.stage("dense"):
        assert d.reset == "dense" and d.setup.prune == PruneConfig() and d.depends == ()
        assert d.unit_id.startswith("d-")
    (d_epochs,) = [d for d in plan.stage("dense") if d.setup.train.epochs == 2]
    (d_iters,) = [d for d in plan.stage("dense") if d.setup.train.iterations == 40]
    assert d_epochs.rewind_iterations == () and d_iters.rewind_iterations == (7,)  # the rewind@7 driver's snapshot
    for t in plan.stage("trajectory"):
        dense = d_iters if t.setup.train.iterations else d_epochs
        assert t.depends == (dense.unit_id,) and t.reset == t.setup.prune.mask_driver and t.unit_id.startswith("t-")
    for b in plan.stage("branch"):
        assert b.unit_id.startswith("b-") and b.unit_id in plan.units
        assert plan.units[b.depends[1]].stage == "trajectory" and plan.units[b.depends[0]].stage == "dense"
    assert sorted(b.reset for b in plan.stage("branch")) == ["finetune", "reinit"]
    # a rewind@k mask driver alone (no cell resets to rewind@k) still gets its snapshot
    assert _plan(_cell(driver_k, "finetune")).stage("dense")[0].rewind_iterations == (7,)
    # a reset with '@' that is not rewind@k asks the dense run for nothing
    other = dataclasses.replace(BASE, prune=dataclasses.replace(BASE.prune, mask_driver="finetune"))
    assert _plan(_cell(other, "lr_rewind")).stage("dense")[0].rewind_iterations == ()
    # the summary counts epochs and iterations of each unit's trainings, planned vs one run per cell
    s = plan.summary()
    levels = BASE.prune.levels
    assert s.units == {"dense": 2, "trajectory": 2, "branch": 2}
    assert s.trainings_planned == 2 + 4 * levels and s.trainings_naive == 4 * (1 + levels)
    assert (s.epochs_planned, s.epochs_naive) == (2 * (1 + 2 * levels), 2 * 2 * (1 + levels))
    assert (s.iterations_planned, s.iterations_naive) == (40 * (1 + 2 * levels), 40 * 2 * (1 + levels))
    lines = s.lines()
    assert lines[1] == "units: 6 (dense 2, trajectory 2, branch 2)"
    assert lines[2] == f"trainings: {s.trainings_planned} planned vs {s.trainings_naive} naive " \
                       f"({s.trainings_naive / s.trainings_planned:.2f}x fewer)"
    assert lines[3] == (f"epochs: {s.epochs_planned} planned vs {s.epochs_naive} naive "
                        f"({s.epochs_naive / s.epochs_planned:.2f}x fewer)")
    assert lines[4] == (f"iterations: {s.iterations_planned} planned vs {s.iterations_naive} naive "
                        f"({s.iterations_naive / s.iterations_planned:.2f}x fewer)")


def test_plan_json_names_every_unit_and_cell():
    import json

    cells = [_cell(BASE, "rewind"), _cell(BASE, "reinit")]
    plan = _plan(*cells)
    data = json.loads(json.dumps(plan.to_json()))
    assert data["campaign"] == "keys"
    assert data["cells"] == {c.trial_id: {"axes": c.axes, "units": list(plan.cell_units[c.trial_id])} for c in cells}
    assert list(data["units"]) == list(plan.units)
    for uid, u in plan.units.items():
        j = data["units"][uid]
        assert (j["stage"], j["reset"], j["depends"], j["serves"], j["mask_serves"], j["rewind_iterations"]) == (
            u.stage, u.reset, list(u.depends), list(u.serves), list(u.mask_serves), list(u.rewind_iterations))
        assert j["setup"]["train"]["lr"] == u.setup.train.lr and j["setup"]["seed"] == u.setup.seed
        assert j["setup"]["prune"] == json.loads(json.dumps(dataclasses.asdict(u.setup.prune)))


def test_an_empty_plan_has_nothing_to_train():
    s = _plan().summary()
    assert s.lines() == ["cells: 0", "units: 0 (dense 0, trajectory 0, branch 0)",
                         "trainings: 0 planned vs 0 naive (nothing to train)"]


@pytest.mark.parametrize("registry, name, changes", [
    ("trainers.datasets:DATASETS", "digits", "dtb"),
    ("trainers.models:MODELS", "mlp", "dtb"),
    ("trainers.pruning:PRUNING_METHODS", "magnitude_global", "tb"),
    ("trainers.resets:RESETS", "rewind", "tb"),  # rewind is the mask driver: its trajectory
    ("trainers.resets:RESETS", "reinit", "b"),  # a branch's reset: that branch only
])
def test_a_bumped_version_stamp_changes_the_units_that_use_it(monkeypatch, registry, name, changes):
    """A result computed by older trainer code is never served as the new code's: the version
    stamp of each component a unit uses is part of its id (trainers/versions.py)."""
    import importlib

    module, attr = registry.split(":")
    reg = getattr(importlib.import_module(module), attr)
    cells = [_cell(BASE, "rewind"), _cell(BASE, "reinit")]
    before = _plan(*cells)
    monkeypatch.setitem(reg.versions, name, reg.versions[name] + 1)
    after = _plan(*cells)
    for stage in ("dense", "trajectory", "branch"):
        ids_before = {u.unit_id for u in before.stage(stage)}
        ids_after = {u.unit_id for u in after.stage(stage)}
        if stage[0] in changes:
            assert ids_before.isdisjoint(ids_after), f"{stage}: {name} bumped, unit kept its id"
        else:
            assert ids_before == ids_after, f"{stage}: {name} bumped, an unrelated unit changed id"
    assert [c.trial_id for c in before.cells] == [c.trial_id for c in after.cells]  # trial ids never change


def test_a_bumped_training_loop_changes_every_unit(monkeypatch):
    import trainers.versions

    cells = [_cell(BASE, "rewind"), _cell(BASE, "reinit")]
    before = _plan(*cells)
    monkeypatch.setattr(trainers.versions, "TRAINING_LOOP", trainers.versions.TRAINING_LOOP + 1)
    assert set(_plan(*cells).units).isdisjoint(before.units)
