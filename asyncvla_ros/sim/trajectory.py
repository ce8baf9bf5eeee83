"""How a ros2_control joint_trajectory_controller follows a JointTrajectory, without ROS: points are
interpolated by their absolute times, a new trajectory replaces the running one from the current
target, and the last point is held."""
from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicHermiteSpline


class TrajectoryFollower:
    def __init__(self):
        self._spline = None
        self._times = None
        self._hold = None

    def replace(self, now: float, current: np.ndarray, times: np.ndarray, positions: np.ndarray,
                velocities: np.ndarray | None = None) -> None:
        """`times` are absolute (header stamp + time_from_start); points already in the past are dropped.
        Segments are cubic Hermite, with the given velocities or ones estimated from neighbouring points."""
        times, positions = np.asarray(times, float), np.asarray(positions, float)
        future = times > now
        if not np.any(future):  # all in the past: go to (hold) the last point
            self._spline, self._hold = None, positions[-1].copy()
            return
        t = np.concatenate([[now], times[future]])
        q = np.concatenate([np.asarray(current, float)[None], positions[future]])
        if velocities is None or len(velocities) != len(times):
            v = np.gradient(q, t, axis=0) if len(t) > 2 else np.tile((q[-1] - q[0]) / (t[-1] - t[0]), (len(t), 1))
            v[-1] = 0.0
        else:
            v = np.concatenate([np.zeros((1, q.shape[1])), np.asarray(velocities, float)[future]])
        self._spline, self._times, self._hold = CubicHermiteSpline(t, q, v), t, q[-1].copy()

    def target(self, now: float) -> np.ndarray | None:
        """The position target at `now`, or None when no trajectory has arrived."""
        if self._spline is None:
            return self._hold
        if now >= self._times[-1]:
            return self._hold
        return self._spline(max(now, self._times[0]))
