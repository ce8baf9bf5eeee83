"""Delay compensation (architecture.md §5): how many executed steps an inference request costs,
measured from the executor's progress, which steps of the running chunk are committed, and when a new
chunk's steps are due."""

from __future__ import annotations

import math

import numpy as np

from asyncvla_ros.control.chunk import Chunk


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


def refill_steps(refill_threshold: int, delay: int) -> int:
    """Steps left in the running chunk at which the next one is requested: `refill_threshold`, raised to the
    measured delay plus one, so that a slower inference starts its request sooner and its chunk arrives while a
    step of the running plan is still ahead, rather than leaving the arm without a plan (the executor holds)."""
    return max(refill_threshold, delay + 1)


def committed_steps(positions: np.ndarray, executing_step: int, delay: int, chunk_size: int) -> np.ndarray:
    """The steps of the running chunk (L, J) that will execute before a new chunk can arrive:
    positions[k : k + d], clamped to what the chunk still holds and to chunk_size - 1 (at least one
    step of the new chunk is generated)."""
    k = int(np.clip(executing_step, 0, len(positions)))
    d = int(np.clip(delay, 0, chunk_size - 1))
    return positions[k : k + d]


def request_timing(
    observed: float,
    dt: float,
    delay: int,
    chunk_size: int,
    running: Chunk | None = None,
    executor_step: int | None = None,
) -> tuple[float, np.ndarray | None]:
    """When a new chunk's step 0 is due, and the steps of the `running` chunk it keeps: (start, committed or None).

    In the demonstrations the target recorded at frame t is the one the servos are given over the whole period
    from frame t to t + 1 (the env holds it). The executor interpolates through the targets instead, so it meets
    that hold best by passing through step i at the middle of its period: without kept steps step 0 is due
    half a period after the observation (`observed`, when its images were taken; at `observed`, the arm would
    lead the demonstrations by half a period; a period later, lag them by half a period, which the expert's own
    plan already fails with: test_closed_loop). With delay compensation (`executor_step`, the running chunk's
    step due last now, is known) the model's step 0 is the step the arm was heading for when the images were
    taken, so the kept steps run from there: those executed since the observation (an old frame's age) and the
    `delay` steps the inference will take."""
    if running is not None and executor_step is not None:
        first = max(math.ceil((observed - running.start_time) / running.dt - 1e-9), 0)
        since_observed = max(executor_step + 1 - first, 0)
        committed = committed_steps(running.positions, first, since_observed + delay, chunk_size)
        if len(committed):
            return running.start_time + first * running.dt, committed
    return observed + 0.5 * dt, None
