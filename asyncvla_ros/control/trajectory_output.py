"""joint_trajectory mode without ROS: the multi-point trajectories that make a trajectory controller command
what the executor's control loop commands, tick for tick.

A joint_trajectory_controller follows the last trajectory it received by absolute time and holds its last
point. So after each tick whose command differs from what the trajectory sent last asks for at that tick (a
new chunk, a hold, a disable, an enable, a changed limit), a new trajectory goes out: the previous tick's
command (which the replaced trajectory asks for too, so the controller takes over with no jump in position
or velocity), this tick's, and the rollout of the ticks ahead. Its points are the loop's own commands, so the
limits the safety filter keeps hold across trajectories as they do within one.

The loop computes each command a lead (executor_node's `trajectory_lead_s`, in whole control periods) before
it is due, so that a new trajectory's first point is still ahead when the controller receives it (after the
rollout and the transport), and the controller switches at that point instead of mid-segment, where the two
trajectories have drifted apart. Every chunk takes effect that much later. The lead is fixed while the loop
runs: changing it would step the loop's clock, and the trajectory sent across the step with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from asyncvla_ros.control.executor import ExecutorCore, Tick

HORIZON_S = 5.0
GRID_TOLERANCE_S = 1e-6
POSITION_TOLERANCE = 1e-5  # rad: tick times at ROS epoch seconds carry float rounding of about 2e-7 s


@dataclass(frozen=True)
class Trajectory:
    times: np.ndarray  # (T,) absolute seconds, increasing
    positions: np.ndarray  # (T, J)
    velocities: np.ndarray  # (T, J)

    def asks_for(self, t: float, command: np.ndarray, tolerance: float) -> bool:
        """True when the trajectory's point at `t` (its last point after its end) is `command`; False for a
        `t` before its start or between its points."""
        if t > self.times[-1] + GRID_TOLERANCE_S:
            return bool(np.allclose(self.positions[-1], command, rtol=0.0, atol=tolerance))
        index = int(np.searchsorted(self.times, t - GRID_TOLERANCE_S))
        if index >= len(self.times) or abs(self.times[index] - t) > GRID_TOLERANCE_S:
            return False
        return bool(np.allclose(self.positions[index], command, rtol=0.0, atol=tolerance))


class TrajectoryOutput:
    def __init__(self, lead_s: float, tolerance: float = POSITION_TOLERANCE):
        self.lead_s, self.tolerance = lead_s, tolerance
        self.sent: Trajectory | None = None
        self._previous: tuple[float, np.ndarray, np.ndarray] | None = None

    def lead(self, period: float) -> float:
        """How far ahead of its clock the loop computes its commands: lead_s in whole periods, at least two (the
        first point of a new trajectory is the previous tick's)."""
        return max(math.ceil(self.lead_s / period - 1e-9), 2) * period

    def after_tick(self, core: ExecutorCore, tick: Tick) -> Trajectory | None:
        """The trajectory to send after `core` ticked `tick` (at core.last_tick_at), or None when the one
        sent last still asks for exactly what the loop commands."""
        if tick.command is None:  # disabled: the controller holds the last point, where braking left the arm
            self._previous = None
            return None
        point = (core.last_tick_at, tick.command, tick.velocity)
        previous, self._previous = self._previous, point
        if self.sent is not None and self.sent.asks_for(point[0], point[1], self.tolerance):
            return None
        head = [point] if previous is None else [previous, point]
        times, positions, velocities = core.rollout(HORIZON_S)
        self.sent = Trajectory(
            np.concatenate([[p[0] for p in head], times]),
            np.concatenate([[p[1] for p in head], positions]),
            np.concatenate([[p[2] for p in head], velocities]),
        )
        return self.sent
