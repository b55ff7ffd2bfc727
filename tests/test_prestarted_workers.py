"""Trial actors start on the workers an embedded Ray prestarts, and a reused actor unpickles
the plan once (orchestrator.execution)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from orchestrator.execution import PickledPlan
from orchestrator.plan import make_plan
from orchestrator.spec import parse_campaign

SPEC = {
    "name": "warm", "data": {"dataset": "teacher_student", "options": {"n_train": 256, "n_test": 64}},
    "model": {"arch": "mlp", "options": {"widths": [8]}}, "train": {"batch_size": 64, "epochs": 1},
    "prune": {"rate": 0.5, "levels": 1}, "seeds": [0, 1], "resets": ["rewind"],
}


def test_pickled_plan_loads_once_per_digest():
    plan = make_plan(parse_campaign(yaml.safe_dump(SPEC)))
    a, b = PickledPlan(plan), PickledPlan(plan)
    assert a.digest == b.digest  # same plan, same bytes
    first = a.load()
    assert first is b.load() and first.units.keys() == plan.units.keys()  # unpickled once
    other = PickledPlan(make_plan(parse_campaign(yaml.safe_dump({**SPEC, "seeds": [0]}))))
    assert other.digest != a.digest and set(other.load().units) < set(plan.units)


SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from ray import tune
    from orchestrator.execution import connect
    connect(None, num_cpus=1)
    tuner_started = time.time()
    def started_at():  # this process's start, wall clock
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        return time.time() - (float(open("/proc/uptime").read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK"))
    def f(config):
        tune.report({"started": started_at(), "fork": os.environ.get("PL_DISABLE_FORK")})
    [r] = tune.Tuner(f, run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0)).fit()
    print(json.dumps({"tuner": tuner_started, **{k: r.metrics[k] for k in ("started", "fork")}}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc to read a process's start time")
def test_trial_actor_runs_on_a_prestarted_worker(tmp_path):
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("PL_DISABLE_FORK", None)  # set by connect() in the subprocess, not inherited from here
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the actor's process existed before the Tuner was built: Ray prestarted it during ray.init
    assert got["started"] < got["tuner"], got
    assert got["fork"] == "1"  # Tune's per-actor variable still reaches the trial, inherited instead
