"""Chaos run: a campaign under random SIGKILLs of Ray workers and of the driver, re-run until
complete, then checked against a clean run of the same campaign.

    .venv/bin/python scripts/chaos.py [campaigns/quick.yaml] [--seed 0] [--max-kills 6] [--chaos-seconds 150]

Each ``lth run`` is a subprocess in its own session with its embedded Ray. While it runs,
after a seeded random pause, one of: SIGKILL the worker process running a unit (pid from the
unit's ``running`` marker), SIGKILL a random ``ray::`` worker process of the run, or SIGKILL
the driver together with its embedded Ray (the whole session). Kills stop after
``--max-kills`` or ``--chaos-seconds``; the same ``lth run`` is started again until it exits 0.
Only processes of the runs this script started (their session) are ever signalled.
Then the campaign runs cleanly into a second store, and the four tables are compared
(sorted rows without the columns that measure the run: seconds, host, device, attempts,
timestamps): same rows, same values, no duplicates. Exit status 0 when they match.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from orchestrator.faults import kill_session, session_pids

TABLES = ("trials", "levels", "metrics", "masks")
VOLATILE = {"seconds", "host", "device", "attempts", "started_at", "finished_at"}
LTH = [sys.executable, "-c", "from orchestrator.cli import main; main()"]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running_units(store: Path, campaign: str) -> list[dict]:
    out = []
    for p in (store / "_units" / f"campaign={campaign}").glob("*.json"):
        try:
            m = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("status") == "running" and m.get("pid"):
            out.append(m)
    return out


def rows(store: Path, table: str) -> list[tuple]:
    # a finished run's Delta tables are compacted and vacuumed: the partitions hold exactly the current files
    rel = duckdb.sql(f"select * from read_parquet('{store}/{table}/campaign=*/*.parquet', hive_partitioning=true)")
    cols = [c for c in rel.columns if c not in VOLATILE]
    return sorted(duckdb.sql(f"select {', '.join(cols)} from rel").fetchall(), key=repr)


def compare(a: Path, b: Path) -> dict[str, dict]:
    """Per table: row counts, duplicates in each store, rows only in one of them."""
    out = {}
    for t in TABLES:
        ra, rb = rows(a, t), rows(b, t)
        sa, sb = set(ra), set(rb)
        out[t] = {"rows": (len(ra), len(rb)), "duplicates": (len(ra) - len(sa), len(rb) - len(sb)),
                  "only_chaos": len(sa - sb), "only_clean": len(sb - sa), "equal": ra == rb}
    return out


def chaos_run(spec: str, store: Path, campaign: str, rng: random.Random, max_kills: int, chaos_seconds: float,
              pause: tuple[float, float], max_runs: int) -> dict:
    kills = {"unit_worker": 0, "ray_worker": 0, "driver": 0}
    runs, t0 = 0, time.monotonic()
    while True:
        runs += 1
        if runs > max_runs:
            raise SystemExit(f"chaos: campaign not complete after {max_runs} runs")
        proc = subprocess.Popen(LTH + ["run", spec, "--store", str(store), "--no-report"], start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            while proc.poll() is None:
                wait = rng.uniform(*pause)
                deadline = time.monotonic() + wait
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if proc.poll() is not None or sum(kills.values()) >= max_kills or time.monotonic() - t0 > chaos_seconds:
                    continue
                action = rng.choice(["unit_worker", "ray_worker", "driver"])
                ours = set(session_pids(proc.pid))
                if action == "unit_worker":
                    pids = [m["pid"] for m in running_units(store, campaign) if m["pid"] in ours]
                elif action == "ray_worker":
                    # task / actor workers only: not the node's agents (their death takes the node down)
                    pids = [p for p in ours if cmdline(p).startswith("ray::") and "Agent" not in cmdline(p)]
                else:
                    pids = [proc.pid]
                if not pids:
                    continue  # nothing of that kind right now (e.g. between stages): try again later
                victim = rng.choice(sorted(pids))
                when, what = time.monotonic() - t0, cmdline(victim)[:40]
                if action == "driver":
                    kill_session(proc.pid)  # the driver and its embedded Ray
                else:
                    os.kill(victim, signal.SIGKILL)
                kills[action] += 1
                print(f"  t={when:6.1f}s run {runs}: SIGKILL {action} pid {victim} ({what})",
                      flush=True)
            out = proc.stdout.read()
        finally:
            kill_session(proc.pid)  # whatever the run left behind (embedded Ray of a killed driver)
            proc.wait()
        code = proc.returncode
        print(f"  run {runs} exited {code}" + (f": {out.strip().splitlines()[-1][:160]}" if out.strip() else ""),
              flush=True)
        if code == 0:
            return {"kills": kills, "runs": runs, "seconds": time.monotonic() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("campaign", nargs="?", default="campaigns/quick.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-kills", type=int, default=6)
    ap.add_argument("--chaos-seconds", type=float, default=150.0, help="no kills after this long")
    ap.add_argument("--pause", type=float, nargs=2, default=(2.0, 8.0), help="random pause between kills (s)")
    ap.add_argument("--max-runs", type=int, default=30)
    ap.add_argument("--workdir", default=None, help="where the two stores go (default: a new temp dir)")
    args = ap.parse_args()

    from orchestrator.spec import load_campaign

    name = load_campaign(args.campaign).name
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lth-chaos-"))
    chaos_store, clean_store = work / "chaos", work / "clean"
    for s in (chaos_store, clean_store):
        if s.exists():
            raise SystemExit(f"{s}: exists; give a fresh --workdir")
    rng = random.Random(args.seed)
    print(f"chaos: campaign {args.campaign} ({name}), seed {args.seed}, <= {args.max_kills} kills "
          f"in {args.chaos_seconds:.0f}s, stores under {work}", flush=True)
    result = chaos_run(args.campaign, chaos_store, name, rng, args.max_kills, args.chaos_seconds,
                       tuple(args.pause), args.max_runs)
    t = time.monotonic()
    clean = subprocess.run(LTH + ["run", args.campaign, "--store", str(clean_store), "--no-report"],
                           capture_output=True, text=True)
    clean_seconds = time.monotonic() - t
    if clean.returncode != 0:
        print(clean.stdout[-2000:], clean.stderr[-2000:])
        raise SystemExit("clean run failed")

    from orchestrator.status import bad_files
    from orchestrator.store import Store

    leftovers = len(bad_files(Store(chaos_store)))
    cmp = compare(chaos_store, clean_store)
    ok = all(c["equal"] and c["duplicates"] == (0, 0) for c in cmp.values())
    k = result["kills"]
    print(f"kills: {sum(k.values())} ({k['unit_worker']} unit worker, {k['ray_worker']} random ray worker, "
          f"{k['driver']} driver); lth run invocations until complete: {result['runs']}")
    resumes = [r for m in (json.loads(f.read_text()) for f in (chaos_store / "_units" / f"campaign={name}").glob("*.json"))
               for r in m.get("resumes", [])]
    left = list((chaos_store / "_checkpoints").rglob("*.ckpt"))
    print(f"trainings continued from a checkpoint: {len(resumes)} (epochs {sorted(r['epoch'] for r in resumes)}); "
          f"checkpoints left: {len(left)}")
    ok = ok and not left
    print(f"wall: chaos {result['seconds']:.1f}s, clean {clean_seconds:.1f}s "
          f"(ratio {result['seconds'] / clean_seconds:.2f}); leftover temporary/bad table files: {leftovers}")
    for t_, c in cmp.items():
        print(f"  {t_:8s} rows chaos/clean {c['rows'][0]}/{c['rows'][1]}  duplicates {c['duplicates'][0]}/"
              f"{c['duplicates'][1]}  only-chaos {c['only_chaos']} only-clean {c['only_clean']}  "
              f"{'EQUAL' if c['equal'] else 'DIFFERENT'}")
    print("result: " + ("PASS - same rows, same values, no duplicates" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
