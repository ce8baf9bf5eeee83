"""How a ros2_control joint_trajectory_controller follows a JointTrajectory, without ROS: points are
interpolated by their absolute times, a new trajectory replaces the running one from the desired state
(position and velocity) the running one has then, as with `interpolate_from_desired_state`, and the last
point is held."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicHermiteSpline


class TrajectoryFollower:
    def __init__(self):
        self._spline = None
        self._times = None
        self._hold = None

    def replace(
        self,
        now: float,
        current: np.ndarray,
        times: np.ndarray,
        positions: np.ndarray,
        velocities: np.ndarray | None = None,
    ) -> None:
        """`times` are absolute (header stamp + time_from_start); points already in the past are dropped.
        Segments are cubic Hermite, with the given velocities or ones estimated from neighbouring points; the
        first starts from the running trajectory's desired state at `now` (`current`, at rest, when none runs)."""
        times, positions = np.asarray(times, float), np.asarray(positions, float)
        future = times > now
        if not np.any(future):  # all in the past: go to (hold) the last point
            self._spline, self._hold = None, positions[-1].copy()
            return
        start, start_velocity = self.desired(now)
        if start is None:
            start, start_velocity = np.asarray(current, float), np.zeros(positions.shape[1])
        t = np.concatenate([[now], times[future]])
        q = np.concatenate([start[None], positions[future]])
        if velocities is None or len(velocities) != len(times):
            v = np.gradient(q, t, axis=0) if len(t) > 2 else np.tile((q[-1] - q[0]) / (t[-1] - t[0]), (len(t), 1))
            v[-1] = 0.0
            ahead = v[1:]
        else:
            ahead = np.asarray(velocities, float)[future]
        v = np.concatenate([start_velocity[None], ahead])
        self._spline, self._times, self._hold = CubicHermiteSpline(t, q, v), t, q[-1].copy()

    def target(self, now: float) -> np.ndarray | None:
        """The position target at `now`, or None when no trajectory has arrived (every physics step: no velocity)."""
        if self._spline is None or now >= self._times[-1]:
            return None if self._hold is None else self._hold.copy()
        return self._spline(max(now, self._times[0]))

    def desired(self, now: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The desired position and velocity at `now` (None, None when no trajectory has arrived)."""
        if self._hold is None:
            return None, None
        if self._spline is None or now >= self._times[-1]:
            return self._hold.copy(), np.zeros_like(self._hold)
        t = max(now, self._times[0])
        return self._spline(t), self._spline.derivative()(t)
