"""Every store-relative path, in one place (the idea of open_lth's ``foundations/paths.py``).

The store's layout under its root (a local directory or an object-store URI)::

    <table>/campaign=<name>/...                 the four result tables (TABLES in orchestrator/schema.py)
    _staging/campaign=<name>/<unit>/<table>/<key>.parquet
                                                rows written by workers, not yet committed to a table
    _units/campaign=<name>/<unit>.json          unit markers (orchestrator/ledger.py: UnitMarker)
    _ledger/campaign=<name>/...                 the driver's commit log and lease (orchestrator/ledger.py)
    _campaigns/<name>/spec.yaml, spec.json, plan.json, plan-index.json, driver.json
    _campaigns/<name>/specs/v<NNN>-<date>.yaml  every registered version of the spec (orchestrator/campaigns.py)
    _artifacts/<unit>/<name>.pt                 dense weights, masks, per-level driver weights
    _checkpoints/campaign=<name>/<unit>.ckpt    the unit's running training (trainers/checkpoint.py), removed when done
    _claims/<unit>.json                         who trains the unit now, across campaigns (orchestrator/claims.py)
    _lineage/<lineage>/<unit>.json              finished units a longer schedule continues (orchestrator/continuation.py)
    _ray/                                       Ray Tune's experiment directories

Paths are '/'-separated and relative to the store root; ``Store.full`` makes them absolute.
Nothing else in the project spells a store path: code asks this module.
"""

from __future__ import annotations

PARTITION = "campaign"  # hive partition column of every table (schema.PARTITION_COLUMN)
PARQUET = ".parquet"

UNITS = "_units"
STAGING = "_staging"
LEDGER = "_ledger"
CAMPAIGNS = "_campaigns"
ARTIFACTS = "_artifacts"
RAY = "_ray"
CHECKPOINTS = "_checkpoints"
CLAIMS = "_claims"
LINEAGE = "_lineage"
# Top-level entries that are not tables (a table name never starts with an underscore).
RESERVED = (UNITS, STAGING, LEDGER, CAMPAIGNS, ARTIFACTS, RAY, CHECKPOINTS, CLAIMS, LINEAGE)


def partition(campaign: str) -> str:
    return f"{PARTITION}={campaign}"


# ----- tables -------------------------------------------------------------------------
def table_dir(table: str) -> str:
    """Root of one table (a Delta table: data files under ``campaign=<name>/`` and ``_delta_log/``)."""
    return table


def table_partition(table: str, campaign: str) -> str:
    return f"{table}/{partition(campaign)}"


def table_file(table: str, campaign: str, key: str) -> str:
    """One Parquet file of a table in the per-file layout (stores written before the table format)."""
    return f"{table_partition(table, campaign)}/{key}{PARQUET}"


# ----- staging (worker output awaiting the driver's commit) ----------------------------
def staging_dir(campaign: str | None = None) -> str:
    return STAGING if campaign is None else f"{STAGING}/{partition(campaign)}"


def staging_unit_dir(campaign: str, unit_id: str) -> str:
    return f"{staging_dir(campaign)}/{unit_id}"


def staging_file(campaign: str, unit_id: str, table: str, key: str) -> str:
    """One staged Parquet file: the rows of ``table`` a unit wrote under ``key``."""
    return f"{staging_unit_dir(campaign, unit_id)}/{table}/{key}{PARQUET}"


# ----- unit markers -------------------------------------------------------------------
def units_dir(campaign: str) -> str:
    return f"{UNITS}/{partition(campaign)}"


def marker(campaign: str, unit_id: str) -> str:
    return f"{units_dir(campaign)}/{unit_id}.json"


# ----- the driver's ledger ------------------------------------------------------------
def ledger_dir(campaign: str) -> str:
    return f"{LEDGER}/{partition(campaign)}"


def committed(campaign: str) -> str:
    """What the campaign's tables hold: committed units and cells, the last batch number."""
    return f"{ledger_dir(campaign)}/committed.json"


def pending_batch(campaign: str) -> str:
    """A batch being committed (written before the table commits, removed after them)."""
    return f"{ledger_dir(campaign)}/pending.json"


def lease(campaign: str) -> str:
    """Which driver holds the campaign (host, pid, since, heartbeat)."""
    return f"{ledger_dir(campaign)}/lease.json"


def lease_lock(campaign: str) -> str:
    """The file whose flock serialises every change of the lease (local / NFS stores)."""
    return f"{lease(campaign)}.lock"


# ----- campaign registration -----------------------------------------------------------
def campaign_dir(campaign: str) -> str:
    return f"{CAMPAIGNS}/{campaign}"


def spec_yaml(campaign: str) -> str:
    return f"{campaign_dir(campaign)}/spec.yaml"


def spec_json(campaign: str) -> str:
    return f"{campaign_dir(campaign)}/spec.json"


def spec_versions_dir(campaign: str) -> str:
    return f"{campaign_dir(campaign)}/specs"


def spec_version(campaign: str, number: int, date: str) -> str:
    """Version ``number`` (1, 2, ...) of the campaign's spec, registered at ``date`` (UTC, compact ISO)."""
    return f"{spec_versions_dir(campaign)}/v{number:03d}-{date}.yaml"


def parse_spec_version(path: str) -> tuple[int | None, str]:
    """(number, date) of a ``spec_version`` path; (None, "") for any other file."""
    base = path.rsplit("/", 1)[-1]
    if not (base.startswith("v") and base.endswith(".yaml") and "-" in base):
        return None, ""
    number, _, date = base[1:-len(".yaml")].partition("-")
    return (int(number), date) if number.isdigit() else (None, "")


def plan_json(campaign: str) -> str:
    return f"{campaign_dir(campaign)}/plan.json"


def plan_index(campaign: str) -> str:
    return f"{campaign_dir(campaign)}/plan-index.json"


def superseded(campaign: str) -> str:
    """Cells an extension replaced by longer schedules, whose rows the next driver deletes."""
    return f"{campaign_dir(campaign)}/superseded.json"


def driver(campaign: str) -> str:
    return f"{campaign_dir(campaign)}/driver.json"


# ----- artifacts and Ray ----------------------------------------------------------------
def artifacts_dir(unit_id: str | None = None) -> str:
    return ARTIFACTS if unit_id is None else f"{ARTIFACTS}/{unit_id}"


def artifact(unit_id: str, name: str) -> str:
    return f"{artifacts_dir(unit_id)}/{name}.pt"


def checkpoints_dir(campaign: str) -> str:
    return f"{CHECKPOINTS}/{partition(campaign)}"


def checkpoint(campaign: str, unit_id: str) -> str:
    """The checkpoint of the training a unit is running: any node continues it from here."""
    return f"{checkpoints_dir(campaign)}/{unit_id}.ckpt"


def unit_claim(unit_id: str) -> str:
    """The lease of the worker training the unit, whatever its campaign (one training per unit id)."""
    return f"{CLAIMS}/{unit_id}.json"


def unit_claim_lock(unit_id: str) -> str:
    return f"{unit_claim(unit_id)}.lock"


def lineage_dir(lineage: str) -> str:
    return f"{LINEAGE}/{lineage}"


def lineage_entry(lineage: str, unit_id: str) -> str:
    """A finished unit of the lineage: its campaign and number of levels."""
    return f"{lineage_dir(lineage)}/{unit_id}.json"


def ray_storage() -> str:
    """Ray Tune's ``storage_path`` (relative to the store root)."""
    return RAY


_TUNE_STAMP = "%Y%m%d-%H%M%S"
_TUNE_SEP = "+"  # never in a campaign name (orchestrator/spec.py), so a name parses back to its campaign


def tune_experiment(campaign: str, stage: str | None = None, when: float | None = None) -> str:
    """Name of one Tuner run's experiment directory under ``ray_storage()``:
    ``<campaign>[+<stage>]+YYYYmmdd-HHMMSS`` (``when``: seconds since the epoch, default now)."""
    import time

    return _TUNE_SEP.join([campaign, *([stage] if stage else []), time.strftime(_TUNE_STAMP, time.localtime(when))])


def tune_experiment_campaign(name: str) -> str | None:
    """The campaign of a ``tune_experiment`` directory name (None: not one)."""
    parts = name.split(_TUNE_SEP)
    return parts[0] if len(parts) in (2, 3) and parts[0] else None
