"""Forgetting on purpose: ``lth run --recompute UNIT_ID|STAGE`` (issue 14).

The named units of the campaign (a unit id, or a stage name for all of its units), and the
units that depend on them (they read the named units' artifacts), are trained again in this
campaign, never served from another campaign's copy. Their markers are reset to "not run"
(``extra["recompute"]`` says when and keeps reuse away, ``orchestrator/reuse.py``); their
checkpoints and staged rows are dropped. Their committed rows stay readable until the new
rows are committed: a unit committed before is replaced in the same atomic Delta commit that
adds its new rows (``orchestrator/committer.py``), so a reader never sees both, or neither.

Other campaigns that were served the old result keep their copy of its rows.
"""

from __future__ import annotations

from orchestrator import paths
from orchestrator.continuation import CONTINUED_FROM
from orchestrator.ledger import UnitMarker, now
from orchestrator.plan import STAGES, Plan
from orchestrator.reuse import RECOMPUTE, REUSED_FROM, SERVED_KEY
from orchestrator.store import Store

_DROPPED = (REUSED_FROM, "reused_seconds", SERVED_KEY, "waited_s", CONTINUED_FROM)  # describe the forgotten result


def targets(plan: Plan, names: tuple[str, ...] | list[str]) -> list[str]:
    """The unit ids ``names`` (unit ids or stage names) stand for, with their dependents, in plan
    order. Raises ``ValueError`` naming what is neither."""
    unknown = [n for n in names if n not in plan.units and n not in STAGES]
    if unknown:
        raise ValueError(f"--recompute: {', '.join(map(repr, unknown))} is neither a unit of campaign "
                         f"{plan.campaign!r} nor a stage ({', '.join(STAGES)}); `lth status` and plan.json list its units")
    chosen = {uid for n in names for uid in ([u.unit_id for u in plan.stage(n)] if n in STAGES else [n])}
    for uid, unit in plan.units.items():  # plan order is stage order: a dependency comes first
        if chosen.intersection(unit.depends):
            chosen.add(uid)
    return [uid for uid in plan.units if uid in chosen]


def forget(store: Store, plan: Plan, unit_ids: list[str]) -> None:
    """Reset the units' markers so the next run trains them (under the campaign's lease)."""
    campaign = plan.campaign
    for uid in unit_ids:
        old = UnitMarker.load(store, campaign, uid)
        extra = {k: v for k, v in old.extra.items() if k not in _DROPPED}
        UnitMarker(uid, stage=plan.units[uid].stage, attempts=old.attempts,
                   extra={**extra, RECOMPUTE: now()}).save(store, campaign)
        store.delete(paths.checkpoint(campaign, uid))
        store.delete_dir(paths.staging_unit_dir(campaign, uid))
