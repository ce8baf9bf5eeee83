"""A loop paced by absolute deadlines: no drift, and a late iteration does not shift the ones after it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable


def run_paced(
    step: Callable[[], None], period: Callable[[], float], stop: Callable[[], bool], max_lag_periods: float = 1.0
) -> None:
    """Calls `step` every `period()` seconds (0: back to back) until `stop()`. After an overrun of
    more than `max_lag_periods` periods the schedule restarts from now instead of bursting."""
    deadline = time.monotonic()
    while not stop():
        step()
        current = period()
        if current <= 0:
            continue
        deadline += current
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -max_lag_periods * current:
            deadline = time.monotonic()


class ClockTicks:
    """The control periods a polled clock has moved through since the last tick, on a fixed grid. For a loop
    paced by the wall clock that runs on another clock (sim time from /clock, at any pace): each tick is one
    period of that clock, as the safety filter assumes, however many wall periods it took. On the loop's own
    clock, `lead` (a fraction of a period) lets a poll that wakes a little early take the tick it woke for,
    so a jittery loop still gets one grid tick a wake. A clock that went back or jumped more than `max_ticks`
    periods restarts the grid with one tick at its time."""

    def __init__(self, max_ticks: int = 10, lead: float = 0.0):
        self.max_ticks = max_ticks
        self.lead = lead
        self.last: float | None = None

    def due(self, now: float, period: float) -> list[float]:
        if self.last is None or now < self.last - period or now - self.last > self.max_ticks * period:
            self.last = now
            return [now]
        ticks = [self.last + k * period for k in range(1, int((now - self.last) / period + self.lead + 1e-6) + 1)]
        if ticks:
            self.last = ticks[-1]
        return ticks


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Polls `predicate` every `period` seconds until it holds (True) or `timeout` passes (its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


class RepeatedReasons:
    """Which warnings to report: a new one at once, one that repeats (its figures aside: an input's age grows at
    every message) again only after `every_s`. Inputs arrive at 10-500 Hz; a log that scrolls at that rate hides
    the first line that mattered."""

    def __init__(self, every_s: float = 5.0):
        self.every_s = every_s
        self.reported: dict[str, float] = {}  # the reason with its figures masked -> when it was last reported

    def due(self, reason: str, now: float) -> bool:
        kind = re.sub(r'\d+(\.\d+)?', '#', reason)
        last = self.reported.get(kind)
        if last is not None and 0.0 <= now - last < self.every_s:
            return False
        self.reported[kind] = now
        return True

    def clear(self) -> None:
        """What was wrong is over: any reason is reported at once again."""
        self.reported.clear()
