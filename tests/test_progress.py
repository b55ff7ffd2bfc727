"""The progress line in logs (not a terminal): throttled, but failures and the end always show."""

from __future__ import annotations

import io

from orchestrator import progress


def test_log_lines_are_throttled_but_failures_and_the_end_are_shown(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 1e9)  # no line for "time passed" in this test
    out = io.StringIO()
    p = progress.Progress({"dense": 2, "branch": 2}, out)
    p.begin({"dense": 1})  # one unit finished in an earlier run
    for counts in ({"dense": 1}, {"dense": 1, "branch": 1}):
        p.update("t1", counts)  # progress without failures: throttled
    p.update("t2", {"failed": 1})  # a failure shows at once
    p.update("t1", {"dense": 1, "branch": 2})
    p.close()  # the final state always shows
    lines = out.getvalue().splitlines()
    assert [ln.split(" | ")[1:4] for ln in lines] == [
        ["dense 1/2", "branch 0/2", "failed 0"],
        ["dense 2/2", "branch 1/2", "failed 1"],
        ["dense 2/2", "branch 2/2", "failed 1"],
    ]


def test_every_change_is_logged_when_the_interval_has_passed(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    out = io.StringIO()
    p = progress.Progress({"dense": 3}, out)
    p.begin({})
    for n in (1, 1, 2, 3):
        p.update("t", {"dense": n})
    p.close()
    assert [ln.split(" | ")[1] for ln in out.getvalue().splitlines()] == ["dense 0/3", "dense 1/3", "dense 2/3",
                                                                          "dense 3/3"]
