"""One compact live progress line for a campaign run (instead of Ray Tune's tables)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ray import tune


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts units per stage; ``line()`` renders e.g.
    ``[trajectory] units 3/16 | dense 4/4 | failed 0 | 0m42s elapsed | ETA 1m10s``."""

    def __init__(self, totals: dict[str, int], stream: TextIO | None = None):
        self.totals = dict(totals)
        self.done = dict.fromkeys(totals, 0)
        self.failed = 0
        self.stage = next(iter(totals), "")
        self.started = time.monotonic()
        self._stage_started = self.started
        self._stream = stream
        self._live = self.stream.isatty()

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr  # looked up late: click's test runner swaps sys.stderr

    def __getstate__(self) -> dict:
        # Tune pickles callbacks with its experiment state; a stream is not picklable.
        return {k: v for k, v in self.__dict__.items() if k != "_stream"} | {"_stream": None}

    def begin_stage(self, stage: str, already_done: int) -> None:
        self.stage = stage
        self.done[stage] = already_done
        self._stage_started = time.monotonic()
        self._stage_base = already_done
        self.show()

    def unit_finished(self, failed: bool = False) -> None:
        self.done[self.stage] += 1
        self.failed += int(failed)
        self.show()

    def line(self) -> str:
        now = time.monotonic()
        parts = [f"[{self.stage}]"] + [f"{s} {self.done[s]}/{self.totals[s]}" for s in self.totals]
        parts += [f"failed {self.failed}", f"{_fmt(now - self.started)} elapsed"]
        ran = self.done[self.stage] - getattr(self, "_stage_base", 0)
        left = self.totals[self.stage] - self.done[self.stage]
        if ran and left:
            parts.append(f"ETA stage {_fmt((now - self._stage_started) / ran * left)}")
        return " | ".join(parts)

    def show(self) -> None:
        # On a terminal: rewrite one line in place. In logs / CI: one line per event.
        if self._live:
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._live:
            self.stream.write("\n")
            self.stream.flush()


class ProgressCallback(tune.Callback):
    """Tune callback feeding :class:`Progress` (runs in the driver process)."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.progress.unit_finished()

    def on_trial_error(self, iteration, trials, trial, **info):
        # Called once the trial gives up (after FailureConfig retries).
        self.progress.unit_finished(failed=True)
