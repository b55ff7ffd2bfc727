"""Is ``lth status`` / ``lth report`` interactive (< 2 s) on a store of 10,000 trials?

Builds once (cached in ``--workdir``) a store with everything ``lth status`` reads, written
through the real functions: the four tables (``analysis.synthetic.write_bulk``, real writer),
``_campaigns/<c>/spec.yaml``, ``spec.json``, ``plan.json`` (the shape of ``Plan.to_json``: a
dense unit per (dataset, arch, lr, seed), a trajectory per cell family, a reinit branch per
trajectory, i.e. ~11,000 units), one marker per unit (``orchestrator.paths.marker`` +
``Store.put_json``; a few failed / a few ``running``) and an artifact file per unit. Then
times, side by side, each command in-process (click's CliRunner, fresh Store, warm page
cache) and as a subprocess (what a user types; includes interpreter start and imports), and
the floor: ``lth status --help``, ``import orchestrator.cli`` and ``import analysis.report`` as
subprocesses. ``lth status`` is also timed without the plan index (stores registered before
``lth run`` wrote it); ``lth report`` with an empty figure cache (every figure drawn: the first
report of a campaign on a machine, usually the one ``lth run`` writes at its end), into a new
directory (figures copied from the cache) and again into the same one (figures kept); for ``lth report`` as a subprocess also when the verdict
table appears (printed before the figures are drawn).

    .venv/bin/python benchmarks/bench_cli_scale.py --workdir /tmp/lth-cli-scale [--trials 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from click.testing import CliRunner  # noqa: E402
from timing import best_of  # noqa: E402 - benchmarks/timing.py, beside this script

from analysis.synthetic import trial_id, write_bulk  # noqa: E402
from orchestrator import paths  # noqa: E402
from orchestrator.cli import main  # noqa: E402
from orchestrator.status import plan_index  # noqa: E402
from orchestrator.store import Store  # noqa: E402

CAMPAIGN = "bench"
LIMIT = 2.0  # seconds: the "interactive"
# write_bulk's grid, in its order (trial t has these axes and seed t // len(GRID))
GRID = list(product(["digits", "mnist1d"], ["mlp", "cnn1d"], ["unstructured", "structured"],
                    ["oneshot", "iterative"], [0.1, 0.01], ["rewind", "reinit"]))
SPEC_YAML = f"name: {CAMPAIGN}\n# synthetic: benchmarks/bench_cli_scale.py\n"


def _uid(prefix: str, *parts) -> str:
    return f"{prefix}-" + hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _setup(dataset, arch, structure, schedule, lr, seed) -> dict:
    """A RunSetup-shaped dict (what plan.json stores per unit), so plan.json has a realistic size."""
    return {"data": {"dataset": dataset, "options": {}, "root": None, "val_size": 0},
            "model": {"arch": arch, "options": {}},
            "prune": {"exclude": [], "finetune_lr": None, "layer_rates": {}, "levels": 9, "mask_driver": "rewind",
                      "method": "magnitude_global" if structure == "unstructured" else "l1_structured", "rate": 0.2,
                      "schedule": schedule, "structure": structure},
            "seed": seed,
            "train": {"augment": False, "batch_size": 128, "epochs": 25, "eval_batch_size": 1024, "gamma": 0.1,
                      "iterations": None, "lr": lr, "milestones": [], "momentum": 0.9, "nesterov": False,
                      "optimizer": "sgd", "schedule": "cosine", "warmup_iterations": 0, "weight_decay": 0.0001}}


def build_plan(n_trials: int) -> dict:
    """plan.json for write_bulk's trials: cells keyed by write_bulk's trial ids."""
    cells, units = {}, {}
    for t in range(n_trials):
        dataset, arch, structure, schedule, lr, reset = GRID[t % len(GRID)]
        seed = t // len(GRID)
        cell = {"dataset": dataset, "arch": arch, "structure": structure, "schedule": schedule, "lr": lr}
        d = _uid("d", dataset, arch, lr, seed)
        tr = _uid("t", dataset, arch, structure, schedule, lr, seed)
        setup = _setup(dataset, arch, structure, schedule, lr, seed)
        tid = trial_id(cell, reset, seed)
        units.setdefault(d, {"stage": "dense", "reset": None, "depends": [], "serves": [], "mask_serves": [],
                             "rewind_iterations": [], "setup": setup})["serves"].append(tid)
        units.setdefault(tr, {"stage": "trajectory", "reset": "rewind", "depends": [d], "serves": [],
                              "mask_serves": [], "rewind_iterations": [], "setup": setup})["mask_serves"].append(tid)
        cell_units = [d, tr]
        if reset == "rewind":
            units[tr]["serves"].append(tid)
        else:
            b = _uid("b", tr, reset)
            units[b] = {"stage": "branch", "reset": reset, "depends": [d, tr], "serves": [tid], "mask_serves": [],
                        "rewind_iterations": [], "setup": setup}
            cell_units.append(b)
        cells[tid] = {"axes": {**cell, "reset": reset, "seed": seed}, "units": cell_units}
    return {"campaign": CAMPAIGN, "cells": cells, "units": units}


def build_store(root: Path, n_trials: int) -> Store:
    """Write the store once; a ``.complete`` file marks a finished build (else rebuilt)."""
    done = root / ".complete"
    if done.exists() and done.read_text() == str(n_trials):
        store = Store(str(root))
        if not store.exists(paths.plan_index(CAMPAIGN)):  # cached before `lth run` wrote the index
            store.put_json(paths.plan_index(CAMPAIGN), plan_index(store.get_json(paths.plan_json(CAMPAIGN))))
        return store
    shutil.rmtree(root, ignore_errors=True)
    store = Store(str(root))
    t0 = time.perf_counter()
    rows = write_bulk(store, CAMPAIGN, n_trials)
    plan = build_plan(n_trials)
    store.put_text(paths.spec_yaml(CAMPAIGN), SPEC_YAML)
    store.put_json(paths.plan_json(CAMPAIGN), plan)
    store.put_json(paths.plan_index(CAMPAIGN), plan_index(plan))  # as `lth run` writes it
    store.put_json(paths.spec_json(CAMPAIGN), {"name": CAMPAIGN})
    for i, (uid, unit) in enumerate(plan["units"].items()):
        # a few failed and a few running (driver record absent: "running or interrupted")
        status = "failed" if i % 1000 == 7 else "running" if i % 1000 == 11 else "done"
        store.put_json(paths.marker(CAMPAIGN, uid), {
            "unit_id": uid, "stage": unit["stage"], "status": status, "attempts": 1, "host": "bench",
            "node": "0" * 56, "device": "cpu", "levels_done": 9, "seconds": 1.0, "threads": 1, "pid": 1,
            "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:01+00:00",
            "reason": "RuntimeError: synthetic failure" if status == "failed" else None})
        store.put_bytes(paths.artifact(uid, "dense" if unit["stage"] == "dense" else "L9"), b"x")
    done.write_text(str(n_trials))
    print(f"built {root}: {n_trials} trials, {len(plan['units'])} units/markers, {rows:,} metric rows "
          f"in {time.perf_counter() - t0:.0f} s")
    return store


def in_process(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        raise SystemExit(f"lth {' '.join(args)} failed ({result.exit_code}): {result.output}\n{result.exception!r}")


def subprocess_run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def verdicts_then_done(argv: list[str]) -> tuple[float, float]:
    """Seconds until the verdict table's first line is printed, and until the command exits."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    for line in proc.stdout:
        if first is None and line.startswith("|"):
            first = time.perf_counter() - t0
    if proc.wait(timeout=600) != 0 or first is None:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}) or printed no table")
    return first, time.perf_counter() - t0


def main_() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True, help="store cached here (built on first use)")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N per measurement")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    root = work / "store"
    build_store(root, args.trials)
    lth = str(Path(sys.executable).with_name("lth"))
    out = str(work / "report")
    # the figure cache of this benchmark (inherited by the `lth` subprocesses), not the user's
    cache = work / "figure-cache"
    os.environ["LTH_FIGURE_CACHE"] = str(cache)
    status_args = ["status", "--store", str(root)]
    report_args = ["report", CAMPAIGN, "--store", str(root), "--out", out]
    floor = best_of(lambda: subprocess_run([lth, "status", "--help"]), args.repeat)
    imp = best_of(lambda: subprocess_run([sys.executable, "-c", "import orchestrator.cli"]), args.repeat)
    imp_analysis = best_of(lambda: subprocess_run([sys.executable, "-c", "import analysis.report"]), args.repeat)
    print(f"floor (subprocess): `lth status --help` {floor:.2f} s, `import orchestrator.cli` {imp:.2f} s, "
          f"`import analysis.report` {imp_analysis:.2f} s")
    probe = subprocess.run([sys.executable, "-c", "import sys, orchestrator.cli; print(' '.join(m for m in "
                            "('torch', 'ray', 'pandas', 'duckdb', 'matplotlib', 'scipy') if m in sys.modules))"],
                           capture_output=True, text=True, timeout=120)
    print(f"heavy modules imported by `import orchestrator.cli`: {probe.stdout.strip() or 'none'}")

    index = root / paths.plan_index(CAMPAIGN)
    hidden = index.with_name("plan-index.json.bench-hidden")

    def without_index(fn):
        index.rename(hidden)  # a store registered before the index: status parses plan.json
        try:
            fn()
        finally:
            hidden.rename(index)

    def fresh(fn):
        shutil.rmtree(out, ignore_errors=True)  # a new directory; figures copied from the figure cache
        fn()

    def cold(fn):
        shutil.rmtree(cache, ignore_errors=True)  # first report on this machine: every figure drawn
        fresh(fn)

    rows = [
        ("lth status", lambda: in_process(status_args), lambda: subprocess_run([lth, *status_args])),
        ("  (no plan index)", lambda: without_index(lambda: in_process(status_args)),
         lambda: without_index(lambda: subprocess_run([lth, *status_args]))),
        ("lth report (cold cache)", lambda: cold(lambda: in_process(report_args)),
         lambda: cold(lambda: subprocess_run([lth, *report_args]))),
        ("lth report (new dir)", lambda: fresh(lambda: in_process(report_args)),
         lambda: fresh(lambda: subprocess_run([lth, *report_args]))),
        ("lth report (again)", lambda: in_process(report_args), lambda: subprocess_run([lth, *report_args])),
    ]
    print(f"{'command':22s} {'in-process (s)':>15s} {'subprocess (s)':>15s}  (limit {LIMIT:g} s, best of {args.repeat})")
    for name, a_fn, b_fn in rows:
        a, b = best_of(a_fn, args.repeat), best_of(b_fn, args.repeat)
        print(f"{name:22s} {a:15.2f} {b:15.2f}  {'ok' if max(a, b) < LIMIT else 'OVER'}")
    for name, prepare in (("cold cache", lambda: [shutil.rmtree(p, ignore_errors=True) for p in (out, cache)]),
                          ("new dir", lambda: shutil.rmtree(out, ignore_errors=True)), ("again", lambda: None)):
        runs = []
        for _ in range(args.repeat):
            prepare()
            runs.append(verdicts_then_done([lth, *report_args]))
        first, done = min(runs, key=lambda r: r[1])
        print(f"lth report ({name}, subprocess): verdict table printed at {first:.2f} s, all files written at {done:.2f} s")


if __name__ == "__main__":
    main_()
