"""How the executor's command stream behaves where chunks meet, per episode: the jump a new chunk asks for
against the running plan (before the safety filter), command jerk at seams and inside chunks, holds after the
first chunk, and the time to success. The closed-loop evaluation reports them; one figure each, so modes and
delays can be compared on the same scenes."""
from __future__ import annotations

import numpy as np

from asyncvla_ros.control.chunk import Chunk
from asyncvla_ros.control.executor import Tick
from asyncvla_ros.control.timeline import ChunkTimeline

NO_PLAN = ('plan exhausted', 'no chunk yet')


def splice_jump(timeline: ChunkTimeline, chunk: Chunk, now: float) -> float | None:
    """The largest joint difference (rad) between a new chunk's first step due after `now` and the running plan at
    that time; None with no plan running or no step ahead."""
    if timeline.interpolant is None:
        return None
    times = chunk.step_times()
    ahead = np.flatnonzero(times > now)
    if not len(ahead):
        return None
    first = int(ahead[0])
    order = [list(chunk.joint_names).index(j) for j in timeline.joint_names]
    return float(np.max(np.abs(chunk.positions[first, order] - timeline.interpolant.position(times[first]))))


class SeamRecorder:
    """Fed every tick's command and every accepted splice. A tick within `window_s` after a splice is at a seam."""

    def __init__(self, period: float, window_s: float):
        self.period, self.window_s = period, window_s
        self.commands: list[np.ndarray] = []
        self.at_seam: list[bool] = []
        self.jumps: list[float] = []
        self.holds, self.held_s = 0, 0.0
        self.last_splice: float | None = None
        self._holding = False

    def on_splice(self, now: float, jump: float | None) -> None:
        self.last_splice = now
        if jump is not None:
            self.jumps.append(jump)

    def on_tick(self, now: float, tick: Tick) -> None:
        if tick.command is None:
            return
        self.commands.append(np.asarray(tick.command, dtype=float))
        self.at_seam.append(self.last_splice is not None and now - self.last_splice < self.window_s)
        holding = self.last_splice is not None and tick.reason in NO_PLAN
        if holding and not self._holding:
            self.holds += 1
        self.held_s += self.period if holding else 0.0
        self._holding = holding

    def summary(self, time_to_success: float | None) -> dict:
        """Jerk is the third difference of the commanded positions over period^3 (largest joint), rad/s^3."""
        result = {'holds': self.holds, 'held_s': round(self.held_s, 3),
                  'time_to_success_s': None if time_to_success is None else round(time_to_success, 2),
                  'splice_jump_max_rad': round(max(self.jumps), 4) if self.jumps else None,
                  'splice_jump_mean_rad': round(float(np.mean(self.jumps)), 4) if self.jumps else None}
        jerk = np.zeros(0)
        if len(self.commands) >= 4:
            jerk = np.max(np.abs(np.diff(np.stack(self.commands), 3, axis=0)), axis=1) / self.period ** 3
        seam = np.asarray(self.at_seam[3:], bool)
        for name, part in (('seam', jerk[seam]), ('inside', jerk[~seam])):
            result[f'jerk_rms_{name}'] = round(float(np.sqrt(np.mean(part ** 2))), 1) if len(part) else None
            result[f'jerk_peak_{name}'] = round(float(np.max(part)), 1) if len(part) else None
        return result
