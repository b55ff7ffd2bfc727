"""One compact live progress line for a campaign run (instead of Ray Tune's tables)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ray import tune

LOG_EVERY_S = 10.0  # not a terminal (logs, CI, pipes): at most one line this often

def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts finished units per stage; ``line()`` renders e.g.
    ``[all stages] dense 40/250 | trajectory 31/250 | branch 52/500 | failed 0 | 0m42s elapsed | ETA 3m10s``.

    Counts arrive per Tune trial (a bundle of units reports its running totals), so the
    line is the skipped units plus the latest totals of every trial."""

    def __init__(self, totals: dict[str, int], stream: TextIO | None = None):
        self.totals = dict(totals)
        self.skipped = dict.fromkeys(totals, 0)
        self.reused = dict.fromkeys(totals, 0)  # of the skipped: served from another campaign's run
        self.trials: dict[str, dict[str, int]] = {}  # trial id -> latest {stage: done, "failed": n}
        self.label = next(iter(totals), "")
        self.started = time.monotonic()
        self._stream = stream
        self._live = self.stream.isatty()
        self._logged: tuple[float, tuple] | None = None  # (time, (done counts, failed)) last logged

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr  # looked up late: click's test runner swaps sys.stderr

    def __getstate__(self) -> dict:
        # Tune pickles callbacks with its experiment state; a stream is not picklable.
        return {k: v for k, v in self.__dict__.items() if k != "_stream"} | {"_stream": None}

    def begin(self, skipped: dict[str, int], reused: dict[str, int] | None = None) -> None:
        """Start counting; ``skipped`` units (finished before this run) and ``reused`` ones
        (served from another campaign's run, shown apart) count as done."""
        self.skipped.update(skipped)
        for stage, n in (reused or {}).items():
            self.reused[stage] = n
            self.skipped[stage] += n
        self.started = time.monotonic()
        self.show()

    def update(self, trial: str, counts: dict[str, int]) -> None:
        """Latest running totals reported by one trial (replaces its earlier ones)."""
        self.trials[trial] = {k: int(v) for k, v in counts.items() if k in self.totals or k == "failed"}
        self.show()

    @property
    def done(self) -> dict[str, int]:
        return {s: self.skipped[s] + sum(t.get(s, 0) for t in self.trials.values()) for s in self.totals}

    @property
    def failed(self) -> int:
        return sum(t.get("failed", 0) for t in self.trials.values())

    def line(self) -> str:
        now = time.monotonic()
        done = self.done
        parts = [f"[{self.label}]"] + [f"{s} {done[s]}/{self.totals[s]}" for s in self.totals]
        parts += [f"failed {self.failed}"]
        if sum(self.reused.values()):
            parts.append(f"reused {sum(self.reused.values())}")
        parts.append(f"{_fmt(now - self.started)} elapsed")
        ran = sum(done.values()) - sum(self.skipped.values())
        left = sum(self.totals.values()) - sum(done.values())
        if ran and left:
            parts.append(f"ETA {_fmt((now - self.started) / ran * left)}")
        return " | ".join(parts)

    def show(self, force: bool = False) -> None:
        # On a terminal: rewrite one line in place. In logs / CI: a line when something
        # changed and LOG_EVERY_S passed, or a new failure appeared, or at the end.
        if self._live:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
            return
        now, state = time.monotonic(), (tuple(self.done.values()), self.failed)
        if self._logged is not None and not force:
            at, last = self._logged
            if state == last or (now - at < LOG_EVERY_S and state[1] == last[1]):
                return
        self._logged = (now, state)
        self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._live:
            self.stream.write("\n")
            self.stream.flush()
        elif self._logged is None or self._logged[1] != (tuple(self.done.values()), self.failed):
            self.show(force=True)


class ProgressCallback(tune.Callback):
    """Tune callback feeding :class:`Progress` (runs in the driver process) from the small
    count reports of the bundle trainable."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.progress.update(trial.trial_id, result)
