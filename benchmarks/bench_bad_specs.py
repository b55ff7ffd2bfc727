"""How long a refusal takes: every case of tests/bad_specs/ through the real ``lth validate``
command (a fresh process, as a user runs it), side by side with ``lth --help`` (the process's
fixed cost) and a valid campaign (``campaigns/tiny.yaml``), best of ``--repeat`` runs each.

    .venv/bin/python benchmarks/bench_bad_specs.py [--repeat 3]

The issue's bar is 2 s per refusal. Refusals that need a registry (unknown arch, options, layer
names, sizes) import torch (~1.7 s idle on this machine); the others stop before it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.timing import best_of  # noqa: E402

LTH = str(REPO / ".venv" / "bin" / "lth")


def timed(*args: str, repeat: int) -> tuple[float, int]:
    codes = []

    def once() -> None:
        codes.append(subprocess.run([LTH, *args], capture_output=True, cwd=REPO).returncode)

    return best_of(once, repeat), codes[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    fixed, _ = timed("--help", repeat=a.repeat)
    valid, code = timed("validate", "campaigns/tiny.yaml", repeat=a.repeat)
    assert code == 0, "campaigns/tiny.yaml should validate"
    rows = []
    for case in sorted((REPO / "tests" / "bad_specs").glob("*.yaml")):
        seconds, code = timed("validate", str(case.relative_to(REPO)), repeat=a.repeat)
        rows.append((seconds, case.stem, code))
    print(f"lth --help: {fixed:.2f} s; lth validate campaigns/tiny.yaml (valid): {valid:.2f} s")
    print(f"{'case':40s} {'exit':>4s} {'s':>6s} {'x --help':>8s}")
    for seconds, name, code in sorted(rows, reverse=True):
        print(f"{name:40s} {code:4d} {seconds:6.2f} {seconds / fixed:8.2f}")
    times = [r[0] for r in rows]
    print(f"{len(rows)} cases: max {max(times):.2f} s, median {statistics.median(times):.2f} s, "
          f"{sum(t < 2 for t in times)} under 2 s; every exit code 1: {all(r[2] == 1 for r in rows)}")


if __name__ == "__main__":
    main()
