"""Scale of a campaign run: wall time vs ideal, per-unit overhead, driver peak memory,
for execution layouts measured side by side in one invocation.

    .venv/bin/python benchmarks/bench_scale.py [CAMPAIGN.yaml] [--seeds N] [--layouts auto,units]
                                               [--ray embedded,running] [--fit-seeds M]

Default campaign: campaigns/scale_1000.yaml (1,000 tiny units). ``--seeds N`` keeps the
first N seeds (a smaller campaign of the same shape). Each layout runs in its own fresh
Python process (so Ray start-up and the driver's peak RSS are its own) into a fresh store:

    ideal     = sum of unit compute seconds (from the unit markers) / slots
    overhead  = wall / ideal                       (wall includes Ray start-up)
    per unit  = (wall x slots - unit compute) / units   seconds of a slot lost per unit
    driver    = peak RSS of the driver process (ru_maxrss)

``--fit-seeds M`` also runs the first M seeds (same shape, fewer units) and fits
``wall = fixed + marginal x ideal`` through the two sizes: the fixed cost (Ray start and stop,
trial actors starting and importing torch) and the overhead every further second of unit
compute brings, i.e. from which campaign size a mode stays within 1.3x of ideal.

Ray (``--ray``, each measured in the same invocation when both are given):
``embedded`` — what ``lth run`` does on a laptop: wall runs from starting Ray to its shutdown;
``running`` — what ``lth run --address`` does on a cluster that is already up (a separate
``ray start --head`` with ``--num-cpus`` CPUs, started before the clock): wall runs from the
driver connecting to the campaign's last row. Both create every trial actor (and its
``import torch``) within the measured time.

Layouts (orchestrator.execution.run_plan): ``auto`` (bundles; families without stage
barriers when there are >= 2 x slots of them), ``staged`` (bundles, stage barriers),
``units`` (one unit per Tune trial, stage barriers: the pre-bundling behaviour).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from any directory

from orchestrator.faults import kill_session  # noqa: E402


def one(spec_path: str, layout: str, num_cpus: int | None, address: str | None = None) -> dict:
    import ray

    from orchestrator.execution import connect, run_plan
    from orchestrator.plan import make_plan
    from orchestrator.spec import load_campaign
    from orchestrator.store import Store

    campaign = load_campaign(spec_path)
    plan = make_plan(campaign)
    with tempfile.TemporaryDirectory(prefix="lth-scale-") as tmp:
        t0 = time.perf_counter()
        connect(address, num_cpus=num_cpus)
        t_ray = time.perf_counter() - t0
        try:
            s = run_plan(campaign, plan, Store(tmp), layout=layout, progress_stream=open("/dev/null", "w"))
        finally:
            ray.shutdown()
        wall = time.perf_counter() - t0
    units = sum(v["ran"] for v in s.units.values())
    return {
        "ray": "running" if address else "embedded", "layout": s.layout, "units": units, "bundles": s.bundles, "slots": s.slots, "ray_start": t_ray,
        "wall": wall, "stages": s.seconds, "compute": s.unit_seconds, "cells": s.cells, "bundle_s": s.bundle_seconds, "phases": s.phases,
        "failed": sum(v["failed"] for v in s.units.values()),
        "driver_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(argv: list[str], env: dict) -> dict:
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    if out.returncode:
        sys.exit(f"{' '.join(argv[2:])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_cluster(num_cpus: int):
    """A one-node cluster from ``ray start --head`` in its own session and temp dir (token auth
    off, as a manual cluster needs since Ray 2.59); yields (address, env for its drivers)."""
    env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    temp_dir = tempfile.mkdtemp(prefix="lth-ray-", dir="/tmp")  # short: unix socket paths
    port = _free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", f"--num-cpus={num_cpus}",
         "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--include-dashboard=false",
         f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats"],
        env={**os.environ, **env}, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        probe = (f"import ray, time\nfor _ in range(600):\n    try:\n        ray.init(address='{address}', "
                 "log_to_driver=False); break\n    except Exception: time.sleep(0.1)\n"
                 f"while ray.cluster_resources().get('CPU', 0) < {num_cpus}: time.sleep(0.1)\n")
        subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, check=True, timeout=120,
                       capture_output=True)
        yield address, env
    finally:
        kill_session(head.pid)  # the whole session (GCS, raylet, agents, workers), as the tests do
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _campaign_file(spec: dict, seeds: int | None, tmp: str, fallback: str) -> str:
    """The campaign with only its first ``seeds`` seeds (a file in ``tmp``), or ``fallback`` as is."""
    if not seeds:
        return fallback
    path = Path(tmp) / f"campaign-{seeds}.yaml"
    path.write_text(yaml.safe_dump({**spec, "seeds": spec["seeds"][:seeds]}))
    return str(path)


def _fixed_and_marginal(big: dict, small: dict) -> tuple[float, float]:
    """Split wall time into a fixed cost and a marginal overhead from two campaign sizes:
    wall = fixed + marginal x ideal, through both points (same Ray mode and layout)."""
    ideal_big, ideal_small = big["compute"] / big["slots"], small["compute"] / small["slots"]
    marginal = (big["wall"] - small["wall"]) / (ideal_big - ideal_small)
    return big["wall"] - marginal * ideal_big, marginal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("campaign", nargs="?", default=str(ROOT / "campaigns" / "scale_1000.yaml"))
    ap.add_argument("--seeds", type=int, default=None, help="keep only the first N seeds")
    ap.add_argument("--fit-seeds", type=int, default=None,
                    help="also run the first N seeds and split wall time into fixed cost + marginal overhead")
    ap.add_argument("--layouts", default="auto", help="comma-separated: auto, families, staged, units")
    ap.add_argument("--num-cpus", type=int, default=2, help="embedded Ray size (default 2)")
    ap.add_argument("--ray", default="embedded,running", help="comma-separated: embedded, running (see above)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: run one layout
    ap.add_argument("--address", default=None, help=argparse.SUPPRESS)  # child process: the running cluster
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.campaign, args.one, args.num_cpus, args.address)))
        return
    spec = yaml.safe_load(Path(args.campaign).read_text())
    n_seeds = len(spec["seeds"][: args.seeds])
    if args.fit_seeds and args.fit_seeds >= n_seeds:
        sys.exit(f"--fit-seeds {args.fit_seeds}: must be fewer than the campaign's {n_seeds} seeds")
    with tempfile.TemporaryDirectory(prefix="lth-scale-spec-") as tmp:
        sizes = {"full": _campaign_file(spec, args.seeds, tmp, args.campaign)}
        if args.fit_seeds:
            sizes["small"] = _campaign_file(spec, args.fit_seeds, tmp, args.campaign)
        rows, fits = [], []  # fits: (full row, small row) of the same requested mode and layout
        for mode in args.ray.split(","):
            if mode not in ("embedded", "running"):
                sys.exit(f"--ray: expected embedded or running, got {mode!r}")
            for layout in args.layouts.split(","):
                measured = {}
                for size, path in sizes.items():
                    child = [sys.executable, __file__, path, "--one", layout, "--num-cpus", str(args.num_cpus)]
                    if mode == "embedded":
                        measured[size] = _child(child, {})
                    else:
                        with running_cluster(args.num_cpus) as (address, env):
                            measured[size] = _child([*child, "--address", address], env)
                rows.append(measured["full"])
                if "small" in measured:
                    fits.append((measured["full"], measured["small"]))
    print(f"campaign {spec['name']} ({args.campaign}{f', first {args.seeds} seeds' if args.seeds else ''})")
    print(f"{'ray':>8} {'layout':>9} {'units':>6} {'trials':>6} {'slots':>5} {'ray up':>7} {'wall s':>8} {'compute s':>9} "
          f"{'ideal s':>8} {'overhead':>8} {'per unit':>9} {'driver MB':>9}  cells")
    for r in [*rows, *(small for _, small in fits)]:
        ideal = r["compute"] / r["slots"]
        per_unit = (r["wall"] * r["slots"] - r["compute"]) / max(1, r["units"])
        print(f"{r['ray']:>8} {r['layout']:>9} {r['units']:>6} {r['bundles']:>6} {r['slots']:>5} {r['ray_start']:>7.1f} "
              f"{r['wall']:>8.1f} {r['compute']:>9.1f} {ideal:>8.1f} {r['wall'] / ideal:>7.2f}x {per_unit:>8.3f}s "
              f"{r['driver_mb']:>9.0f}  {r['cells']}")
    for r in rows:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in r["phases"].items())
        print(f"{r['ray']:>8} {r['layout']:>9}: driver phases {phases}; inside trials {r['bundle_s']:.1f}s "
              f"(unit compute {r['compute']:.1f}s)")
    for r, small in fits:
        fixed, marginal = _fixed_and_marginal(r, small)
        reach = ("never" if marginal >= 1.3 else "any size" if fixed <= 0
                 else f"{fixed / (1.3 - marginal):.0f} s")
        print(f"{r['ray']:>8} {r['layout']:>9}: wall = {fixed:.1f} s fixed + {marginal:.2f} x ideal "
              f"(fit of {args.fit_seeds} vs {n_seeds} seeds); <= 1.3x ideal from an ideal of {reach}")
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            print(f"wall {r['ray']} {r['layout']} / {base['ray']} {base['layout']}: {r['wall'] / base['wall']:.2f}x")


if __name__ == "__main__":
    main()
