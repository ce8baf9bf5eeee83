"""Delay compensation (architecture.md §5): how many executed steps an inference request costs,
measured from the executor's progress, and which steps of the running chunk are committed."""
from __future__ import annotations

import math

import numpy as np


class DelayEstimator:
    """Steps consumed while a request ran, measured from ExecutorState (the step index the executor
    reported at the start and at the end of the request), smoothed; the estimate rounds up."""

    def __init__(self, initial_steps: float = 1.0, smoothing: float = 0.5):
        self.steps = float(initial_steps)
        self.smoothing = smoothing

    def observe(self, steps_consumed: float) -> None:
        if steps_consumed >= 0 and math.isfinite(steps_consumed):
            self.steps = (1 - self.smoothing) * self.steps + self.smoothing * steps_consumed

    def observe_seconds(self, seconds: float, dt: float) -> None:
        """When the executor's progress is not known (no ExecutorState): wall time in steps."""
        self.observe(seconds / dt)

    @property
    def delay(self) -> int:
        return int(math.ceil(self.steps - 1e-9))


def committed_steps(positions: np.ndarray, executing_step: int, delay: int, chunk_size: int) -> np.ndarray:
    """The steps of the running chunk (L, J) that will execute before a new chunk can arrive:
    positions[k : k + d], clamped to what the chunk still holds and to chunk_size - 1 (at least one
    step of the new chunk is generated)."""
    k = int(np.clip(executing_step, 0, len(positions)))
    d = int(np.clip(delay, 0, chunk_size - 1))
    return positions[k:k + d]
