"""policy_node's request loop without ROS: when a chunk is asked for, what it keeps of the running chunk
(delay compensation), when its steps are due, how the delay is measured and which id it gets. policy_node,
`asyncvla evaluate --closed-loop` and make-dataset's recovery policy all run this one loop, so what the
offline tools measure is what the node does. Inputs (which frame, the joints of its moment) are the caller's:
control/observation.py pairs them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from asyncvla_ros.control.chunk import Chunk
from asyncvla_ros.control.delay import DelayEstimator, refill_steps, request_timing
from asyncvla_ros.model.interface import ChunkPrediction, ChunkRequest, Sampling


@dataclass(frozen=True)
class ExecutorProgress:
    """What the executor reports (ExecutorState): the chunk it runs, its step due last, the waypoints left, and
    whether it is executing (not holding or disabled)."""

    chunk_id: int
    step: int
    steps_remaining: int
    executing: bool


@dataclass(frozen=True)
class RequestSettings:
    """policy_node's parameters that shape a request (nodes/params.py declares and documents them)."""

    refill_threshold: int
    rate_hz: float
    delay_compensation: bool
    max_chunk_age_s: float
    sampling: Sampling

    @classmethod
    def from_params(cls, params: dict) -> RequestSettings:
        return cls(
            params['refill_threshold'],
            params['rate_hz'],
            params['delay_compensation'],
            params['max_chunk_age_s'],
            Sampling.from_params(params),
        )


@dataclass(frozen=True)
class PendingRequest:
    request: ChunkRequest
    chunk_id: int
    start_time: float  # when the new chunk's step 0 is due
    observed: float  # when its images were taken
    requested_at: float
    executor_step: int | None  # the running chunk's step due last at the request (delay compensation), else None


class RequestLoop:
    def __init__(self, joint_names, dt: float, chunk_size: int, initial_delay_steps: float = 1.0):
        self.joint_names, self.dt, self.chunk_size = list(joint_names), dt, chunk_size
        self.delay = DelayEstimator(initial_steps=initial_delay_steps)
        self.last_chunk: Chunk | None = None
        self.last_request_at = -math.inf

    def due(self, now: float, settings: RequestSettings, executor: ExecutorProgress | None) -> bool:
        """A request is due at `rate_hz`, or (rate_hz 0) when the executor is about to run out of our latest
        chunk: `refill_threshold` steps left, or the measured delay plus one when that is more. A clock that went
        back (a looped bag on sim time) starts the loop over: what it kept is dated in the new clock's future."""
        if now < self.last_request_at:
            self.last_request_at, self.last_chunk = -math.inf, None
        if settings.rate_hz > 0:
            return now - self.last_request_at >= 1.0 / settings.rate_hz
        chunk = self.last_chunk
        if chunk is None:
            return True
        refill = refill_steps(settings.refill_threshold, self.delay.delay)
        if executor is not None and executor.chunk_id == chunk.chunk_id:
            return executor.steps_remaining <= refill
        # the executor is not running our latest chunk (rejected, or no executor state): refill by time
        return now >= chunk.start_time + chunk.dt * (chunk.num_steps - refill)

    def request(
        self,
        now: float,
        settings: RequestSettings,
        observed: float,
        images: list,
        joints: np.ndarray,
        instruction: str,
        executor: ExecutorProgress | None,
    ) -> PendingRequest:
        """The request for images taken at `observed` with the joints of that moment."""
        chunk = self.last_chunk
        executor_step = None
        if (
            settings.delay_compensation
            and chunk is not None
            and executor is not None
            and executor.chunk_id == chunk.chunk_id
            and executor.executing
        ):
            executor_step = executor.step
        start_time, committed = request_timing(
            observed, self.dt, self.delay.delay, self.chunk_size, chunk, executor_step
        )
        request = ChunkRequest(images, joints, instruction, committed=committed, sampling=settings.sampling)
        self.last_request_at = now
        chunk_id = max(chunk.chunk_id if chunk else 0, executor.chunk_id if executor else 0) + 1
        return PendingRequest(request, chunk_id, start_time, observed, now, executor_step)

    def stale(self, pending: PendingRequest, now: float, settings: RequestSettings) -> str:
        """Why the answer to `pending` is not to be published ('' when it is): its observation is older than
        `max_chunk_age_s` now that inference has ended (a stalled inference process)."""
        age = now - pending.observed
        if age <= settings.max_chunk_age_s:
            return ''
        return (
            f'chunk {pending.chunk_id} dropped: its observation is {age:.2f} s old after inference '
            f'(max_chunk_age_s {settings.max_chunk_age_s:g}); was the inference process stalled?'
        )

    def complete(
        self, pending: PendingRequest, prediction: ChunkPrediction, now: float, executor: ExecutorProgress | None
    ) -> Chunk:
        """The chunk to publish, and the delay it took: the executor's steps consumed meanwhile when it still
        runs the chunk it ran at the request, else the time passed (on the arm's clock) in steps."""
        if (
            pending.executor_step is not None
            and executor is not None
            and self.last_chunk is not None
            and executor.chunk_id == self.last_chunk.chunk_id
        ):
            self.delay.observe(executor.step - pending.executor_step)
        else:
            self.delay.observe_seconds(now - pending.requested_at, self.dt)
        committed = 0 if pending.request.committed is None else len(pending.request.committed)
        self.last_chunk = Chunk(
            pending.chunk_id,
            pending.start_time,
            self.dt,
            self.joint_names,
            prediction.positions,
            committed,
            prediction.confidence,
            prediction.refined,
        )
        return self.last_chunk
