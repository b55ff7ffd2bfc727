"""Run a plan on Ray Tune: one ``Tuner`` per stage over that stage's pending units.

Stages run in order (dense -> trajectory -> branch) because a stage reads the previous
stage's artifacts from the store. Within a stage every unit is one Tune trial of a
function trainable; Tune places trials by ``tune.with_resources`` and retries a crashed
trial ``max_failures`` times. The store, not Tune's experiment state, is the source of
truth for resume: a rerun schedules only units without a finished marker.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import ray
from ray import tune

from orchestrator import faults
from orchestrator.plan import STAGES, Plan, Unit
from orchestrator.progress import Progress, ProgressCallback
from orchestrator.spec import Campaign
from orchestrator.store import Store
from orchestrator.units import FINISHED, marker_path, read_marker, run_unit, runnable, write_trials


@dataclass
class RunSummary:
    campaign: str
    units: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> {ran, skipped, failed, blocked}
    cells: dict[str, int] = field(default_factory=dict)  # status -> count
    seconds: float = 0.0
    unit_seconds: float = 0.0  # compute seconds of the units run in this invocation
    slots: int = 1

    def line(self) -> str:
        units = ", ".join(
            f"{s} {v['ran']} ran/{v['skipped']} skipped" + (f"/{v['failed']} failed" if v["failed"] else "")
            + (f"/{v['blocked']} blocked" if v["blocked"] else "")
            for s, v in self.units.items()
        )
        cells = ", ".join(f"{k} {v}" for k, v in self.cells.items() if v)
        return f"campaign {self.campaign}: {self.seconds:.1f}s | units: {units} | cells: {cells}"


def _trainable(config: dict, *, units: dict[str, Unit], store_uri: str, campaign: str, threads: int, cwd: str):
    """A Tune function trainable running one unit. Small report payload: the store has the data."""
    import torch

    # Tune starts each trial in its own trial directory; relative paths in a spec (data.root)
    # are relative to where `lth run` was started, when that directory exists on this node.
    if os.path.isdir(cwd):
        os.chdir(cwd)
    torch.set_num_threads(threads)  # the trial's CPU share, not every core of the node
    unit = units[config["unit_id"]]
    node = ray.get_runtime_context().get_node_id()
    marker = run_unit(Store(store_uri), campaign, unit, node=node)
    tune.report({"unit_id": unit.unit_id, "status": marker["status"], "seconds": marker.get("seconds", 0.0)})


def _quiet() -> None:
    """Our progress line replaces Tune's tables: the legacy output engine honours verbose=0
    (the new one still prints a configuration box), and Tune's INFO logs are not needed."""
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
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    return True


def _pending(store: Store, campaign: str, units: list[Unit]) -> tuple[list[Unit], int, list[Unit]]:
    run, skipped, blocked = [], 0, []
    for u in units:
        m = read_marker(store, campaign, u.unit_id) or {}
        if m.get("status") in FINISHED:
            skipped += 1
        elif runnable(store, campaign, u)[0]:
            run.append(u)
        else:
            blocked.append(u)
    return run, skipped, blocked


def run_plan(
    campaign: Campaign,
    plan: Plan,
    store: Store,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    progress_stream=None,
) -> RunSummary:
    """Run every unfinished unit of ``plan`` (staged) and write the trials rows."""
    t0 = time.perf_counter()
    spec = campaign.spec
    res = spec.resources
    _quiet()
    started = connect(address)
    summary = RunSummary(campaign=plan.campaign)
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        summary.slots = max(1, int(cpus // res.cpus_per_trial))
        if max_concurrent:
            summary.slots = min(summary.slots, max_concurrent)
        progress = Progress({s: len(plan.stage(s)) for s in STAGES}, stream=progress_stream)
        storage = store.uri.rstrip("/") + "/_ray"
        if "://" not in storage:
            os.makedirs(storage, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        faults.kill_point("before_first_trial")  # test hook, orchestrator/faults.py
        for stage in STAGES:
            todo, skipped, blocked = _pending(store, plan.campaign, plan.stage(stage))
            counts = {"ran": len(todo), "skipped": skipped, "failed": 0, "blocked": len(blocked)}
            summary.units[stage] = counts
            progress.begin_stage(stage, skipped)
            if todo:
                counts["failed"] = _run_stage(plan, stage, todo, store, progress, storage, f"{plan.campaign}-{stage}-{stamp}",
                                              max_concurrent, campaign)
            write_trials(store, plan)  # cells finish as early as their last unit does
            faults.kill_point(f"after_stage:{stage}")
        progress.close()
        for u in plan.units.values():
            m = read_marker(store, plan.campaign, u.unit_id) or {}
            summary.unit_seconds += float(m.get("seconds", 0.0))
        summary.cells = write_trials(store, plan)
    finally:
        if started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_stage(plan: Plan, stage: str, todo: list[Unit], store: Store, progress: Progress, storage: str, name: str,
               max_concurrent: int | None, campaign: Campaign) -> int:
    res = campaign.spec.resources
    trainable = tune.with_parameters(
        _trainable,
        units={u.unit_id: u for u in todo},
        store_uri=store.uri,
        campaign=plan.campaign,
        threads=max(1, int(res.cpus_per_trial)),
        cwd=os.getcwd(),
    )
    resources = {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"unit_id": tune.grid_search([u.unit_id for u in todo])},
        # reuse_actors: a unit is seconds of work; starting a fresh actor (and torch import) per
        # trial would cost as much as the unit itself.
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=name,
            failure_config=tune.FailureConfig(max_failures=campaign.spec.max_failures),
            verbose=0,
            callbacks=[ProgressCallback(progress)],
        ),
    )
    results = tuner.fit()
    failed = 0
    for r in results:
        if r.error is None:
            continue
        uid = r.config["unit_id"]
        m = read_marker(store, plan.campaign, uid) or {"unit_id": uid, "stage": stage, "attempts": 0}
        if m.get("status") in FINISHED:
            continue  # the unit finished; the error came after its last write
        failed += 1
        m.update(status="failed", reason=m.get("reason") or _short(r.error), finished_at=_iso_now())
        store.put_json(marker_path(plan.campaign, uid), m)
    return failed


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:500]


def _iso_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat()
