"""Checks of one cell that need the trainers' registries or the file system: names known to
the registries, options as each dataset and model declares them, sizes against the dataset
(validation split, budget, schedule, rewind points), the model against the dataset's input
shape, layer names against the model, and the dataset's files.

Dataset sizes come from each dataset's declared ``info`` (no loading); with ``data_check=False``
nothing touches the file system (a cluster campaign's plan on a laptop without its data). The
trainers are imported when a check first runs, not at module import, so ``lth --help`` stays fast.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from orchestrator.ids import canonical_json
from orchestrator.spec_errors import SETTINGS_CONFIG, messages, renamed
from trainers.config import RunSetup, train_problems

# torchvision datasets read from a local root a user already has (nothing downloads).
ROOT_DATASETS = ("mnist", "cifar10")


@cache
def _options_model(cls: type) -> type[BaseModel]:
    return create_model(f"{cls.__name__}Input", __config__=SETTINGS_CONFIG, options=(cls, ...))


def declared_options(registry, name: str, options: dict, path: str, rename: dict[str, str],
                     errors: list[str]) -> Any | None:
    """``options`` validated against what entry ``name`` declares (an instance of its options
    dataclass), or None after appending the problems, each named ``<path>.options.<key>``."""
    try:
        return _options_model(registry.options[name]).model_validate_json(json.dumps({"options": options})).options
    except ValidationError as e:
        what = f"{registry.kind} {name!r}"
        for m in messages(e, prefix=path, rename=rename):
            errors.append(m.replace(": unknown key", f": unknown option of {what}, expected one of "
                                                     f"{sorted(registry.options[name].__dataclass_fields__)}"))
        return None


_LOADED: dict[str, Any] = {}  # data settings -> DataInfo (declared, or of the loaded dataset)


def data_info(setup: RunSetup, options: Any, data_check: bool):
    """The dataset's DataInfo from its declaration, or by loading it once (None if that is not allowed)."""
    from trainers.datasets import DATASETS, DataInfo

    ds = setup.data.dataset
    key = canonical_json([ds, setup.data.root, setup.data.options])
    if key in _LOADED:
        return _LOADED[key]
    if ds in DATASETS.info:
        _LOADED[key] = DATASETS.info[ds](options)
    elif not data_check:
        return None
    else:
        raw = DATASETS[ds](setup.data)
        _LOADED[key] = DataInfo(int(raw.y_train.shape[0]), tuple(raw.x_train.shape[1:]), raw.num_classes)
    return _LOADED[key]


def check_cell(setup: RunSetup, reset: str, driver_set: bool, where: dict[str, str], data_check: bool) -> list[str]:
    """Problems of one cell, each ``"<key path>: <problem>"``; ``where`` maps a setting path to
    the key path its value came from (``train.lr`` -> ``grid.lr[1]``)."""
    from trainers.datasets import DATASETS
    from trainers.models import MODELS
    from trainers.pruning import PRUNING_METHODS, STRUCTURED_METHODS
    from trainers.resets import parse_reset, trains_weights

    def src(path: str) -> str:
        return renamed(path, where)

    out: list[str] = []
    ds, arch, prune = setup.data.dataset, setup.model.arch, setup.prune
    data_opts = model_opts = None
    if ds not in DATASETS:
        out.append(f"{src('data.dataset')}: unknown dataset {ds!r}, expected one of {sorted(DATASETS)}")
    else:
        data_opts = declared_options(DATASETS, ds, setup.data.options, "data", where, out)
    if arch not in MODELS:
        out.append(f"{src('model.arch')}: unknown arch {arch!r}, expected one of {sorted(MODELS)}")
    else:
        model_opts = declared_options(MODELS, arch, setup.model.options, "model", where, out)
    if prune.method not in PRUNING_METHODS:
        out.append(f"{src('prune.method')}: unknown pruning method {prune.method!r}, "
                   f"expected 'auto' or one of {sorted(PRUNING_METHODS)}")
    elif (prune.method in STRUCTURED_METHODS) != (prune.structure == "structured"):
        out.append(f"{src('prune.method')}: method {prune.method!r} does not match "
                   f"{src('prune.structure')} = {prune.structure!r} (use 'auto' or a matching method)")
    rewinds = []
    for path, name in (("reset", reset), ("prune.mask_driver", prune.mask_driver)):
        if path == "prune.mask_driver" and not driver_set:
            continue  # the default driver is one of the campaign's resets, checked in its own cell
        try:
            r = parse_reset(name)
        except ValueError as e:
            out.append(f"{src(path)}: {e}")
            continue
        if path == "prune.mask_driver" and not trains_weights(name):
            out.append(f"{src(path)}: {name!r} trains no weights, so it cannot rank them for the next level's "
                       "mask; expected a reset that trains them (rewind, lr_rewind, ...)")
        if r.k is not None:
            rewinds.append((path, name, r.k))
    if ds in ROOT_DATASETS and data_check:
        out += _check_root(setup, src)
    if data_opts is None or out:
        return out  # sizes need a known dataset with valid options and readable files
    info = data_info(setup, data_opts, data_check)
    if info is None:
        return out
    n = info.train_size - setup.data.val_size
    if n < 1:
        out.append(f"{src('data.val_size')}: val_size {setup.data.val_size} leaves no training examples: {ds} has "
                   f"{info.train_size} before the split; expected val_size < {info.train_size}")
        return out
    steps = -(-n // setup.train.batch_size)  # ceil: the last partial batch is a step
    for path, msg in train_problems(setup.train, steps):
        out.append(f"{src(path)}: {msg}")
    budget = setup.train.iterations if setup.train.iterations is not None else steps * setup.train.epochs
    for path, name, k in rewinds:
        if k >= budget:
            out.append(f"{src(path)}: {name} rewinds to iteration {k}, beyond the training budget "
                       f"of {budget} iterations ({src('train.epochs')}); expected k < {budget}")
    if model_opts is not None:
        out += _check_model(setup, info, src)
    return out


def _check_root(setup: RunSetup, src) -> list[str]:
    from trainers.datasets import missing_files

    ds, root = setup.data.dataset, setup.data.root
    if not root:
        return [f"{src('data.root')}: dataset {ds!r} needs data.root (a local directory; nothing downloads)"]
    if not Path(root).expanduser().is_dir():
        return [f"{src('data.root')}: directory {root!r} for dataset {ds!r} does not exist"]
    folder, missing = missing_files(ds, root)
    if missing:
        return [f"{src('data.root')}: {folder} lacks {missing}, expected the {ds} files there (nothing downloads)"]
    return []


_MODELS: dict[str, Any] = {}  # (arch, options, input shape, classes) -> model on the meta device, or the error


def _meta_model(setup: RunSetup, info) -> Any:
    """The cell's model built for the dataset's input shape on the meta device (names and shapes
    only: no memory is used, however wide the options say), or the builder's error. The builder
    alone: the seeded init (a CPU generator) takes seconds on meta tensors."""
    import torch

    from trainers.models import MODELS

    key = canonical_json([setup.model.arch, setup.model.options, info.input_shape, info.num_classes])
    if key not in _MODELS:
        try:
            with torch.device("meta"):
                options = MODELS.parse_options(setup.model.arch, setup.model.options)
                _MODELS[key] = MODELS[setup.model.arch](options, info.input_shape, info.num_classes)
        except (ValueError, TypeError, RuntimeError) as e:
            _MODELS[key] = e
    return _MODELS[key]


def _check_model(setup: RunSetup, info, src) -> list[str]:
    """The arch must take the dataset's inputs; prune.layer_rates / prune.exclude must name its
    layers (for structured pruning, channel groups), as the pruning code judges them."""
    from trainers.pruning import layer_targets

    model = _meta_model(setup, info)
    if isinstance(model, Exception):
        msg = str(model).removeprefix("ModelConfig.")
        return [f"{src('model.arch')}: {setup.model.arch!r} cannot be built for {setup.data.dataset!r} "
                f"(inputs of shape {tuple(info.input_shape)}, {info.num_classes} classes): {msg}"]
    if not (setup.prune.layer_rates or setup.prune.exclude):
        return []
    try:
        layer_targets(model, setup.prune)
    except ValueError as e:
        path, _, msg = str(e).partition(": ")
        return [f"{src(path)}: {msg}"]
    return []
