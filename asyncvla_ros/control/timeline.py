"""The executor's plan: waypoints from the chunks received so far, spliced chunk by chunk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asyncvla_ros.control.chunk import Chunk, ChunkRejected, validate_chunk
from asyncvla_ros.control.interpolation import Interpolant


@dataclass(frozen=True)
class Progress:
    chunk_id: int  # chunk being executed (0: none)
    step: int  # its step due last (index into the chunk)
    steps_remaining: int  # waypoints of the plan still ahead


class ChunkTimeline:
    """Waypoints (t_i, q_i) in the robot's joint order.

    A new chunk replaces the plan from its first non-committed step on, faded in from the running plan
    over `fade_per_lateness` times its lateness; its steps whose time has passed are dropped, and the
    interpolant restarts from the commanded state at `now`, so the seam is continuous. Waypoints due so soon
    that the arm could not reach them within `acceleration_max` are skipped (see `_reachable`). Malformed,
    stale or not-newer chunks raise ChunkRejected and change nothing.
    """

    def __init__(
        self,
        joint_names,
        interpolation: str,
        max_chunk_delay_s: float,
        fade_per_lateness: float = 0.0,
        acceleration_max: np.ndarray | None = None,
    ):
        self.joint_names = list(joint_names)
        self.interpolation = interpolation
        self.max_chunk_delay_s = max_chunk_delay_s
        self.fade_per_lateness = fade_per_lateness
        self.acceleration_max = acceleration_max
        self.chunk: Chunk | None = None
        self.interpolant: Interpolant | None = None
        self.received_at: float | None = None

    def offer(
        self,
        chunk: Chunk,
        now: float,
        position: np.ndarray,
        velocity: np.ndarray,
        acceleration: np.ndarray | None = None,
        state_time: float | None = None,
    ) -> None:
        """Splices `chunk` in at `now`, starting from the commanded state (position, velocity), which is the
        state at `state_time` (the last control tick; default `now`)."""
        positions = validate_chunk(chunk, self.joint_names)
        if self.chunk is not None and chunk.chunk_id <= self.chunk.chunk_id:
            raise ChunkRejected(f'chunk {chunk.chunk_id} is not newer than the running chunk {self.chunk.chunk_id}')
        times = chunk.step_times()
        if times[-1] < now - self.max_chunk_delay_s:
            raise ChunkRejected(f'chunk {chunk.chunk_id} is too old: its last step was due {now - times[-1]:.3f} s ago')
        start = now if state_time is None else state_time
        splice_time = times[chunk.num_committed]
        keep_old = np.zeros((0, len(self.joint_names)))
        keep_old_t = np.zeros(0)
        if self.interpolant is not None:
            old_t = self.interpolant.times
            between = (old_t > max(now, start)) & (old_t < splice_time)
            keep_old_t, keep_old = old_t[between], self.interpolant.positions[between]
        ahead = (times >= splice_time) & (times > max(now, start))
        ahead_t, ahead_q = times[ahead], positions[ahead]
        fade = self.fade_per_lateness * (now - times[0])
        if fade > 0 and self.interpolant is not None:
            ahead_q = self._fade_in(ahead_t, ahead_q, max(now, splice_time), fade)
        new_t, new_q = self._reachable(
            start,
            np.asarray(position, dtype=float),
            velocity,
            np.concatenate([keep_old_t, ahead_t]),
            np.concatenate([keep_old, ahead_q]),
        )
        self.interpolant = Interpolant(self.interpolation, new_t, new_q, velocity, acceleration)
        self.chunk = chunk
        self.received_at = now

    def _reachable(
        self, now: float, position: np.ndarray, velocity: np.ndarray | None, times: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The plan's knots from the commanded state on, without the leading waypoints whose change from the
        running plan could not be made within the acceleration limit by the time they are due (the last one
        is kept). Without a running plan the reference is the commanded state moving on at its velocity.

        A chunk that arrives just before its step 0 puts a knot a few ms after `now`; consecutive chunks differ
        by centimetres, so the spline through it swings at several rad/s, the safety filter clips the swing and
        the arm falls behind on every chunk. The next knot, a whole step later, is then the target. A knot on
        the running plan (a consistent chunk) asks for no change and is kept."""
        if self.acceleration_max is not None and len(times):
            gaps = (times - now)[:, None]
            if self.interpolant is not None:
                reference = self.interpolant.position(times)
            else:
                reference = position + (0.0 if velocity is None else np.asarray(velocity, dtype=float)) * gaps
            needed = 2.0 * np.abs(positions - reference) / gaps**2
            reachable = np.all(needed <= np.asarray(self.acceleration_max), axis=1)
            reachable[-1] = True
            first = int(np.argmax(reachable))
            times, positions = times[first:], positions[first:]
        return np.concatenate([[now], times]), np.concatenate([position[None], positions])

    def _fade_in(self, times: np.ndarray, positions: np.ndarray, seam: float, fade: float) -> np.ndarray:
        """Moves from what the running plan would command (its last waypoint held past its end) to the new
        chunk over `fade` seconds after the seam (smoothstep weights). A late chunk was computed from an old
        observation, and following it at once makes the delayed loop overshoot; fading it in damps the loop
        in proportion to the delay and leaves a prompt chunk nearly as it is."""
        w = np.clip((times - seam) / fade, 0.0, 1.0)[:, None]
        w = w * w * (3.0 - 2.0 * w)
        return w * positions + (1.0 - w) * self.interpolant.position(times)

    def covers(self, now: float) -> bool:
        """True while the plan still has a waypoint at or after `now`."""
        return self.interpolant is not None and now <= self.interpolant.end

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray] | None:
        if self.interpolant is None:
            return None
        return self.interpolant.position(now), self.interpolant.velocity(now)

    def progress(self, now: float) -> Progress:
        if self.chunk is None:
            return Progress(0, 0, 0)
        step = int(np.clip(np.floor((now - self.chunk.start_time) / self.chunk.dt + 1e-9), 0, self.chunk.num_steps - 1))
        remaining = int(np.count_nonzero(self.interpolant.times > now)) if self.interpolant is not None else 0
        return Progress(self.chunk.chunk_id, step, remaining)

    def forget_chunk_id(self) -> None:
        """Accept any id from now on (a new chunk source numbers from its own start); the plan stays."""
        self.chunk = None

    def clear(self) -> None:
        """Forget the plan (on disable); chunk ids keep increasing, so the last id is kept."""
        self.interpolant = None
