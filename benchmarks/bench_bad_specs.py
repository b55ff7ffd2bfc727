"""How long a refusal takes: every case of tests/bad_specs/ through the real ``lth validate``
command (a fresh process, as a user runs it), side by side with ``lth --help`` (the process's
fixed cost) and a valid campaign (``campaigns/tiny.yaml``), best of ``--repeat`` runs each.

    .venv/bin/python benchmarks/bench_bad_specs.py [--repeat 3]

The issue's bar is 2 s per refusal. Refusals that need a registry (unknown arch, options, layer
names, sizes) import torch (~1.7 s idle on this machine); the others stop before it. Besides wall
time, the child's CPU time (user + sys) is printed: on a shared, loaded machine it is the steadier
measure of what the command itself costs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.timing import best_of  # noqa: E402

LTH = str(REPO / ".venv" / "bin" / "lth")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(*args: str, repeat: int) -> tuple[float, float, int]:
    """(best wall s, best child CPU s, exit code) of ``lth ARGS`` in a fresh process."""
    codes, cpu = [], []

    def once() -> None:
        before = _cpu()
        codes.append(subprocess.run([LTH, *args], capture_output=True, cwd=REPO).returncode)
        cpu.append(_cpu() - before)

    return best_of(once, repeat), min(cpu), codes[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    fixed, fixed_cpu, _ = timed("--help", repeat=a.repeat)
    valid, valid_cpu, code = timed("validate", "campaigns/tiny.yaml", repeat=a.repeat)
    assert code == 0, "campaigns/tiny.yaml should validate"
    rows = []
    for case in sorted((REPO / "tests" / "bad_specs").glob("*.yaml")):
        seconds, cpu, code = timed("validate", str(case.relative_to(REPO)), repeat=a.repeat)
        rows.append((seconds, cpu, case.stem, code))
    print(f"lth --help: {fixed:.2f} s wall, {fixed_cpu:.2f} s CPU; "
          f"lth validate campaigns/tiny.yaml (valid): {valid:.2f} s wall, {valid_cpu:.2f} s CPU")
    print(f"{'case':40s} {'exit':>4s} {'wall s':>6s} {'CPU s':>6s} {'CPU x --help':>12s}")
    for seconds, cpu, name, code in sorted(rows, key=lambda r: -r[1]):
        print(f"{name:40s} {code:4d} {seconds:6.2f} {cpu:6.2f} {cpu / fixed_cpu:12.2f}")
    for i, what in ((0, "wall"), (1, "CPU")):
        times = [r[i] for r in rows]
        print(f"{len(rows)} cases, {what}: max {max(times):.2f} s, median {statistics.median(times):.2f} s, "
              f"{sum(t < 2 for t in times)} under 2 s")
    print(f"every exit code 1: {all(r[3] == 1 for r in rows)}")


if __name__ == "__main__":
    main()
