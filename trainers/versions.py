"""Version stamps of the trainer code a unit's result depends on.

A unit id is a hash of its settings (``orchestrator/plan.py``); the store serves a finished
unit to every campaign that plans the same id (``orchestrator/reuse.py``). Settings alone do
not name the code that computed a result, so each unit id also folds in the stamps returned
here: the training loop's (``TRAINING_LOOP``) and the registry version (``Registry.version``)
of the dataset generator, model, pruning method and reset mode it uses. A change that alters
results bumps the stamp of what it changed, and every unit using it is trained again.
"""

from __future__ import annotations

from trainers.config import RunSetup

# trainers/training.py + trainers/trajectory.py: the loop, optimiser, schedule, evaluation and
# the order of random draws. Bump when any of them changes what a training computes.
TRAINING_LOOP = 1


def _mode(reset: str) -> str:
    return reset.partition("@")[0]  # rewind@500 -> rewind (k is a setting, already in the id)


def unit_stamps(stage: str, setup: RunSetup, reset: str) -> dict[str, int]:
    """The stamps of the components a unit of ``stage`` uses. A trajectory's and a branch's id
    also contain their dense unit's id (and so its stamps), so each stage names only what it
    adds: the dense run its data, model and loop; a trajectory its pruning method and the mask
    driver's reset; a branch its reset."""
    from trainers.datasets import DATASETS
    from trainers.models import MODELS
    from trainers.pruning import PRUNING_METHODS
    from trainers.resets import RESETS

    if stage == "dense":
        return {
            "training": TRAINING_LOOP,
            f"dataset:{setup.data.dataset}": DATASETS.versions[setup.data.dataset],
            f"model:{setup.model.arch}": MODELS.versions[setup.model.arch],
        }
    if stage == "trajectory":
        return {
            "training": TRAINING_LOOP,
            f"pruning:{setup.prune.method}": PRUNING_METHODS.versions[setup.prune.method],
            f"reset:{_mode(reset)}": RESETS.versions[_mode(reset)],
        }
    if stage == "branch":
        return {"training": TRAINING_LOOP, f"reset:{_mode(reset)}": RESETS.versions[_mode(reset)]}
    raise ValueError(f"stage: expected dense, trajectory or branch, got {stage!r}")
