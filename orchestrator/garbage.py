"""What a finished campaign no longer needs for resume (``lth gc``).

A run leaves, besides its tables (the record, never touched here):

* ``_ray/<campaign>+...`` (``paths.tune_experiment``): Ray Tune's experiment directories. Resume goes through the unit
  markers and the ledger, never through Tune's state, so a finished campaign needs none.
* ``_artifacts/<unit>/``: dense weights, per-level masks and driver weights. A unit that is
  not finished, or another campaign that has not finished a unit of its own plan, may still
  load them; only artifacts no unfinished unit of any campaign in the store names are
  garbage. ``keep_weights`` keeps them all (e.g. to analyse the masks later). A later campaign
  does not reuse a dense or trajectory unit whose artifacts are gone (``reuse.artifacts_kept``):
  it trains it again.
* ``_staging/`` and ``_checkpoints/`` of finished units: normally already deleted by the
  committer and at the end of a training; leftovers of a crash.

A campaign is finished when every unit of its plan has a final marker that the driver has
committed (no pending batch). Failed units keep everything a rerun needs (their staging,
checkpoints and the artifacts they load): ``lth run`` retries them. Collection holds the
campaign's lease (``orchestrator/lease.py``), so no driver runs the campaign meanwhile.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

from orchestrator import paths
from orchestrator.committer import CommitLog, unit_signature
from orchestrator.ledger import FINISHED, UnitMarker, load_markers
from orchestrator.store import Store


class NotFinished(RuntimeError):
    """The campaign still needs its files: it has units to run or rows to commit."""


@dataclass(frozen=True)
class Garbage:
    path: str  # store-relative directory or file
    bytes: int
    what: str


def _size(store: Store, path: str) -> int:
    info = store.fs.get_file_info(store.full(path))
    if info.type == pafs.FileType.File:
        return info.size or 0
    if info.type != pafs.FileType.Directory:
        return 0
    sel = pafs.FileSelector(store.full(path), recursive=True, allow_not_found=True)
    return sum(i.size or 0 for i in store.fs.get_file_info(sel) if i.type == pafs.FileType.File)


def _children(store: Store, path: str) -> list[str]:
    """Root-relative paths of the entries directly under directory ``path``."""
    sel = pafs.FileSelector(store.full(path), allow_not_found=True)
    return sorted(store.relative(i.path) for i in store.fs.get_file_info(sel))


@dataclass(frozen=True)
class _Campaign:
    depends: dict[str, list[str]]  # unit id -> the units it loads artifacts of
    markers: dict[str, UnitMarker]

    @classmethod
    def load(cls, store: Store, campaign: str) -> _Campaign | None:
        plan = store.get_json(paths.plan_json(campaign))  # the full plan: it names dependencies
        if not isinstance(plan, dict):
            return None
        depends = {uid: list(u.get("depends", [])) for uid, u in plan["units"].items()}
        return cls(depends, load_markers(store, campaign, depends))

    def unsettled(self) -> list[str]:
        """Units that may still run: no final marker, and no dependency that failed or diverged."""
        def blocked(uid: str) -> bool:
            return any(self.markers[d].final and self.markers[d].status != "done" for d in self.depends[uid])

        return [u for u, m in self.markers.items() if not m.final and not blocked(u)]

    def needed(self) -> set[str]:
        """Units whose artifacts a later run may load: every unit not finished and its dependencies."""
        out: set[str] = set()
        for uid, m in self.markers.items():
            if m.status not in FINISHED:
                out |= {uid, *self.depends[uid]}
        return out


def tune_dirs(store: Store, campaign: str) -> list[str]:
    """Tune's experiment directories of ``campaign`` (``paths.tune_experiment``)."""
    return [p for p in _children(store, paths.ray_storage())
            if paths.tune_experiment_campaign(posixpath.basename(p)) == campaign]


def collect(store: Store, campaign: str, *, keep_weights: bool = False) -> list[Garbage]:
    """What ``campaign`` no longer needs; raises ``NotFinished`` when it is not finished."""
    mine = _Campaign.load(store, campaign)
    if mine is None:
        raise NotFinished(f"campaign {campaign!r}: not in store {store.uri}")
    markers, pending = mine.markers, mine.unsettled()
    if pending:
        raise NotFinished(f"campaign {campaign!r} is not finished: {len(pending)} of {len(markers)} units have not run "
                          f"to the end (e.g. {pending[0]}); `lth run` it first (`lth status` shows it)")
    log = CommitLog.load(store, campaign)
    uncommitted = sorted(u for u, m in markers.items() if m.final and log.units.get(u) != unit_signature(m))
    if uncommitted or store.exists(paths.pending_batch(campaign)):
        raise NotFinished(f"campaign {campaign!r} has rows not yet committed ({len(uncommitted)} unit(s)); "
                          "`lth run` it again first, which commits them")
    out = [Garbage(p, _size(store, p), "Ray Tune experiment directory") for p in tune_dirs(store, campaign)]
    done = {u for u, m in markers.items() if m.status in FINISHED}
    for uid in sorted(done):
        for path, what in ((paths.staging_unit_dir(campaign, uid), "staged rows already committed"),
                           (paths.checkpoint(campaign, uid), "training checkpoint of a finished unit")):
            if store.exists(path):
                out.append(Garbage(path, _size(store, path), what))
    if not keep_weights:
        needed = mine.needed()  # a rerun retries failed units: they and their dependencies keep theirs
        for other in store.campaigns():
            theirs = _Campaign.load(store, other) if other != campaign else None
            if theirs is not None:
                needed |= theirs.needed()
        for uid in sorted(done - needed):
            path = paths.artifacts_dir(uid)
            if store.exists(path):
                out.append(Garbage(path, _size(store, path), "weights and masks (resume only)"))
    return out


def remove(store: Store, items: list[Garbage]) -> int:
    """Delete ``items``; returns the bytes freed."""
    for g in items:
        if store.fs.get_file_info(store.full(g.path)).type == pafs.FileType.File:
            store.delete(g.path)
        else:
            store.delete_dir(g.path)
    return sum(g.bytes for g in items)


def collect_and_remove(store: Store, campaign: str, *, keep_weights: bool, dry_run: bool) -> list[Garbage]:
    """``collect`` under the campaign's lease, then ``remove`` unless ``dry_run``."""
    from orchestrator.lease import acquire

    with acquire(store, campaign):
        items = collect(store, campaign, keep_weights=keep_weights)
        if not dry_run:
            remove(store, items)
    return items

