"""The result store's schema: written down once, here, and versioned.

Layout under the store root (a local path or any pyarrow filesystem URI)::

    <root>/<table>/campaign=<name>/<file>.parquet      one file per write, never appended

Tables ``trials``, ``metrics``, ``levels``, ``masks``, ``nodes`` (lucky-node rows of
teacher-student runs, ``trainers.lucky``) and ``supermasks`` (edge-popup masks vs the level's
ticket, ``trainers.supermask``). The per-row measurement columns of
``metrics``/``levels``/``masks`` come from the trainers' record dataclasses, so a field
added there is a column here; the key columns in front (``trial_id``, ``unit_id``) and
the ``trials`` columns are declared below. ``campaign`` is the hive partition column: it
is in the directory name, not in the files.

Every file carries ``SCHEMA_VERSION`` in its Parquet key-value metadata under
``METADATA_KEY``; readers skip files of another version with a warning. Bump the version
on any change of columns or meaning.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

import pyarrow as pa

from orchestrator.grid import AXIS_SHORTHANDS
from trainers.config import RunSetup
from trainers.records import EpochMetrics, LevelSummary, MaskLayerStats, NodeMatch, SupermaskLayerStats

# 2: levels gained best_test_loss / final_test_loss (regression tasks have no accuracy)
# 3: tables nodes and supermasks
# 4: levels.early_stop_iteration is null without a validation split (was the argmin of test loss);
#    masks.travel_kept_null (the selection-effect control) and rows of kind "channel"
SCHEMA_VERSION = 4
METADATA_KEY = b"lth_schema_version"
PARTITION_COLUMN = "campaign"

_ARROW_TYPES: dict[type, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bool: pa.bool_(),
}


def _arrow_type(hint: object) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) of a dataclass field annotation."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        (inner,) = args
        return _ARROW_TYPES[inner], True
    return _ARROW_TYPES[hint], False


def _fields_of(record_type: type) -> list[pa.Field]:
    hints = typing.get_type_hints(record_type)
    out = []
    for f in dataclasses.fields(record_type):
        typ, nullable = _arrow_type(hints[f.name])
        out.append(pa.field(f.name, typ, nullable=nullable))
    return out


# Which trial / unit a measurement row belongs to. A row computed once by a shared unit
# (the dense run, a mask trajectory) is written once per cell it serves, and unit_id
# names the unit that computed it.
_ROW_KEYS = [
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("unit_id", pa.string(), nullable=False),
]

# Axis columns of a cell. Every other swept setting is in axes_json; the full resolved
# cell config in config_json.
_ARROW = {str: pa.string(), float: pa.float64(), int: pa.int64()}


def _axis_type(path: str) -> pa.DataType:
    """Arrow type of the setting at ``path`` in ``trainers.config.RunSetup`` (``reset``: a registry name)."""
    hint: object = str
    cls: object = RunSetup
    for part in path.split(".") if path != "reset" else ():
        hint = cls = typing.get_type_hints(cls, include_extras=True)[part]
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is typing.Literal:
        hint = type(typing.get_args(hint)[0])
    return _ARROW[hint]


# The trials table's axis columns: the grid's shorthands (one list, orchestrator/grid.py), typed
# from the settings they name.
AXIS_COLUMNS: dict[str, pa.DataType] = {name: _axis_type(path) for name, path in AXIS_SHORTHANDS.items()}

TRIAL_STATUSES = ("done", "failed", "diverged")

TRIALS = pa.schema(
    [pa.field("trial_id", pa.string(), nullable=False)]
    + [pa.field(name, typ, nullable=False) for name, typ in AXIS_COLUMNS.items()]
    + [
        pa.field("axes_json", pa.string(), nullable=False),  # {axis: value} of every swept setting
        pa.field("config_json", pa.string(), nullable=False),  # the cell's full resolved settings
        pa.field("status", pa.string(), nullable=False),  # one of TRIAL_STATUSES
        pa.field("reason", pa.string()),  # failure / divergence reason
        pa.field("attempts", pa.int64(), nullable=False),  # max attempts over the cell's units
        pa.field("host", pa.string()),  # host of the unit that finished the cell
        pa.field("device", pa.string()),  # "cpu" | "cuda:0" | ...
        pa.field("units_json", pa.string(), nullable=False),  # ids of the units that computed its rows
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("seconds", pa.float64()),  # compute seconds of the cell's own units
    ]
)

METRICS = pa.schema(_ROW_KEYS + _fields_of(EpochMetrics))
LEVELS = pa.schema(_ROW_KEYS + _fields_of(LevelSummary))
MASKS = pa.schema(_ROW_KEYS + _fields_of(MaskLayerStats))
NODES = pa.schema(_ROW_KEYS + _fields_of(NodeMatch))
SUPERMASKS = pa.schema(_ROW_KEYS + _fields_of(SupermaskLayerStats))


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    record_type: type | None  # trainers record the rows come from (None for trials)


TABLES: dict[str, TableSpec] = {
    "trials": TableSpec("trials", TRIALS, None),
    "metrics": TableSpec("metrics", METRICS, EpochMetrics),
    "levels": TableSpec("levels", LEVELS, LevelSummary),
    "masks": TableSpec("masks", MASKS, MaskLayerStats),
    "nodes": TableSpec("nodes", NODES, NodeMatch),
    "supermasks": TableSpec("supermasks", SUPERMASKS, SupermaskLayerStats),
}

RECORD_TABLE: dict[type, str] = {
    EpochMetrics: "metrics",
    LevelSummary: "levels",
    MaskLayerStats: "masks",
    NodeMatch: "nodes",
    SupermaskLayerStats: "supermasks",
}


def with_version(schema: pa.Schema) -> pa.Schema:
    """The schema with the version stamp every written file carries."""
    return schema.with_metadata({METADATA_KEY: str(SCHEMA_VERSION).encode()})


def file_version(metadata: dict[bytes, bytes] | None) -> int | None:
    """Schema version recorded in a Parquet file's key-value metadata, or None."""
    if not metadata or METADATA_KEY not in metadata:
        return None
    try:
        return int(metadata[METADATA_KEY])
    except ValueError:
        return None
