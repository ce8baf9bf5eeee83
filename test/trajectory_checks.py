"""What a joint_trajectory_controller does with a stream of JointTrajectory messages, and the checks that
what it is asked for stays inside a profile's limits across trajectories as well as within each one.

The controller (sim/trajectory.py's follower) takes a trajectory on receipt and follows its points by
absolute time. A seam is judged where the new trajectory takes over: at its first point when that is still
ahead on receipt, else at receipt. When it arrived before its first point, the new trajectory's desired position
may differ from the replaced one's there by at most one period of motion at the velocity limit, and its desired
velocity by at most one period of the acceleration limit. One that arrives later is taken over mid-segment,
after the two have parted (by up to a·δ² after δ): its position jump is still judged (within ~30 ms of lateness
it stays inside the bound), its velocity jump is only reported; the executor's lead is what keeps them rare.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicHermiteSpline

from asyncvla_ros.sim.trajectory import TrajectoryFollower

RELATIVE = 1e-5  # times travel as whole nanoseconds
ABSOLUTE = 1e-9


def desired(times, positions, velocities, t):
    """A trajectory's desired position and velocity at `t` (cubic Hermite through its points; held outside)."""
    if len(times) == 1 or t >= times[-1]:
        return positions[-1 if t >= times[-1] else 0], np.zeros(positions.shape[1])
    spline = CubicHermiteSpline(times, positions, velocities)
    t = max(t, times[0])
    return spline(t), spline.derivative()(t)


class FollowerRecord:
    def __init__(self, profile, period: float):
        self.profile, self.period = profile, period
        self.follower = TrajectoryFollower()
        self.seams: list[tuple[float, np.ndarray, np.ndarray, float]] = []  # (takeover time, |dq|, |dv|, lateness)
        self.trajectories = 0
        self.point_violations: list[str] = []

    def receive(self, received_at: float, times, positions, velocities) -> None:
        times, positions, velocities = (np.asarray(a, float) for a in (times, positions, velocities))
        self.trajectories += 1
        self._check_points(times, positions, velocities)
        takeover = max(received_at, times[0])
        old_q, old_v = self.follower.desired(takeover)
        if old_q is not None:
            new_q, new_v = desired(times, positions, velocities, takeover)
            self.seams.append((takeover, np.abs(new_q - old_q), np.abs(new_v - old_v), received_at - times[0]))
        self.follower.replace(received_at, positions[0], times, positions, velocities)

    def _check_points(self, times, positions, velocities) -> None:
        p = self.profile
        if np.any(positions < p.position_min - ABSOLUTE) or np.any(positions > p.position_max + ABSOLUTE):
            self.point_violations.append(f'a point outside the position limits: {positions.min(0)} {positions.max(0)}')
        if np.any(np.abs(velocities) > p.velocity_max * (1 + RELATIVE) + ABSOLUTE):
            self.point_violations.append(f'a point velocity beyond the limit: {np.abs(velocities).max(0)}')
        speed = np.abs(np.diff(positions, axis=0)) / np.diff(times)[:, None]
        if len(speed) and np.any(speed > p.velocity_max * (1 + RELATIVE) + ABSOLUTE):
            self.point_violations.append(f'points further apart than the velocity limit allows: {speed.max(0)}')
        gaps = np.diff(times)
        even = np.abs(gaps[1:] - gaps[:-1]) < 1e-8  # acceleration from point triples one period apart
        if np.any(even):
            change = np.abs(np.diff(positions, 2, axis=0))[even] / (gaps[1:][even] ** 2)[:, None]
            if np.any(change > p.acceleration_max * (1 + RELATIVE) + ABSOLUTE / self.period**2):
                self.point_violations.append(
                    f'points whose change of velocity is beyond the acceleration limit: {change.max(0)}'
                )

    @property
    def late_seams(self) -> int:
        return sum(s[3] > 0 for s in self.seams)

    def summary(self) -> str:
        """The largest position and velocity jump over the seams received in time and over the late ones, as
        fractions of one period's bound."""

        def largest(seams):
            dq = max((float(np.max(s[1] / (self.profile.velocity_max * self.period))) for s in seams), default=0.0)
            dv = max((float(np.max(s[2] / (self.profile.acceleration_max * self.period))) for s in seams), default=0.0)
            return f'{dq:.3f} in position, {dv:.3f} in velocity'

        on_time = [s for s in self.seams if s[3] <= 0]
        late = [s for s in self.seams if s[3] > 0]
        worst_late = max((s[3] for s in late), default=0.0) * 1e3
        return (
            f'{self.trajectories} trajectories, {len(self.seams)} seams: {len(on_time)} received in time, largest '
            f'jump {largest(on_time)} (1 = one period at the limit); {len(late)} late (up to {worst_late:.0f} ms '
            f'after the first point), largest {largest(late)}'
        )

    def assert_within_limits(self) -> None:
        assert not self.point_violations, self.point_violations[:3]
        p, period = self.profile, self.period
        for takeover, dq, dv, late in self.seams:
            assert np.all(dq <= p.velocity_max * period * (1 + RELATIVE) + ABSOLUTE), (
                f'seam at {takeover:.3f} ({late * 1e3:.1f} ms late): position jump {dq} beyond one period at '
                f'the velocity limit'
            )
            assert late > 0 or np.all(dv <= p.acceleration_max * period * (1 + RELATIVE) + ABSOLUTE), (
                f'seam at {takeover:.3f}: velocity jump {dv} beyond one period at the acceleration limit'
            )
