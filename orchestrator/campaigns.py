"""Registering a campaign in the store, and campaigns that grow (issue 14).

``lth run`` registers the submitted spec under the campaign's name (``paths.spec_json``,
``paths.spec_yaml``, ``paths.plan_json``, ``paths.plan_index``). The same name again:

- the same spec: a resume;
- a spec whose cells include every cell already registered (more seeds, more values on an
  axis, another reset; other settings such as ``resources`` may change too): the campaign is
  extended in place. The new spec and plan replace the stored ones; unit ids are content
  hashes, so the units already finished keep their markers and only the new units run (a
  finished unit that now serves more cells gets its rows written for them,
  ``orchestrator/reuse.py``);
- a spec whose only change to registered cells is more levels (``prune.levels``, same rate):
  an extension too; each such cell is *superseded* by its longer cell (its trajectories continue
  from their last level, ``orchestrator/continuation.py``) and its rows are deleted by the next
  driver (``paths.superseded``, ``Committer.drop_cells``);
- a spec that changes or drops a registered cell otherwise: refused (``SpecChanged``), naming
  the settings that differ (``train.epochs: 8 -> 10``).

Every registered version of the spec is kept with its date (``paths.spec_version``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from orchestrator import paths
from orchestrator.spec import Campaign, SpecError, parse_campaign, spec_record
from orchestrator.store import Store

MAX_NAMED_CELLS = 5  # changed cells whose differences the refusal spells out


class SpecChanged(ValueError):
    """A spec under an existing campaign name that changes the campaign's registered cells."""


def register(store: Store, campaign: Campaign, plan) -> str:
    """Store the submitted spec and plan (``plan``: ``orchestrator.plan.Plan``); returns
    "new", "same" or "extended". Raises ``SpecChanged`` for a spec that changes existing cells.
    The caller holds the campaign's lease (an extension rewrites the plan a driver runs)."""
    from orchestrator.status import plan_index

    name = campaign.name
    canonical = spec_record(campaign)
    stored = store.get_json(paths.spec_json(name))
    if stored == canonical:
        if not store.exists(paths.plan_index(name)):  # registered before the index existed
            store.put_json(paths.plan_index(name), plan_index(plan.to_json()))
        return "same"
    if stored is not None:
        superseded = check_extension(store, campaign)
        if superseded:  # recorded before the new plan: a driver killed in between still drops them
            pending = set(store.get_json(paths.superseded(name)) or [])
            store.put_json(paths.superseded(name), sorted(pending | set(superseded)))
    plan_data = plan.to_json()
    if stored is not None and not spec_versions(store, name):  # registered before the history existed
        _record_version(store, name, store.get_text(paths.spec_yaml(name)) or "", "unknown")
    _record_version(store, name, campaign.text, _now())
    store.put_text(paths.spec_yaml(name), campaign.text)
    store.put_json(paths.plan_json(name), plan_data)
    store.put_json(paths.plan_index(name), plan_index(plan_data))  # what `lth status` reads
    store.put_json(paths.spec_json(name), canonical)  # last: its presence means the campaign is registered
    return "new" if stored is None else "extended"


def check_extension(store: Store, campaign: Campaign) -> list[str]:
    """Raise ``SpecChanged`` unless ``campaign`` keeps every cell registered under its name, or
    replaces it by the same cell with more levels; returns the trial ids of the cells replaced."""
    name = campaign.name
    plan = store.get_json(paths.plan_json(name)) or {}
    registered = list(plan.get("cells", {}))
    new_ids = {c.trial_id for c in campaign.cells}
    missing = [tid for tid in registered if tid not in new_ids]
    if not missing:
        return []
    superseded = _longer(store, campaign, set(missing))
    missing = [tid for tid in missing if tid not in superseded]
    if not missing:
        return sorted(superseded)
    differences = _differences(store, campaign, set(missing))
    detail = ("; ".join(differences) if differences
              else f"{len(missing)} registered cell(s) are not in the new spec")
    raise SpecChanged(
        f"campaign {name!r} already exists in {store.uri} with a different spec that changes "
        f"{len(missing)} of its {len(registered)} cell(s): {detail}. A spec under an existing name may only add "
        "cells (more seeds, more values on an axis, another reset); rerun with the registered spec to resume it, "
        "or give this one a new name"
    )


def _differences(store: Store, campaign: Campaign, missing: set[str]) -> list[str]:
    """``path: old -> new`` for the settings that differ between each registered cell the new
    spec lacks and its closest new cell (fewest differing settings), for a few such cells."""
    text = store.get_text(paths.spec_yaml(campaign.name))
    if text is None:
        return []
    try:
        old = parse_campaign(text, source="registered spec", data_check=False)
    except SpecError:
        return []  # registered by another version of the spec code: only the count is said
    new_flat = [flatten(c.config) for c in campaign.cells]
    out: list[str] = []
    for cell in [c for c in old.cells if c.trial_id in missing][:MAX_NAMED_CELLS]:
        flat = flatten(cell.config)
        best = min(new_flat, key=lambda n: len(_diff(flat, n)), default={})
        for line in _diff(flat, best):
            if line not in out:
                out.append(line)
    return out


def _without_levels(config: dict) -> str:
    from orchestrator.ids import stable_hash

    return stable_hash({**config, "prune": {k: v for k, v in config["prune"].items() if k != "levels"}})


def _longer(store: Store, campaign: Campaign, missing: set[str]) -> set[str]:
    """The ``missing`` registered cells that ``campaign`` has with more levels and nothing else changed."""
    text = store.get_text(paths.spec_yaml(campaign.name))
    if text is None:
        return set()
    try:
        old = parse_campaign(text, source="registered spec", data_check=False)
    except SpecError:
        return set()
    longest = {}
    for c in campaign.cells:
        key = _without_levels(c.config)
        longest[key] = max(longest.get(key, 0), c.config["prune"]["levels"])
    return {c.trial_id for c in old.cells if c.trial_id in missing
            and longest.get(_without_levels(c.config), 0) > c.config["prune"]["levels"]}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 8}} -> {"train.epochs": 8} (lists and empty dicts are leaves)."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    def show(d: dict, k: str) -> str:
        return json.dumps(d[k], default=str) if k in d else "(unset)"

    return [f"{k}: {show(old, k)} -> {show(new, k)}" for k in sorted(set(old) | set(new))
            if old.get(k, ...) != new.get(k, ...)]


# ----------------------------------------------------------------------------- history


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _record_version(store: Store, name: str, text: str, date: str) -> None:
    n = len(spec_versions(store, name)) + 1
    store.put_text(paths.spec_version(name, n, date), text)


def spec_versions(store: Store, name: str) -> list[tuple[int, str, str]]:
    """Every registered version of the campaign's spec: (number, date, store path), oldest first."""
    out = []
    for path in store.list(paths.spec_versions_dir(name)):
        number, date = paths.parse_spec_version(path)
        if number is not None:
            out.append((number, date, path))
    return sorted(out)
