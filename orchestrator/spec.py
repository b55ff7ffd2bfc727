"""Campaign spec: a YAML file validated before anything runs.

``load_campaign(path)`` returns a :class:`Campaign` (the validated spec plus its expanded
cells) or raises :class:`SpecError` whose ``messages`` each name a key path and what was
expected, e.g. ``grid.lr[1]: Input should be greater than 0, got -0.1``.

A campaign file has the sections of ``trainers/config.py`` (``data``, ``model``, ``train``,
``prune``) as fixed settings, ``seed``/``seeds`` and ``reset``/``resets``, ``resources``,
``max_failures`` and a ``grid`` of swept axes. Axis names are shorthands (``dataset``,
``arch``, ``lr``, ``schedule``, ``structure``, ``reset``, ``seed``) or dotted setting paths
(``train.epochs``, ``model.options.widths``). The cells are the cartesian product of the
axes, in the order the axes and their values are written.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainers.config import DataConfig, ModelConfig, PruneConfig, RunSetup, TrainConfig

AXIS_SHORTHANDS: dict[str, str] = {
    "dataset": "data.dataset",
    "arch": "model.arch",
    "lr": "train.lr",
    "schedule": "prune.schedule",
    "structure": "prune.structure",
    "reset": "reset",
    "seed": "seed",
}
# Column names of the trials table for the canonical paths above.
AXIS_COLUMN_OF = {path: short for short, path in AXIS_SHORTHANDS.items()}
# torchvision datasets read from a local root a user already has (nothing downloads).
ROOT_DATASETS = ("mnist", "cifar10")
AUTO_METHOD = {"unstructured": "magnitude_global", "structured": "l1_structured"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """A campaign spec that cannot run. ``messages``: one ``"<key path>: <problem>"`` each."""

    def __init__(self, messages: list[str], source: str = "campaign"):
        self.messages = list(dict.fromkeys(messages))  # de-duplicated, order kept
        self.source = source
        super().__init__(f"{source}: invalid campaign spec\n" + "\n".join(f"  {m}" for m in self.messages))


class _Strict(BaseModel):
    # strict: YAML already gives real ints/floats/bools; a quoted "0.1" is a typo worth refusing.
    model_config = ConfigDict(extra="forbid", strict=True)


class DataSpec(_Strict):
    dataset: str
    root: str | None = None  # ~ and $VARS are expanded, so campaign files can say ${CIFAR10_ROOT}
    val_size: int = Field(0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("root")
    @classmethod
    def _expand_root(cls, v: str | None) -> str | None:
        return None if v is None else os.path.expandvars(os.path.expanduser(v))


class ModelSpec(_Strict):
    arch: str
    options: dict[str, Any] = Field(default_factory=dict)


class TrainSpec(_Strict):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, ge=1)
    epochs: int | None = Field(None, ge=1)
    iterations: int | None = Field(None, ge=1)
    schedule: Literal["constant", "step", "cosine"] = "step"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)
    warmup_iterations: int = Field(0, ge=0)
    augment: bool = False
    eval_batch_size: int = Field(1024, ge=1)

    @model_validator(mode="after")
    def _one_budget(self) -> TrainSpec:
        if self.epochs is not None and self.iterations is not None:
            raise ValueError("set exactly one of epochs / iterations, got both")
        if self.epochs is None and self.iterations is None:
            self.epochs = 10
        return self


class PruneSpec(_Strict):
    structure: Literal["unstructured", "structured"] = "unstructured"
    method: str = "auto"  # auto: magnitude_global (unstructured) / l1_structured (structured)
    schedule: Literal["oneshot", "iterative"] = "iterative"
    rate: float | None = Field(None, gt=0, lt=1)
    density: float | None = Field(None, gt=0, le=1)  # final density after `levels`; sets rate
    levels: int = Field(5, ge=1)
    layer_rates: dict[str, float] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)
    finetune_lr: float | None = Field(None, gt=0)
    mask_driver: str | None = None  # None: first reset of the campaign that is not reinit

    @model_validator(mode="after")
    def _rate_or_density(self) -> PruneSpec:
        if self.rate is not None and self.density is not None:
            raise ValueError("set at most one of rate / density, got both")
        for name, r in self.layer_rates.items():
            if not 0 < r < 1:
                raise ValueError(f"layer_rates.{name}: must be in (0, 1), got {r}")
        return self

    def resolved_rate(self) -> float:
        if self.density is not None:
            return 1.0 - self.density ** (1.0 / self.levels)
        return 0.2 if self.rate is None else self.rate


class Resources(_Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_gpus_above_one(cls, v: float) -> float:
        # Ray shares a GPU only as a fraction of one device; above 1 it must be a whole number.
        if v > 1 and v != int(v):
            raise ValueError(f"expected a fraction in [0, 1] or a whole number of GPUs, got {v}")
        return v


class CampaignSpec(_Strict):
    name: str
    data: DataSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    prune: PruneSpec = Field(default_factory=PruneSpec)
    seed: int | None = Field(None, ge=0)
    seeds: list[int] | None = None
    reset: str | None = None
    resets: list[str] | None = None
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(1, ge=0)
    grid: dict[str, list[Any]] = Field(default_factory=dict)


class CellSettings(_Strict):
    """One cell's settings, validated as a whole (a grid value is checked in context)."""

    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    prune: PruneSpec
    seed: int = Field(ge=0)
    reset: str


@dataclass(frozen=True)
class Cell:
    """One grid point. ``trial_id``: stable hash of ``config`` (the resolved settings)."""

    trial_id: str
    axes: dict[str, Any]  # swept axis (as written in the grid) -> value
    config: dict[str, Any]  # resolved settings: data, model, train, prune, seed, reset
    setup: RunSetup
    reset: str

    def column(self, name: str) -> Any:
        """Value of a trials-table axis column (dataset, arch, lr, ...)."""
        c = self.config
        return {
            "dataset": c["data"]["dataset"],
            "arch": c["model"]["arch"],
            "lr": c["train"]["lr"],
            "schedule": c["prune"]["schedule"],
            "structure": c["prune"]["structure"],
            "reset": c["reset"],
            "seed": c["seed"],
        }[name]


@dataclass(frozen=True)
class Campaign:
    spec: CampaignSpec
    text: str  # the YAML as submitted (stored with the campaign)
    cells: list[Cell]

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _node_path(loader: _UniqueKeyLoader, target: yaml.Node) -> str:
    """Dotted key path of ``target`` in the document being loaded ("" when not found)."""

    def walk(node: yaml.Node, path: str) -> str | None:
        if node is target:
            return path
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = k.value if isinstance(k, yaml.ScalarNode) else "?"
                found = walk(v, f"{path}.{name}" if path else name)
                if found is not None:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                found = walk(v, f"{path}[{i}]")
                if found is not None:
                    return found
        return None

    root = getattr(loader, "_lth_root", None)
    return (walk(root, "") if root is not None else None) or ""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            parent = _node_path(loader, node)
            where = f"{parent}.{key}" if parent else str(key)
            raise SpecError([f"{where}: duplicate key {key!r} at line {key_node.start_mark.line + 1}; "
                             "expected each key once (YAML would silently keep the last)"])
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


def _load_yaml(text: str) -> Any:
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        loader._lth_root = root  # for key paths in duplicate-key messages
        return None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, n: int = 12) -> str:
    """Short sha256 of the canonical JSON of ``obj``: the same settings give the same id."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------- errors


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _messages(err: ValidationError, prefix: str = "", rename: dict[str, str] | None = None) -> list[str]:
    msgs = []
    for e in err.errors():
        path = _loc(tuple(e["loc"]))
        if rename:
            for old, new in rename.items():
                if path == old or path.startswith(old + ".") or path.startswith(old + "["):
                    path = new + path[len(old) :]
                    break
        path = f"{prefix}.{path}" if prefix and path else (prefix or path or "<root>")
        msg = e["msg"]
        if e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            sub, sep, rest = msg.partition(": ")
            if sep and re.fullmatch(r"[A-Za-z_][\w.]*", sub):  # "layer_rates.output: must be ..."
                path, msg = (f"{path}.{sub}" if path != "<root>" else sub), rest
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key missing"
        elif "input" in e and e["type"] != "value_error":
            msg += f", got {e['input']!r}"
        msgs.append(f"{path}: {msg}")
    return msgs


# ---------------------------------------------------------------------------- loading


def load_campaign(path: str | os.PathLike) -> Campaign:
    """Read and validate a campaign file; raise SpecError naming every problem found."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"{p}: campaign file not found"], str(p))
    return parse_campaign(p.read_text(), source=str(p))


def parse_campaign(text: str, source: str = "campaign") -> Campaign:
    try:
        raw = _load_yaml(text)
    except SpecError as e:
        raise SpecError(e.messages, source) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<root>"
        what = e.problem or "unreadable YAML"
        if e.context and e.context_mark:
            what += f" ({e.context} started at line {e.context_mark.line + 1})"
        raise SpecError([f"{where}: YAML syntax error: {what}"], source) from None
    except yaml.YAMLError as e:
        raise SpecError([f"<root>: YAML syntax error: {e}"], source) from None
    if not isinstance(raw, dict):
        raise SpecError(["<root>: expected a mapping of campaign settings"], source)
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_messages(e), source) from None
    errors: list[str] = []
    if not _NAME_RE.match(spec.name):
        errors.append(f"name: expected letters, digits, '_', '.', '-' (a directory name), got {spec.name!r}")
    axes = _axes(spec, raw, errors)
    if errors:
        raise SpecError(errors, source)
    cells = _expand(spec, raw, axes, errors)
    if errors:
        raise SpecError(errors, source)
    return Campaign(spec=spec, text=text, cells=cells)


@dataclass
class _Axis:
    name: str  # as written (shorthand or dotted path)
    path: str  # canonical dotted path
    values: list[Any]
    source: str  # key path the values came from: "grid.lr", "seeds", ...


def _axes(spec: CampaignSpec, raw: dict, errors: list[str]) -> list[_Axis]:
    axes: list[_Axis] = []
    for key, pair in (("seed", ("seed", "seeds")), ("reset", ("reset", "resets"))):
        one, many = pair
        if raw.get(one) is not None and raw.get(many) is not None:
            errors.append(f"{many}: give either {one} or {many}, not both")
        if raw.get(many) is not None:
            axes.append(_Axis(key, key, list(raw[many]), many))
            if not raw[many]:
                errors.append(f"{many}: empty list, expected at least one value")
    seen: dict[str, str] = {a.path: a.source for a in axes}
    for name, values in spec.grid.items():
        path = AXIS_SHORTHANDS.get(name, name)
        top = path.split(".")[0]
        if top not in ("data", "model", "train", "prune") and path not in ("seed", "reset"):
            errors.append(
                f"grid.{name}: unknown axis, expected one of {sorted(AXIS_SHORTHANDS)} "
                "or a dotted setting path (data.*, model.*, train.*, prune.*)"
            )
            continue
        if path in seen:
            errors.append(f"grid.{name}: duplicate axis, same setting as {seen[path]}")
            continue
        if not values:
            errors.append(f"grid.{name}: empty axis, expected a list of at least one value")
            continue
        seen[path] = f"grid.{name}"
        axes.append(_Axis(name, path, values, f"grid.{name}"))
    return axes


def _set(tree: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        nxt = tree.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            tree[p] = nxt
        tree = nxt
    tree[parts[-1]] = value


def _base(spec: CampaignSpec, raw: dict) -> dict:
    """The fixed settings as raw dicts (axes are set on top of these per cell)."""
    base = {k: copy.deepcopy(raw.get(k, {})) for k in ("data", "model", "train", "prune")}
    base["seed"] = spec.seed if spec.seed is not None else (spec.seeds or [0])[0]
    base["reset"] = spec.reset if spec.reset is not None else (spec.resets or ["rewind"])[0]
    return base


def _expand(spec: CampaignSpec, raw: dict, axes: list[_Axis], errors: list[str]) -> list[Cell]:
    base = _base(spec, raw)
    # 1. every axis value in the context of the fixed settings: errors name grid.<axis>[i].
    for ax in axes:
        for i, v in enumerate(ax.values):
            trial = copy.deepcopy(base)
            _set(trial, ax.path, v)
            try:
                CellSettings.model_validate(trial)
            except ValidationError as e:
                for m in _messages(e, rename={ax.path: f"{ax.source}[{i}]"}):
                    errors.append(m)
    if errors:
        return []
    reset_axis = next((a for a in axes if a.path == "reset"), None)
    resets = reset_axis.values if reset_axis else [base["reset"]]
    default_driver = next((r for r in resets if r != "reinit"), "rewind")
    cells: list[Cell] = []
    checked: set[str] = set()
    for combo in itertools.product(*[list(enumerate(a.values)) for a in axes]):
        tree = copy.deepcopy(base)
        where: dict[str, str] = {}
        for ax, (i, v) in zip(axes, combo):
            _set(tree, ax.path, v)
            where[ax.path] = f"{ax.source}[{i}]"
        s = CellSettings.model_validate(tree)
        config = _resolve(s, default_driver)
        for m in _check_cell(s, config, where):
            if m not in checked:
                checked.add(m)
                errors.append(m)
        cell_axes = {ax.name: v for ax, (_, v) in zip(axes, combo)}
        cells.append(
            Cell(
                trial_id=stable_hash(config),
                axes=cell_axes,
                config=config,
                setup=_setup(config),
                reset=config["reset"],
            )
        )
    return cells


def _resolve(s: CellSettings, default_driver: str) -> dict:
    """Canonical settings of a cell: defaults filled, 'auto' method and rate resolved."""
    prune = s.prune.model_dump()
    prune["method"] = AUTO_METHOD[s.prune.structure] if s.prune.method == "auto" else s.prune.method
    prune["rate"] = s.prune.resolved_rate()
    prune.pop("density")
    prune["mask_driver"] = s.prune.mask_driver or default_driver
    return {
        "data": s.data.model_dump(),
        "model": s.model.model_dump(),
        "train": s.train.model_dump(),
        "prune": prune,
        "seed": s.seed,
        "reset": s.reset,
    }


def _setup(c: dict) -> RunSetup:
    t = dict(c["train"])
    t["milestones"] = tuple(t["milestones"])
    p = dict(c["prune"])
    p["exclude"] = tuple(p["exclude"])
    return RunSetup(
        data=DataConfig(**c["data"]),
        model=ModelConfig(**c["model"]),
        train=TrainConfig(**t),
        prune=PruneConfig(**p),
        seed=c["seed"],
    )


def _src(where: dict[str, str], path: str) -> str:
    return where.get(path, path)


def _check_cell(s: CellSettings, config: dict, where: dict[str, str]) -> list[str]:
    """Checks that need the trainers' registries or the file system. The trainers are
    imported here, not at module import, so ``lth --help`` stays fast."""
    from trainers.datasets import DATASETS
    from trainers.models import MODELS
    from trainers.pruning import PRUNING_METHODS, STRUCTURED_METHODS
    from trainers.resets import parse_reset

    out: list[str] = []
    ds, arch = s.data.dataset, s.model.arch
    if ds not in DATASETS:
        out.append(f"{_src(where, 'data.dataset')}: unknown dataset {ds!r}, expected one of {sorted(DATASETS)}")
    if arch not in MODELS:
        out.append(f"{_src(where, 'model.arch')}: unknown arch {arch!r}, expected one of {sorted(MODELS)}")
    method = config["prune"]["method"]
    if method not in PRUNING_METHODS:
        out.append(
            f"{_src(where, 'prune.method')}: unknown pruning method {method!r}, "
            f"expected 'auto' or one of {sorted(PRUNING_METHODS)}"
        )
    elif (method in STRUCTURED_METHODS) != (s.prune.structure == "structured"):
        out.append(
            f"{_src(where, 'prune.method')}: method {method!r} does not match "
            f"{_src(where, 'prune.structure')} = {s.prune.structure!r} (use 'auto' or a matching method)"
        )
    for path, name in (("reset", s.reset), ("prune.mask_driver", config["prune"]["mask_driver"])):
        if path == "prune.mask_driver" and s.prune.mask_driver is None:
            continue  # the default driver is one of the campaign's resets, checked in its own cell
        try:
            r = parse_reset(name)
        except ValueError as e:
            out.append(f"{_src(where, path)}: {e}")
            continue
        if r.k is not None and ds in DATASETS:
            try:
                budget = _budget_iterations(s)
            except (OSError, ValueError) as e:  # e.g. a data.root without the dataset's files
                out.append(f"{_src(where, 'data.root')}: cannot load dataset {ds!r} to size the budget: {e}")
                continue
            if r.k >= budget:
                out.append(
                    f"{_src(where, path)}: {name} rewinds to iteration {r.k}, beyond the training budget "
                    f"of {budget} iterations ({_src(where, 'train.epochs')}); expected k < {budget}"
                )
    if (s.prune.layer_rates or s.prune.exclude) and ds in DATASETS and arch in MODELS:
        out += _check_layer_names(s, config, where)
    if ds in ROOT_DATASETS:
        root = s.data.root
        if not root:
            out.append(f"{_src(where, 'data.root')}: dataset {ds!r} needs data.root (a local directory; nothing downloads)")
        elif not Path(root).expanduser().is_dir():
            out.append(f"{_src(where, 'data.root')}: directory {root!r} for dataset {ds!r} does not exist")
        else:
            from trainers.datasets import missing_files

            folder, missing = missing_files(ds, root)
            if missing:
                out.append(f"{_src(where, 'data.root')}: {folder} lacks {missing}, expected the {ds} files there "
                           "(nothing downloads)")
    return out


_DATA_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {}


def _check_layer_names(s: CellSettings, config: dict, where: dict[str, str]) -> list[str]:
    """prune.layer_rates / prune.exclude must name layers of the model (for structured pruning,
    channel groups): build the model (no training) and let the pruning code judge the names."""
    from trainers.datasets import DATASETS, OFFICIAL_SHAPES
    from trainers.models import build_model
    from trainers.pruning import layer_targets

    key = canonical_json(s.data.model_dump())
    if key not in _DATA_SHAPES:
        if s.data.dataset in OFFICIAL_SHAPES:
            _DATA_SHAPES[key] = OFFICIAL_SHAPES[s.data.dataset]
        else:  # generated / bundled datasets load in about a second
            raw = DATASETS[s.data.dataset](DataConfig(**s.data.model_dump()))
            _DATA_SHAPES[key] = (tuple(raw.x_train.shape[1:]), raw.num_classes)
    shape, classes = _DATA_SHAPES[key]
    setup = _setup(config)
    try:
        model = build_model(setup.model, shape, classes, 0)
    except (ValueError, TypeError):
        return []  # a model that cannot be built fails its trial with the builder's message
    try:
        layer_targets(model, setup.prune)
    except ValueError as e:
        path, _, msg = str(e).partition(": ")
        return [f"{_src(where, path)}: {msg}"]
    return []


_TRAIN_SIZES: dict[str, int] = {}


def _budget_iterations(s: CellSettings) -> int:
    """Optimizer steps of one training run (only called for rewind@k, so data loads rarely)."""
    if s.train.iterations is not None:
        return s.train.iterations
    from trainers.datasets import DATASETS, OFFICIAL_TRAIN_SIZES

    key = canonical_json(s.data.model_dump())
    if s.data.dataset in OFFICIAL_TRAIN_SIZES:
        _TRAIN_SIZES[key] = OFFICIAL_TRAIN_SIZES[s.data.dataset] - s.data.val_size
    if key not in _TRAIN_SIZES:
        cfg = DataConfig(**s.data.model_dump())
        _TRAIN_SIZES[key] = int(DATASETS[s.data.dataset](cfg).y_train.shape[0]) - s.data.val_size
    per_epoch = -(-_TRAIN_SIZES[key] // s.train.batch_size)  # ceil: the last partial batch is a step
    return per_epoch * int(s.train.epochs or 0)


def check_store_writable(uri: str) -> None:
    """Raise SpecError if a local store directory cannot be created or written."""
    if "://" in uri and not uri.startswith("file://"):
        return  # object stores: the first write reports credentials / bucket problems
    path = Path(uri.removeprefix("file://")).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".tmp-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SpecError([f"store: {str(path)!r} is not writable ({e.strerror or e})"], "store") from None
