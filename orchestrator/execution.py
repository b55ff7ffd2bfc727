"""Run a plan on Ray Tune: units packed into bundles, one Tune trial per bundle.

A tiny unit (a second of training) costs Tune about as much bookkeeping as it costs to
compute, so a trial runs a *bundle* of units in dependency order; markers stay per unit,
so resume and retry granularity is still one unit. Two layouts:

- ``families`` (no stage barriers): when the plan has at least ``2 x slots`` families (a
  dense unit plus the trajectories and branches that depend on it), whole families are
  packed into bundles (``make_bundles``) and ONE Tuner runs them all; a trajectory never waits for another
  family's dense run.
- ``staged``: with fewer families than that (one family would serialise the campaign),
  stages run in order (dense -> trajectory -> branch), each one Tuner over bundles of that
  stage's units, because a stage reads the previous stage's artifacts from the store.

Tune places trials by ``tune.with_resources`` and retries a crashed trial ``max_failures``
times: a bundle whose unit raised finishes its other units and then raises, so Tune reruns
it and the rerun skips every unit with a finished marker. The store, not Tune's experiment
state, is the source of truth for resume: a rerun schedules only units without a finished
marker.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import time
from dataclasses import dataclass, field

import ray
from ray import tune

from orchestrator import faults, paths, tables, worker_signals
from orchestrator.claims import train_once
from orchestrator.committer import COMMIT_ORDER, Committer
from orchestrator.continuation import continue_all
from orchestrator.lease import Lease, acquire
from orchestrator.ledger import UnitMarker, now
from orchestrator.plan import STAGES, Plan, Unit
from orchestrator.progress import Progress, ProgressCallback
from orchestrator.reuse import REUSED_FROM, serve_finished
from orchestrator.spec import Campaign
from orchestrator.store import Store
from orchestrator.units import run_unit, runnable
from trainers.config import CheckpointConfig
from trainers.preemption import Preempted

GUIDED_DIVISOR = 2  # a bundle takes 1/(2 x slots) of the remaining work (see make_bundles)
REPORT_EVERY_S = 2.0  # a bundle reports progress at most this often (each report is a driver round trip)


@dataclass
class RunSummary:
    campaign: str
    units: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> {ran, skipped, failed, blocked}
    reused: dict[str, int] = field(default_factory=dict)  # stage -> units served from another campaign's run
    reused_seconds: float = 0.0  # compute seconds those units took where they were computed
    continued: int = 0  # units that continued a finished shorter unit of their lineage (more levels)
    cells: dict[str, int] = field(default_factory=dict)  # status -> count
    seconds: float = 0.0
    unit_seconds: float = 0.0  # compute seconds of the units run in this invocation
    slots: int = 1
    layout: str = ""  # "families" | "staged" | "units" (one unit per trial, staged)
    bundles: int = 0  # Tune trials started
    bundle_seconds: float = 0.0  # wall seconds inside the bundle trainables (last attempt each)
    phases: dict[str, float] = field(default_factory=dict)  # driver wall seconds: setup, tune, rows, compact
    commits: int = 0  # batches committed to the tables in this invocation
    commit_seconds: float = 0.0  # driver wall seconds spent committing them
    files: dict[str, int] = field(default_factory=dict)  # table -> data files of the campaign after compaction

    def line(self) -> str:
        units = ", ".join(
            f"{s} {v['ran']} ran/{v['skipped']} skipped" + (f"/{v['failed']} failed" if v["failed"] else "")
            + (f"/{v['blocked']} blocked" if v["blocked"] else "")
            + (f"/{self.reused[s]} reused" if self.reused.get(s) else "")
            for s, v in self.units.items()
        )
        if sum(self.reused.values()):
            units += f" (reused units saved {self.reused_seconds:.1f}s of compute)"
        if self.continued:
            units += f" ({self.continued} continued from a shorter schedule: only their new levels ran)"
        cells = ", ".join(f"{k} {v}" for k, v in self.cells.items() if v)
        store = (f" | store: {self.commits} commit(s) in {self.commit_seconds:.1f}s, "
                 f"{sum(self.files.values())} data file(s) after compaction ({self.phases.get('compact', 0):.1f}s)")
        return f"campaign {self.campaign}: {self.seconds:.1f}s | units: {units} | cells: {cells}" + store


# ----------------------------------------------------------------------------- bundles


def _cost(u: Unit) -> float:
    """Relative cost of a unit for packing: trainings x budget (epochs, else iterations)."""
    epochs, iterations = u.budget
    return float(u.trainings * (epochs or iterations or 1))


def families(units: list[Unit]) -> list[list[Unit]]:
    """Group units by the dense unit they descend from (keeps the input's stage order)."""
    groups: dict[str, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.depends[0] if u.depends else u.unit_id, []).append(u)
    return list(groups.values())


def make_bundles(groups: list[list[Unit]], slots: int, divisor: int = GUIDED_DIVISOR) -> list[tuple[str, ...]]:
    """Pack groups (each kept whole, in order) into bundles of decreasing size (guided
    self-scheduling): each bundle takes about ``remaining cost / (divisor x slots)``, so the
    first ``slots`` bundles keep every slot busy for a long stretch, and the last ones are a
    single group each: whichever slot finishes first picks them up, and the tail where some
    slots idle is one small group long. Tune starts grid trials in order. Deterministic."""
    ordered = sorted(groups, key=lambda g: -sum(_cost(u) for u in g))  # stable: ties keep plan order
    remaining = sum(_cost(u) for g in ordered for u in g)
    bundles: list[tuple[str, ...]] = []
    current: list[str] = []
    cost = 0.0
    for g in ordered:
        current += [u.unit_id for u in g]
        cost += sum(_cost(u) for u in g)
        if cost >= remaining / (divisor * max(1, slots)):
            bundles.append(tuple(current))
            remaining -= cost
            current, cost = [], 0.0
    if current:
        bundles.append(tuple(current))
    return bundles


def _root(u: Unit) -> str:
    return u.depends[0] if u.depends else u.unit_id


def _trainable(config: dict, *, bundles: list[tuple[str, ...]], plan: Plan, store_uri: str, threads: int, cwd: str,
               checkpoint: CheckpointConfig | None = None):
    """A Tune function trainable running one bundle of units in order.

    A unit whose dependencies are not done (an upstream unit of the bundle failed) is
    skipped. A unit that raises does not stop the others; the bundle raises at the end so
    Tune retries it (finished units are then skipped by their markers). Units stage their
    rows; the driver commits them (``orchestrator.committer``). Reports are small (counts)
    and at most every ``REPORT_EVERY_S``: the store has the data.
    """
    import torch

    # Tune starts each trial in its own trial directory; relative paths in a spec (data.root)
    # are relative to where `lth run` was started, when that directory exists on this node.
    if os.path.isdir(cwd):
        os.chdir(cwd)
    torch.set_num_threads(threads)  # the trial's CPU share, not every core of the node
    store, campaign = Store(store_uri), plan.campaign
    context = ray.get_runtime_context()
    node, actor = context.get_node_id(), context.get_actor_id()
    done = dict.fromkeys(STAGES, 0)
    errors: list[str] = []
    started = last = time.monotonic()
    for _, family in itertools.groupby((plan.units[uid] for uid in bundles[config["bundle"]]), key=_root):
        for unit in family:
            if not UnitMarker.load(store, campaign, unit.unit_id).finished:
                if not runnable(store, campaign, unit)[0]:
                    continue  # blocked: left for the driver to report
                try:  # under the unit's global claim; served instead if another campaign finished it
                    train_once(store, campaign, unit,
                               functools.partial(run_unit, store, campaign, unit, node=node, actor=actor,
                                                 checkpoint=checkpoint))
                except Preempted:  # SIGTERM: checkpointed, the worker is ending; Tune's retry continues it
                    raise
                except Exception as e:  # noqa: BLE001 - recorded in the unit's marker; retried via Tune
                    errors.append(f"{unit.unit_id}: {type(e).__name__}: {e}")
                    continue
            done[unit.stage] += 1
            if time.monotonic() - last >= REPORT_EVERY_S:
                tune.report({**done, "failed": len(errors)})
                last = time.monotonic()
    tune.report({**done, "failed": len(errors), "seconds": time.monotonic() - started})
    if errors:
        raise RuntimeError(f"{len(errors)} unit(s) failed: " + "; ".join(errors)[:2000])


# ----------------------------------------------------------------------------- driver


def _quiet() -> None:
    """Our progress line replaces Tune's tables: the legacy output engine honours verbose=0
    (the new one still prints a configuration box), and Tune's INFO logs are not needed.
    (Tune's per-trial JSON/CSV loggers stay on: a bundle reports a handful of times, and
    ResultGrid warns without them.)"""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.WARNING)


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Start (or attach to) Ray. Returns True if this call started it (caller shuts it down).

    Without ``address`` an embedded local Ray sized to this machine is started, never a
    plain ``ray.init()`` (which would attach to a stray cluster). An already initialised Ray
    in this process (tests) is reused.
    """
    if ray.is_initialized():
        return False
    # this job's workers checkpoint a running training on SIGTERM before they end (worker_signals)
    runtime_env = {"worker_process_setup_hook": worker_signals.HOOK}
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
    else:
        # address="local": always a new embedded Ray. Without it ray.init() follows RAY_ADDRESS or the
        # address file of any `ray start` cluster on this machine (and fails, as num_cpus is given).
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, runtime_env=runtime_env)
    return True


def run_plan(
    campaign: Campaign,
    plan: Plan,
    store: Store,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    progress_stream=None,
    layout: str = "auto",
    lease: Lease | None = None,
) -> RunSummary:
    """Run every unfinished unit of ``plan`` and write the trials rows.

    ``layout``: "auto" (families when there are >= 2 x slots of them, else staged),
    "families", "staged", or "units" (staged, one unit per trial: the pre-bundling
    behaviour, kept for benchmarks).

    ``lease``: the campaign's lease (``orchestrator/lease.py``) the caller holds; without one,
    it is taken here (``LeaseHeld`` if another driver runs the campaign) and released at the end.
    """
    if layout not in ("auto", "families", "staged", "units"):
        raise ValueError(f"layout: expected auto, families, staged or units, got {layout!r}")
    t0 = time.perf_counter()
    res = campaign.spec.resources
    tables.check_writable(store)  # before Ray starts: a per-file store is refused, not hidden
    own_lease = lease is None
    if own_lease:
        lease = acquire(store, plan.campaign)
    try:
        tables.create_tables(store)  # before any commit: a killed first commit leaves a table with a log
    except BaseException:
        if own_lease:
            lease.release()
        raise
    _quiet()
    started = False
    summary = RunSummary(campaign=plan.campaign)
    try:
        all_units = list(plan.units.values())
        committer = Committer(store, plan, lease=lease)  # first re-applies a batch a killed driver left half committed
        before = dict(committer.refresh(full=True))
        # units finished in the store (another campaign, or this one for fewer cells) are served, not trained
        served = serve_finished(store, plan, before)
        # a full marker read costs a GET per unit on an object store: only when serving changed markers
        markers = dict(committer.refresh(full=True)) if served.reused or served.extended else before
        # units with more levels than a finished unit of their lineage continue it (issue 14)
        summary.continued = len(continue_all(store, plan, markers))
        # cells an extension replaced by longer schedules: their rows go once their units were continued
        superseded = store.get_json(paths.superseded(plan.campaign))
        if superseded:
            committer.drop_cells(superseded)
            store.delete(paths.superseded(plan.campaign))
        current = dict(committer.refresh(full=True)) if summary.continued else markers
        unfinished = [u for u in all_units if not current[u.unit_id].finished]
        if unfinished:  # Ray only when something is left to train (a campaign served from the store needs none)
            started = connect(address)
            cpus = ray.cluster_resources().get("CPU", 1.0)
            summary.slots = max(1, int(cpus // res.cpus_per_trial))
            if max_concurrent:
                summary.slots = min(summary.slots, max_concurrent)
        fams = families(unfinished)
        if layout == "auto":
            layout = "families" if len(fams) >= 2 * summary.slots else "staged"
        summary.layout = layout
        progress = Progress({s: len(plan.stage(s)) for s in STAGES}, stream=progress_stream)
        if layout == "families":
            progress.label = "all stages"  # from the first line on (staged: the stage's name)
        finished = {uid for uid, m in before.items() if m.finished}
        progress.begin(skipped={s: sum(u.unit_id in finished for u in plan.stage(s)) for s in STAGES},
                       reused={s: sum(plan.units[uid].stage == s for uid in served.reused) for s in STAGES})
        storage = store.uri.rstrip("/") + "/" + paths.ray_storage()
        if "://" not in storage:
            os.makedirs(storage, exist_ok=True)
        t_tune = time.perf_counter()
        summary.phases["setup"] = t_tune - t0
        run = _Runner(plan, store, campaign, storage, max_concurrent, progress, committer)
        faults.kill_point("before_first_trial")  # test hook (LTH_TEST_KILL_AT), orchestrator/faults.py
        if layout == "families":
            if fams:
                run(make_bundles(fams, summary.slots), paths.tune_experiment(plan.campaign))
        else:
            for stage in STAGES:
                todo = [u for u in plan.stage(stage)
                        if not UnitMarker.load(store, plan.campaign, u.unit_id).finished
                        and runnable(store, plan.campaign, u)[0]]
                progress.label = stage
                if todo:
                    bundles = ([(u.unit_id,) for u in todo] if layout == "units"
                               else make_bundles([[u] for u in todo], summary.slots))
                    run(bundles, paths.tune_experiment(plan.campaign, stage))
                if stage != STAGES[-1]:
                    committer.commit()  # cells finish as early as their last unit does
                faults.kill_point(f"after_stage:{stage}")  # test hook
        progress.close()
        summary.bundles, summary.bundle_seconds = run.trials, run.bundle_seconds
        summary.phases["tune"] = time.perf_counter() - t_tune
        t_rows = time.perf_counter()
        committer.refresh(full=True)
        committer.commit()
        after = committer.markers
        # reused: before the run (served) or by a worker that found another campaign's result (claims)
        reused = [uid for uid, m in after.items() if not before[uid].finished and m.finished
                  and REUSED_FROM in m.extra]
        summary.reused = {s: sum(plan.units[uid].stage == s for uid in reused) for s in STAGES}
        summary.reused_seconds = sum(float(after[uid].extra.get("reused_seconds") or 0.0) for uid in reused)
        summary.units = _stage_counts(plan, before, after, set(reused))
        summary.unit_seconds = sum(m.seconds for m in after.values())
        summary.cells = committer.counts()
        summary.commits, summary.commit_seconds = committer.stats.batches, committer.stats.seconds
        summary.phases["rows"] = time.perf_counter() - t_rows
        t_compact = time.perf_counter()
        summary.files = {t: tables.compact(store, t, plan.campaign)["files_after"] for t in COMMIT_ORDER}
        summary.phases["compact"] = time.perf_counter() - t_compact
    finally:
        if started:
            ray.shutdown()
        if own_lease:
            lease.release()
    summary.seconds = time.perf_counter() - t0
    return summary


def _stage_counts(plan: Plan, before: dict[str, UnitMarker], after: dict[str, UnitMarker],
                 reused: set[str] = frozenset()) -> dict[str, dict[str, int]]:
    """Per stage: skipped (finished before this run), ran (attempted or marked failed in this
    run), failed (of those ran), blocked (neither: an upstream unit failed or diverged).
    ``reused`` units (served from another campaign's run, ``RunSummary.reused``) are in none."""
    out = {}
    for stage in STAGES:
        c = {"ran": 0, "skipped": 0, "failed": 0, "blocked": 0}
        for u in plan.stage(stage):
            b, a = before[u.unit_id], after[u.unit_id]
            if u.unit_id in reused:
                continue
            if b.finished:
                c["skipped"] += 1
            elif a != b:
                c["ran"] += 1
                c["failed"] += a.status == "failed"
            else:
                c["blocked"] += 1
        out[stage] = c
    return out


class _Runner:
    """Runs one Tuner over a list of bundles and marks the units of bundles Tune gave up on."""

    def __init__(self, plan: Plan, store: Store, campaign: Campaign, storage: str, max_concurrent: int | None,
                 progress: Progress, committer: Committer | None = None):
        self.plan, self.store, self.campaign = plan, store, campaign
        self.storage, self.max_concurrent, self.progress = storage, max_concurrent, progress
        self.committer = committer
        self.trials = 0
        self.bundle_seconds = 0.0

    def __call__(self, bundles: list[tuple[str, ...]], name: str) -> None:
        """Run ``bundles`` to completion. When Ray's memory monitor kills a trial's worker,
        Tune (2.60) does not treat it as a trial failure but aborts the whole run
        (``RuntimeError`` from an ``OutOfMemoryError``); then the killed units are charged an
        attempt (failed after ``max_failures`` retries, as for any crash) and a new run
        continues with the unfinished bundles: one unit that needs too much memory never
        stops the campaign. Kills in a row that charge no unit (an actor killed between units)
        end it after ``max_failures`` restarts, with the error."""
        stalls = 0
        for restart in itertools.count():
            try:
                self._fit(bundles, name if restart == 0 else f"{name}-oom{restart}")
                return
            except RuntimeError as e:
                oom = _out_of_memory(e)
                if oom is None:
                    raise
                bundles, charged = self._after_oom(bundles, oom)
                stalls = 0 if charged else stalls + 1
                if stalls > self.campaign.spec.max_failures:
                    raise
            if not bundles:
                return

    def _after_oom(self, bundles: list[tuple[str, ...]], oom: BaseException) -> tuple[list[tuple[str, ...]], int]:
        """Charge the units Ray killed; return the bundles that still have work and how many
        units were charged. The killed
        actors are named in the error; a unit is charged if it is marked running under one of
        them (an actor killed between units charges none); if the error names no actor (another
        Ray version's message), every unit still marked running is charged."""
        campaign, limit = self.plan.campaign, self.campaign.spec.max_failures + 1
        victims = set(re.findall(r"Selected to kill: \(Actor\(([0-9a-f]+)\)", str(oom)))
        running = {uid: m for b in bundles for uid in b
                   if (m := UnitMarker.load(self.store, campaign, uid)).status == "running"}
        killed = {uid: m for uid, m in running.items() if m.actor in victims} if victims else running
        reason = "killed by Ray's memory monitor: the node ran out of memory"
        for m in killed.values():
            attempts = m.attempts or 1
            m.reason = f"{reason} (attempt {attempts})"
            if attempts >= limit:
                m.status, m.finished_at = "failed", now()
            m.save(self.store, campaign)
        # without their finished and failed units (a bundle would run a failed unit again)
        left = [tuple(uid for uid in b if not UnitMarker.load(self.store, campaign, uid).final) for b in bundles]
        return [b for b in left if any(runnable(self.store, campaign, self.plan.units[uid])[0] for uid in b)], len(killed)

    def _fit(self, bundles: list[tuple[str, ...]], name: str) -> None:
        spec = self.campaign.spec
        res = spec.resources
        self.trials += len(bundles)
        trainable = tune.with_parameters(
            _trainable,
            bundles=bundles,
            plan=self.plan,
            store_uri=self.store.uri,
            threads=max(1, int(res.cpus_per_trial)),
            cwd=os.getcwd(),
            checkpoint=spec.checkpoint,
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}),
            param_space={"bundle": tune.grid_search(list(range(len(bundles))))},
            # reuse_actors: skip a fresh actor (and torch import) per trial.
            tune_config=tune.TuneConfig(max_concurrent_trials=self.max_concurrent or None, reuse_actors=True),
            run_config=tune.RunConfig(
                storage_path=self.storage,
                name=name,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                verbose=0,
                callbacks=[ProgressCallback(self.progress)]
                + ([_CommitCallback(self.committer)] if self.committer else []),
            ),
        )
        for r in tuner.fit():
            self.bundle_seconds += float((r.metrics or {}).get("seconds", 0.0))
            bundle = bundles[r.config["bundle"]]
            if r.error is not None:
                self._give_up(bundle, r.error)

    def _give_up(self, bundle: tuple[str, ...], error: BaseException) -> None:
        """Tune stopped retrying this bundle: its unfinished, runnable units are failed (a
        unit blocked by a failed upstream unit stays pending: its cells report the upstream)."""
        campaign = self.plan.campaign
        for uid in bundle:
            unit = self.plan.units[uid]
            m = UnitMarker.load(self.store, campaign, uid)
            if m.finished or not runnable(self.store, campaign, unit)[0]:
                continue
            m.stage = m.stage or unit.stage
            m.reason = m.reason or ("not run: its bundle gave up after " + _short(error))
            m.status, m.finished_at = "failed", now()
            m.save(self.store, campaign)


class _CommitCallback(tune.Callback):
    """Commits staged rows from the driver while Tune runs (at most every few seconds)."""

    def __init__(self, committer: Committer):
        self.committer: Committer | None = committer

    def __getstate__(self) -> dict:
        # Tune pickles callbacks with its experiment state; the committer (its lease's heartbeat
        # thread) is not picklable, and a restored copy must never commit.
        return {"committer": None}

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.committer is not None:
            self.committer.maybe_commit()


def _out_of_memory(err: BaseException) -> BaseException | None:
    """The ``ray.exceptions.OutOfMemoryError`` behind ``err`` (its causes / contexts), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ray.exceptions.OutOfMemoryError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:500]
