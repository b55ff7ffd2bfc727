"""The swept axes of a campaign and their cartesian product.

Axis names are shorthands (``AXIS_SHORTHANDS``: the trials table's axis columns) or dotted setting
paths (``train.epochs``, ``model.options.widths``); ``seeds`` and ``resets`` are axes too. The
number of cells is the product of the axis lengths, known (and bounded by ``max_cells``) before
anything is expanded.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.ids import canonical_json

# Shorthand -> setting path, in the order of the trials table's axis columns (orchestrator/schema.py
# types them from these paths).
AXIS_SHORTHANDS: dict[str, str] = {
    "dataset": "data.dataset",
    "arch": "model.arch",
    "lr": "train.lr",
    "schedule": "prune.schedule",
    "reset": "reset",
    "structure": "prune.structure",
    "seed": "seed",
}
SECTIONS = ("data", "model", "train", "prune")
DEFAULT_MAX_CELLS = 100_000


@dataclass(frozen=True)
class Axis:
    name: str  # as written (shorthand or dotted path)
    path: str  # canonical dotted path
    values: list[Any]
    source: str  # key path the values came from: "grid.lr", "seeds", ...


def value_at(tree: dict, path: str) -> Any:
    for part in path.split("."):
        tree = tree[part]
    return tree


def set_path(tree: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        nxt = tree.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            tree[p] = nxt
        tree = nxt
    tree[parts[-1]] = value


def axes(raw: dict, grid: dict[str, list], errors: list[str]) -> list[Axis]:
    """The campaign's axes in the order written: ``seeds``, ``resets``, then the grid's."""
    out: list[Axis] = []
    for key, one, many in (("seed", "seed", "seeds"), ("reset", "reset", "resets")):
        if raw.get(one) is not None and raw.get(many) is not None:
            errors.append(f"{many}: give either {one} or {many}, not both")
        if raw.get(many) is not None:
            if not raw[many]:
                errors.append(f"{many}: empty list, expected at least one value")
            out.append(Axis(key, key, list(raw[many]), many))
    seen: dict[str, str] = {a.path: a.source for a in out}
    for name, values in grid.items():
        path = AXIS_SHORTHANDS.get(name, name)
        if path.split(".")[0] not in SECTIONS and path not in ("seed", "reset"):
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
        out.append(Axis(name, path, list(values), f"grid.{name}"))
    for ax in out:
        first: dict[str, int] = {}
        for i, v in enumerate(ax.values):
            j = first.setdefault(canonical_json(v), i)
            if j != i:
                errors.append(f"{ax.source}[{i}]: duplicate value {v!r}, same as {ax.source}[{j}]; expected each "
                              "value once (a repeated value would train the same cells twice)")
    return out


def cell_count(axes: list[Axis]) -> int:
    return math.prod(len(a.values) for a in axes)


def check_size(axes: list[Axis], max_cells: int, errors: list[str]) -> None:
    """Refuse a product above ``max_cells`` from the axis lengths alone (nothing is expanded)."""
    n = cell_count(axes)
    if n > max_cells:
        sizes = " x ".join(f"{len(a.values)} ({a.source})" for a in axes)
        errors.append(f"grid: {n:,} cells = {sizes}, above max_cells = {max_cells:,}; expected a smaller grid, "
                      "or raise the limit on purpose (max_cells: N in the campaign, or --max-cells N)")


def product(base: dict, axes: list[Axis]) -> Iterator[tuple[dict, dict[str, Any], dict[str, str]]]:
    """Per cell: (settings tree, {axis name: value}, {setting path: key path of its value})."""
    for combo in itertools.product(*[list(enumerate(a.values)) for a in axes]):
        tree = copy.deepcopy(base)
        where: dict[str, str] = {}
        for ax, (i, v) in zip(axes, combo):
            set_path(tree, ax.path, copy.deepcopy(v))
            where[ax.path] = f"{ax.source}[{i}]"
        yield tree, {ax.name: v for ax, (_, v) in zip(axes, combo)}, where
