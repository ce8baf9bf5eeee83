"""A loop paced by absolute deadlines: no drift, and a late iteration does not shift the ones after it."""
from __future__ import annotations

import time
from typing import Callable


def run_paced(step: Callable[[], None], period: Callable[[], float], stop: Callable[[], bool],
              max_lag_periods: float = 1.0) -> None:
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
