"""Scale of a campaign run: wall time vs ideal, per-unit overhead, driver peak memory,
for execution layouts measured side by side in one invocation.

    .venv/bin/python benchmarks/bench_scale.py [CAMPAIGN.yaml] [--seeds N] [--layouts auto,units]

Default campaign: campaigns/scale_1000.yaml (1,000 tiny units). ``--seeds N`` keeps the
first N seeds (a smaller campaign of the same shape). Each layout runs in its own fresh
Python process (so Ray start-up and the driver's peak RSS are its own) into a fresh store:

    ideal     = sum of unit compute seconds (from the unit markers) / slots
    overhead  = wall / ideal                       (wall includes Ray start-up)
    per unit  = (wall x slots - unit compute) / units   seconds of a slot lost per unit
    driver    = peak RSS of the driver process (ru_maxrss)

Layouts (orchestrator.execution.run_plan): ``auto`` (bundles; families without stage
barriers when there are >= 2 x slots of them), ``staged`` (bundles, stage barriers),
``units`` (one unit per Tune trial, stage barriers: the pre-bundling behaviour).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def one(spec_path: str, layout: str, num_cpus: int | None) -> dict:
    import ray

    from orchestrator.execution import connect, run_plan
    from orchestrator.plan import make_plan
    from orchestrator.spec import load_campaign
    from orchestrator.store import Store

    campaign = load_campaign(spec_path)
    plan = make_plan(campaign)
    with tempfile.TemporaryDirectory(prefix="lth-scale-") as tmp:
        t0 = time.perf_counter()
        connect(None, num_cpus=num_cpus)
        t_ray = time.perf_counter() - t0
        try:
            s = run_plan(campaign, plan, Store(tmp), layout=layout, progress_stream=open("/dev/null", "w"))
        finally:
            ray.shutdown()
        wall = time.perf_counter() - t0
    units = sum(v["ran"] for v in s.units.values())
    return {
        "layout": s.layout, "units": units, "bundles": s.bundles, "slots": s.slots, "ray_start": t_ray,
        "wall": wall, "stages": s.seconds, "compute": s.unit_seconds, "cells": s.cells, "bundle_s": s.bundle_seconds, "phases": s.phases,
        "failed": sum(v["failed"] for v in s.units.values()),
        "driver_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("campaign", nargs="?", default=str(ROOT / "campaigns" / "scale_1000.yaml"))
    ap.add_argument("--seeds", type=int, default=None, help="keep only the first N seeds")
    ap.add_argument("--layouts", default="auto", help="comma-separated: auto, families, staged, units")
    ap.add_argument("--num-cpus", type=int, default=2, help="embedded Ray size (default 2)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: run one layout
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.campaign, args.one, args.num_cpus)))
        return
    spec = yaml.safe_load(Path(args.campaign).read_text())
    with tempfile.TemporaryDirectory(prefix="lth-scale-spec-") as tmp:
        path = args.campaign
        if args.seeds:
            spec["seeds"] = spec["seeds"][: args.seeds]
            path = str(Path(tmp) / "campaign.yaml")
            Path(path).write_text(yaml.safe_dump(spec))
        rows = []
        for layout in args.layouts.split(","):
            out = subprocess.run([sys.executable, __file__, path, "--one", layout, "--num-cpus", str(args.num_cpus)],
                                 capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                sys.exit(f"layout {layout} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"campaign {spec['name']} ({args.campaign}{f', first {args.seeds} seeds' if args.seeds else ''})")
    print(f"{'layout':>9} {'units':>6} {'trials':>6} {'slots':>5} {'ray up':>7} {'wall s':>8} {'compute s':>9} "
          f"{'ideal s':>8} {'overhead':>8} {'per unit':>9} {'driver MB':>9}  cells")
    for r in rows:
        ideal = r["compute"] / r["slots"]
        per_unit = (r["wall"] * r["slots"] - r["compute"]) / max(1, r["units"])
        print(f"{r['layout']:>9} {r['units']:>6} {r['bundles']:>6} {r['slots']:>5} {r['ray_start']:>7.1f} "
              f"{r['wall']:>8.1f} {r['compute']:>9.1f} {ideal:>8.1f} {r['wall'] / ideal:>7.2f}x {per_unit:>8.3f}s "
              f"{r['driver_mb']:>9.0f}  {r['cells']}")
    for r in rows:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in r["phases"].items())
        print(f"{r['layout']:>9}: driver phases {phases}; inside trials {r['bundle_s']:.1f}s "
              f"(unit compute {r['compute']:.1f}s)")
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            print(f"wall {r['layout']} / {base['layout']}: {r['wall'] / base['wall']:.2f}x")


if __name__ == "__main__":
    main()
