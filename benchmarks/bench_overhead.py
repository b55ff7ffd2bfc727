"""Orchestration overhead of a campaign run, measured side by side in one run.

    .venv/bin/python benchmarks/bench_overhead.py [CAMPAIGN.yaml] [--max-concurrent N]

Runs the campaign (default campaigns/quick.yaml) into a fresh temporary store on an
embedded local Ray and prints

    overhead = campaign wall time / (sum of unit compute seconds / parallel slots)

where unit compute is what each unit's marker records (its body: data, training,
artifacts, rows) and slots = min(cluster CPUs / cpus_per_trial, --max-concurrent).
1.0 would be perfect packing with free scheduling; the excess is Ray start-up, actor
start-up, per-stage barriers and Tune bookkeeping. Wall time is reported with and
without Ray start-up. For layouts side by side (bundled families vs one unit per trial)
and per-unit overhead / driver memory, see benchmarks/bench_scale.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray

from orchestrator.execution import connect, run_plan
from orchestrator.plan import make_plan
from orchestrator.spec import load_campaign
from orchestrator.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("campaign", nargs="?", default=str(Path(__file__).resolve().parents[1] / "campaigns" / "quick.yaml"))
    ap.add_argument("--max-concurrent", type=int, default=None)
    args = ap.parse_args()
    campaign = load_campaign(args.campaign)
    plan = make_plan(campaign)
    with tempfile.TemporaryDirectory(prefix="lth-bench-") as tmp:
        t0 = time.perf_counter()
        connect(None)
        t_ray = time.perf_counter() - t0
        try:
            summary = run_plan(campaign, plan, Store(tmp), max_concurrent=args.max_concurrent)
        finally:
            ray.shutdown()
        wall = time.perf_counter() - t0
    ideal = summary.unit_seconds / summary.slots
    print(f"campaign {campaign.name}: {len(plan.cells)} cells, {len(plan.units)} units, {summary.slots} slots, "
          f"layout {summary.layout}, {summary.bundles} trials")
    print(f"ray start-up          {t_ray:8.1f} s")
    print(f"campaign wall         {wall:8.1f} s   (stages only: {summary.seconds:.1f} s)")
    print(f"unit compute (sum)    {summary.unit_seconds:8.1f} s   ideal wall = sum / slots = {ideal:.1f} s")
    print(f"overhead ratio        {wall / ideal:8.2f}x  (stages only: {summary.seconds / ideal:.2f}x)")


if __name__ == "__main__":
    main()
