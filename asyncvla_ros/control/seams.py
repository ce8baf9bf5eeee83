"""How the executor's command stream behaves where chunks meet, per episode: the jump a new chunk asks for
against the running plan (before the safety filter), how long each chunk drives the arm before the next replaces
it, command jerk at seams and inside chunks, holds after the first chunk, and the time to success. The
closed-loop evaluation reports them; one figure each, so modes and delays can be compared on the same scenes."""

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
    """Fed every control period's command and every accepted splice. A tick within `window_s` after a splice is at a
    seam."""

    def __init__(self, period: float, window_s: float):
        self.period, self.window_s = period, window_s
        self.commands: list[np.ndarray] = []
        self.at_seam: list[bool] = []
        self.jumps: list[float] = []
        self.splices: list[float] = []
        self.holds, self.held_s = 0, 0.0
        self.last_splice: float | None = None
        self._holding = False

    def on_splice(self, now: float, jump: float | None) -> None:
        self.last_splice = now
        self.splices.append(now)
        if jump is not None:
            self.jumps.append(jump)

    def on_tick(self, now: float, tick: Tick) -> None:
        if tick.command is not None:
            self.on_command(now, tick.command, tick.reason in NO_PLAN)

    def on_command(self, now: float, command: np.ndarray, no_plan: bool) -> None:
        """One control period's command; `no_plan`: the executor holds because it has no plan to follow."""
        self.commands.append(np.asarray(command, dtype=float))
        self.at_seam.append(self.last_splice is not None and now - self.last_splice < self.window_s)
        holding = self.last_splice is not None and no_plan
        if holding and not self._holding:
            self.holds += 1
        self.held_s += self.period if holding else 0.0
        self._holding = holding

    def summary(self, time_to_success: float | None) -> dict:
        """Jerk is the third difference of the commanded positions over period^3 (largest joint), rad/s^3."""
        result = {
            'holds': self.holds,
            'held_s': round(self.held_s, 3),
            'time_to_success_s': None if time_to_success is None else round(time_to_success, 2),
            'splice_jump_max_rad': round(max(self.jumps), 4) if self.jumps else None,
            'splice_jump_mean_rad': round(float(np.mean(self.jumps)), 4) if self.jumps else None,
            'splice_interval_s': round(float(np.median(np.diff(self.splices))), 3) if len(self.splices) > 1 else None,
        }
        jerk = np.zeros(0)
        if len(self.commands) >= 4:
            jerk = np.max(np.abs(np.diff(np.stack(self.commands), 3, axis=0)), axis=1) / self.period**3
        seam = np.asarray(self.at_seam[3:], bool)
        for name, part in (('seam', jerk[seam]), ('inside', jerk[~seam])):
            result[f'jerk_rms_{name}'] = round(float(np.sqrt(np.mean(part**2))), 1) if len(part) else None
            result[f'jerk_peak_{name}'] = round(float(np.max(part)), 1) if len(part) else None
        return result


def commanded_stream(
    trajectories: list[tuple[np.ndarray, np.ndarray]], period: float, start: float, end: float
) -> tuple[np.ndarray, np.ndarray]:
    """The per-period commands a trajectory controller was sent, from the multi-point trajectories executor_node
    sends in joint_trajectory mode (each carries the loop's own ticks; a later one replaces an earlier one from
    its first point on): (T,) times on the control grid in [start, end] and (T, J) positions; where a trajectory ends,
    the controller holds its last point."""
    by_tick: dict[int, np.ndarray] = {}
    for times, positions in trajectories:
        ticks = np.round(np.asarray(times) / period).astype(int)
        by_tick = {t: q for t, q in by_tick.items() if t < ticks[0]}  # replaced from its first point on
        by_tick.update(zip(ticks.tolist(), np.asarray(positions, float)))
    grid = [t for t in sorted(by_tick) if t * period <= end + 1e-9]
    if not grid:
        return np.zeros(0), np.zeros((0, 0))
    commands, times, last = [], [], None
    for tick in range(grid[0], int(np.floor(end / period + 1e-6)) + 1):
        last = by_tick.get(tick, last)
        if tick * period >= start - 1e-9:
            times.append(tick * period)
            commands.append(last)
    return np.array(times), np.array(commands).reshape(len(times), -1)


def trajectory_splice_jumps(
    trajectories: list[tuple[float, np.ndarray, np.ndarray]], chunks: list[tuple[float, Chunk]], joint_names
) -> list[tuple[float, float | None]]:
    """(received at, jump) for each chunk: splice_jump against the trajectory the controller ran when the chunk
    arrived (trajectories are (received at, times, positions), in order), at the chunk's first step due after."""
    received = np.array([r for r, _, _ in trajectories])
    jumps = []
    for arrival, chunk in chunks:
        running = int(np.searchsorted(received, arrival, side='right')) - 1
        due = chunk.step_times()
        ahead = np.flatnonzero(due > arrival)
        jump = None
        if running >= 0 and len(ahead):
            _, times, positions = trajectories[running]
            columns = [list(chunk.joint_names).index(j) for j in joint_names]
            plan = np.array([np.interp(due[ahead[0]], times, positions[:, j]) for j in range(positions.shape[1])])
            jump = float(np.max(np.abs(chunk.positions[ahead[0], columns] - plan)))
        jumps.append((arrival, jump))
    return jumps


def stream_seams(
    times: np.ndarray,
    commands: np.ndarray,
    holding: np.ndarray,
    splices: list[tuple[float, float | None]],
    period: float,
    window_s: float,
    time_to_success: float | None,
) -> dict:
    """SeamRecorder's figures for a recorded command stream: `times` (T,) when each command was due, `holding` (T,)
    the periods in which the executor held, `splices` (received at, jump) in order."""
    recorder = SeamRecorder(period, window_s)
    k = 0
    for now, command, held in zip(times, commands, holding):
        while k < len(splices) and splices[k][0] <= now:
            recorder.on_splice(*splices[k])
            k += 1
        recorder.on_command(now, command, bool(held))
    return recorder.summary(time_to_success)


def seam_summary(seams: list[dict]) -> dict:
    """Over a run's episodes (each one's control/seams.py figures): mean jerk RMS at seams and inside chunks, the
    largest splice jump, the median time between splices (how long a chunk drives the arm), the episodes with a
    hold and the median time to success."""

    def values(key):
        return [e[key] for e in seams if e.get(key) is not None]

    def mean(key):
        return round(float(np.mean(values(key))), 1) if values(key) else None

    return {
        'jerk_rms_seam': mean('jerk_rms_seam'),
        'jerk_rms_inside': mean('jerk_rms_inside'),
        'splice_jump_max_rad': max(values('splice_jump_max_rad'), default=None),
        'splice_interval_s': float(np.median(values('splice_interval_s'))) if values('splice_interval_s') else None,
        'episodes_with_holds': sum(1 for e in seams if e.get('holds')),
        'median_time_to_success_s': float(np.median(values('time_to_success_s')))
        if values('time_to_success_s')
        else None,
    }
