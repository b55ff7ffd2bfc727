"""Is ``lth status`` / ``lth report`` interactive (< 2 s) on a store of 10,000 trials?

The store is the one ``lth run`` leaves after 10 finished campaigns of 1,024 trials
(``benchmarks/real_store.py``: the real writer, stage -> Committer -> compact, with each
campaign's ``_campaigns/`` registration, markers and driver record; cached in ``--workdir``).
Times, side by side, each command in-process (click's CliRunner, fresh Store, warm page
cache) and as a subprocess (what a user types; includes interpreter start and imports), and
the floor: ``lth status --help``, ``import orchestrator.cli`` and ``import analysis.report`` as
subprocesses. ``lth status`` is also timed without the plan indexes (stores registered before
``lth run`` wrote them); ``lth report`` with an empty figure cache (every figure drawn: the first
report of a campaign on a machine, usually the one ``lth run`` writes at its end), into a new
directory (figures copied from the cache) and again into the same one (figures kept); for ``lth report`` as a subprocess also when the verdict
table appears (printed before the figures are drawn).

    .venv/bin/python benchmarks/bench_cli_scale.py --workdir /tmp/lth-real [--campaigns 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from click.testing import CliRunner  # noqa: E402
from real_store import Params, build, campaign_name  # noqa: E402 - beside this script
from timing import best_of  # noqa: E402 - benchmarks/timing.py, beside this script

from orchestrator import paths  # noqa: E402
from orchestrator.cli import main  # noqa: E402

CAMPAIGN = campaign_name(0)  # the campaign `lth report` reports on
LIMIT = 2.0  # seconds: the "interactive"


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
    parser.add_argument("--workdir", required=True, help="stores cached here (benchmarks/real_store.py)")
    parser.add_argument("--campaigns", type=int, default=10, help="finished campaigns of 1,024 trials")
    parser.add_argument("--repeat", type=int, default=3, help="best of N per measurement")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    b = build(work, args.campaigns, Params())
    root = b.root
    print(f"store: {root} ({b.campaigns} campaigns, {b.trials:,} trials)")
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

    indexes = [root / paths.plan_index(campaign_name(i)) for i in range(args.campaigns)]

    def without_index(fn):
        for index in indexes:  # a store registered before the index: status parses plan.json
            index.rename(index.with_name("plan-index.json.bench-hidden"))
        try:
            fn()
        finally:
            for index in indexes:
                index.with_name("plan-index.json.bench-hidden").rename(index)

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
