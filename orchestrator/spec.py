"""Campaign spec: a YAML file validated before anything runs.

``load_campaign(path)`` returns a :class:`Campaign` (the validated spec plus its expanded
cells) or raises :class:`SpecError` whose ``messages`` each name a key path and what was
expected, e.g. ``grid.lr[1]: Input should be greater than 0, got -0.1``.

A campaign file has the sections of ``trainers/config.py`` (``data``, ``model``, ``train``,
``prune``) as fixed settings, ``seed``/``seeds`` and ``reset``/``resets``, ``resources``,
``max_failures``, ``max_cells`` and a ``grid`` of swept axes (orchestrator/grid.py). The
sections are validated as the trainers' own dataclasses, whose fields carry the types, defaults
and ranges; the campaign adds only conveniences of its own: ``prune.method: auto``,
``prune.density`` (sets the rate), a default ``prune.mask_driver``, and a budget in iterations
replacing the default epochs.

The jobs live apart: reading YAML (spec_yaml), error messages (spec_errors), axes and their
product (grid), registry and data checks (checks), ids (ids); this module puts them together.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

from annotated_types import Gt, Le
from pydantic import BaseModel, Field, ValidationError, field_validator

from orchestrator.checks import check_cell
from orchestrator.grid import (
    AXIS_SHORTHANDS,
    DEFAULT_MAX_CELLS,
    SECTIONS,
    Axis,
    axes,
    check_size,
    product,
    set_path,
    value_at,
)
from orchestrator.ids import canonical_json, stable_hash
from orchestrator.spec_errors import SETTINGS_CONFIG, SpecError, messages, renamed
from orchestrator.spec_yaml import decode, load_yaml
from trainers.config import (
    CheckpointConfig,
    DataConfig,
    ModelConfig,
    NonNegativeInt,
    PositiveInt,
    PruneConfig,
    RunSetup,
    Seed,
    TrainConfig,
)

__all__ = ["AXIS_SHORTHANDS", "Campaign", "CampaignSpec", "Cell", "SpecError", "canonical_json",
           "check_store_writable", "load_campaign", "parse_campaign", "spec_record", "stable_hash"]

AUTO_METHOD = {"unstructured": "magnitude_global", "structured": "l1_structured"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PRUNE_DEFAULTS = PruneConfig()


def _prune_section() -> type:
    """The campaign's ``prune`` section: PruneConfig's fields (types, ranges, defaults) with the
    campaign's conveniences: ``method: auto`` (by structure), ``rate`` or ``density`` (the final
    density after ``levels``; unset, PruneConfig's default rate), ``mask_driver`` unset (the first
    reset of the campaign that is not reinit)."""
    hints = get_type_hints(PruneConfig, include_extras=True)
    own = {
        "method": (str, "auto"),
        "rate": (hints["rate"] | None, None),
        "mask_driver": (str | None, None),
    }
    fields = []
    for f in dataclasses.fields(PruneConfig):
        if f.name in own:
            typ, default = own[f.name]
            fields.append((f.name, typ, dataclasses.field(default=default)))
        else:
            fields.append((f.name, hints[f.name], dataclasses.field(default=f.default, default_factory=f.default_factory)))
        if f.name == "rate":
            fields.append(("density", Annotated[float, Gt(0), Le(1)] | None, dataclasses.field(default=None)))
    cls = dataclasses.make_dataclass("PruneSection", fields, frozen=True)
    cls.__module__ = __name__
    return cls


PruneSection = _prune_section()


class Resources(BaseModel):
    model_config = SETTINGS_CONFIG
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_gpus_above_one(cls, v: float) -> float:
        # Ray shares a GPU only as a fraction of one device; above 1 it must be a whole number.
        if v > 1 and v != int(v):
            raise ValueError(f"expected a fraction in [0, 1] or a whole number of GPUs, got {v}")
        return v


class CampaignSpec(BaseModel):
    model_config = SETTINGS_CONFIG
    name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    prune: PruneSection = PruneSection()
    seed: Seed | None = None
    seeds: list[Seed] | None = None
    reset: str | None = None
    resets: list[str] | None = None
    resources: Resources = Field(default_factory=Resources)
    max_failures: NonNegativeInt = 1
    checkpoint: CheckpointConfig = CheckpointConfig()  # operational: not in spec_record (a rerun may change it)
    max_cells: PositiveInt = DEFAULT_MAX_CELLS  # a safety limit, not a setting: not in spec_record
    grid: dict[str, list[Any]] = Field(default_factory=dict)


class CellSettings(BaseModel):
    """One cell's settings before the campaign's conveniences are resolved."""

    model_config = SETTINGS_CONFIG
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    prune: PruneSection
    seed: Seed
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
        return value_at(self.config, AXIS_SHORTHANDS[name])


@dataclass(frozen=True)
class Campaign:
    spec: CampaignSpec
    text: str  # the YAML as submitted (stored with the campaign)
    cells: list[Cell]
    notes: tuple[str, ...] = ()  # what validation skipped (e.g. the data checks)

    @property
    def name(self) -> str:
        return self.spec.name


def spec_record(campaign: Campaign) -> dict:
    """The spec as a store keeps it (``_campaigns/<name>/spec.json``): a rerun resumes only if
    this is unchanged, so its form is kept stable (max_cells, a safety limit, and checkpoint, how
    often trainings checkpoint, are left out)."""
    return json.loads(canonical_json(campaign.spec.model_dump(exclude={"max_cells", "checkpoint"})))


# ---------------------------------------------------------------------------- loading


def load_campaign(path: str | os.PathLike, *, data_check: bool = True, max_cells: int | None = None) -> Campaign:
    """Read and validate a campaign file; raise SpecError naming every problem found."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"{p}: campaign file not found"], str(p))
    try:
        text = decode(p.read_bytes())
    except SpecError as e:
        raise SpecError(e.messages, str(p)) from None
    return parse_campaign(text, source=str(p), data_check=data_check, max_cells=max_cells)


_VAR = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


def _expand_root(data: Any, path: str, errors: list[str] | None, unset: set[str]) -> None:
    """Expand ~ and $VARS in ``data.root`` in place. An unset variable is named (``errors``, under
    ``path``: data.root, grid.data.root[1], ...), or, without data checks (errors None), left as
    written and noted in ``unset``."""
    if not isinstance(data, dict) or not isinstance(data.get("root"), str):
        return
    root = data["root"]
    missing = [a or b for a, b in _VAR.findall(root) if (a or b) not in os.environ]
    if missing:
        if errors is not None:
            names = ", ".join(sorted(set(missing)))
            errors.append(f"{path}: environment variable {names} is not set ({root!r}); set it to the "
                          "directory holding the dataset, or use lth validate --no-data-check to see the plan")
        unset.update(missing)
        return
    data["root"] = os.path.expanduser(os.path.expandvars(root))


def _budget(tree: dict) -> None:
    """A budget in iterations replaces TrainConfig's default epochs (both given: refused later)."""
    train = tree.get("train")
    if isinstance(train, dict) and train.get("iterations") is not None and "epochs" not in train:
        train["epochs"] = None


def _validate_cell(tree: dict, rename: dict[str, str] | None = None) -> tuple[CellSettings | None, list[str]]:
    _budget(tree)
    try:
        return CellSettings.model_validate_json(json.dumps(tree)), []
    except ValidationError as e:
        return None, messages(e, rename=rename)


def _resolve_prune(p: Any, default_driver: str) -> PruneConfig | str:
    """PruneConfig of a cell's prune section, or the problem ("prune: ...")."""
    if p.rate is not None and p.density is not None:
        return "set at most one of rate / density, got both"
    if p.density is not None:
        rate = 1.0 - p.density ** (1.0 / p.levels)
    else:
        rate = _PRUNE_DEFAULTS.rate if p.rate is None else p.rate
    values = {f.name: getattr(p, f.name) for f in dataclasses.fields(PruneConfig)}
    values.update(rate=rate, method=AUTO_METHOD[p.structure] if p.method == "auto" else p.method,
                  mask_driver=p.mask_driver or default_driver)
    return PruneConfig(**values)


def parse_campaign(text: str, source: str = "campaign", *, data_check: bool = True,
                   max_cells: int | None = None) -> Campaign:
    """Validate campaign YAML ``text``. ``data_check=False`` skips every check that reads the file
    system (dataset roots and files, loading a dataset without declared sizes) and leaves unset
    variables in ``data.root`` as written; ``max_cells`` overrides the campaign's limit."""
    try:
        raw = load_yaml(text)
    except SpecError as e:
        raise SpecError(e.messages, source) from None
    if not isinstance(raw, dict):
        raise SpecError(["<root>: expected a mapping of campaign settings"], source)
    errors: list[str] = []
    unset: set[str] = set()
    raw = copy.deepcopy(raw)  # shares of YAML aliases become copies: cells are edited in place
    _expand_root(raw.get("data"), "data.root", errors if data_check else None, unset)
    fixed = copy.deepcopy(raw)
    _budget(fixed)
    try:
        spec = CampaignSpec.model_validate_json(json.dumps(fixed))
    except ValidationError as e:
        raise SpecError(errors + messages(e), source) from None
    if not _NAME_RE.match(spec.name):
        errors.append(f"name: expected letters, digits, '_', '.', '-' (a directory name), got {spec.name!r}")
    ax = axes(raw, spec.grid, errors)
    if not errors:
        check_size(ax, max_cells or spec.max_cells, errors)
    if errors:
        raise SpecError(errors, source)
    base = {k: copy.deepcopy(raw.get(k, {})) for k in SECTIONS}
    base["seed"] = spec.seed if spec.seed is not None else (spec.seeds or [0])[0]
    base["reset"] = spec.reset if spec.reset is not None else (spec.resets or ["rewind"])[0]
    _check_axis_values(base, ax, errors, data_check, unset)
    if errors:
        raise SpecError(errors, source)
    cells = _expand(base, ax, errors, data_check, unset)
    if errors:
        raise SpecError(errors, source)
    notes = []
    if not data_check:
        notes.append("data checks skipped (--no-data-check): dataset roots and files were not read")
        if unset:
            notes.append(f"unset in data.root: {', '.join(sorted(unset))}; these trial ids differ from a run "
                         "with the variables set")
    return Campaign(spec=spec, text=text, cells=cells, notes=tuple(notes))


def _check_axis_values(base: dict, ax: list[Axis], errors: list[str], data_check: bool, unset: set[str]) -> None:
    """Every axis value in the context of the fixed settings: errors name ``grid.<axis>[i]``."""
    for a in ax:
        for i, v in enumerate(a.values):
            tree = copy.deepcopy(base)
            set_path(tree, a.path, copy.deepcopy(v))
            rename = {a.path: f"{a.source}[{i}]"}
            if a.path.startswith("data"):
                _expand_root(tree.get("data"), renamed("data.root", rename), errors if data_check else None, unset)
            errors += _validate_cell(tree, rename)[1]


def _expand(base: dict, ax: list[Axis], errors: list[str], data_check: bool, unset: set[str]) -> list[Cell]:
    reset_axis = next((a for a in ax if a.path == "reset"), None)
    resets = reset_axis.values if reset_axis else [base["reset"]]
    from trainers.resets import trains_weights

    default_driver = next((r for r in resets if r != "reinit" and trains_weights(r)), "rewind")
    cells: list[Cell] = []
    first: dict[str, int] = {}
    seen_errors: set[str] = set()
    for tree, cell_axes, where in product(base, ax):
        if any(p.startswith("data") for p in where):
            _expand_root(tree.get("data"), "data.root", None, unset)
        s, problems = _validate_cell(tree, where)
        if s is None:  # a combination of values each valid alone, e.g. epochs and iterations
            errors += [m for m in problems if m not in seen_errors]
            seen_errors.update(problems)
            continue
        prune = _resolve_prune(s.prune, default_driver)
        if isinstance(prune, str):
            problems = [f"{where.get('prune', 'prune')}: {prune}"]
        else:
            setup = RunSetup(data=s.data, model=s.model, train=s.train, prune=prune, seed=s.seed)
            problems = check_cell(setup, s.reset, s.prune.mask_driver is not None, where, data_check)
        for m in problems:
            if m not in seen_errors:
                seen_errors.add(m)
                errors.append(m)
        if problems:
            continue
        config = {**_plain(setup), "reset": s.reset}
        trial_id = stable_hash(config)
        j = first.setdefault(trial_id, len(cells))
        if j != len(cells):
            errors.append(f"grid: cells {cells[j].axes} and {cell_axes} resolve to the same settings; expected "
                          "each cell once (e.g. 1 and 1.0, or 'auto' and the method it stands for)")
        cells.append(Cell(trial_id=trial_id, axes=cell_axes, config=config, setup=setup, reset=s.reset))
    return cells


def _plain(obj: Any) -> Any:
    """Settings as JSON-shaped data (dataclasses.asdict, with lists for tuples), ~3x faster than
    asdict's deep copies: what trial ids and the trials table's config_json are made of."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


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
