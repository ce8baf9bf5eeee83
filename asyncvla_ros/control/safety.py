"""The last line before the arm: every command inside position, velocity and acceleration limits.

Velocity is the change of the commanded position per period and acceleration the change of that
velocity; both are checked against the previous command. Near a position limit the velocity is also
bounded so that the joint can still stop at the limit while decelerating within the acceleration
limit (a discrete braking bound), so a command never has to leave one limit to honour another.
"""

from __future__ import annotations

import numpy as np


def braking_velocity(distance: np.ndarray, acceleration: np.ndarray, period: float) -> np.ndarray:
    """Largest velocity v >= 0 such that moving one period at v and then decelerating by
    acceleration*period per period covers at most `distance` (0 where distance <= 0)."""
    unit = acceleration * period * period
    d = np.maximum(distance, 0.0) / unit
    k = np.floor((np.sqrt(1.0 + 8.0 * d) - 1.0) / 2.0)
    m = (d + k * (k + 1.0) / 2.0) / (k + 1.0)
    return np.maximum(m * acceleration * period * (1.0 - 1e-9), 0.0)


class SafetyFilter:
    """Filters desired positions into safe commands, one call per control period."""

    def __init__(self, position_min, position_max, velocity_max, acceleration_max, period: float):
        self.set_limits(position_min, position_max, velocity_max, acceleration_max)
        self.period = float(period)
        self.position: np.ndarray | None = None
        self.velocity = np.zeros_like(self.position_min)
        self.acceleration = np.zeros_like(self.position_min)
        self.limit_events = 0

    def set_limits(self, position_min, position_max, velocity_max, acceleration_max) -> None:
        self.position_min = np.asarray(position_min, dtype=float)
        self.position_max = np.asarray(position_max, dtype=float)
        self.velocity_max = np.asarray(velocity_max, dtype=float)
        self.acceleration_max = np.asarray(acceleration_max, dtype=float)

    def reset(self, position: np.ndarray) -> None:
        """Start from a measured position at rest (on enable)."""
        self.position = np.asarray(position, dtype=float).copy()
        self.velocity = np.zeros_like(self.position)
        self.acceleration = np.zeros_like(self.position)

    def velocity_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        dt, a = self.period, self.acceleration_max
        up, down = braking_velocity(
            np.stack([self.position_max - self.position, self.position - self.position_min]), a, dt
        )
        high = np.minimum.reduce([self.velocity_max, self.velocity + a * dt, up])
        low = np.maximum.reduce([-self.velocity_max, self.velocity - a * dt, -down])
        # Only reachable from a state outside the limits (e.g. limits tightened at run time):
        # keep the acceleration limit and head back inside as fast as it allows.
        conflict = low > high
        if np.any(conflict):
            inward = np.clip(
                np.where(self.position > self.position_max, -np.inf, np.inf),
                self.velocity - a * dt,
                self.velocity + a * dt,
            )
            inward = np.clip(inward, -self.velocity_max, self.velocity_max)
            low, high = np.where(conflict, inward, low), np.where(conflict, inward, high)
        return low, high

    def step(self, desired: np.ndarray | None, desired_velocity: np.ndarray | None = None) -> np.ndarray:
        """The next command. `desired` None (no valid plan) means: decelerate within limits and hold, at
        the nearest position inside the position limits (a joint enabled from a reading just past its range,
        such as a closed jaw, returns inside without a jump).

        Tracking uses the plan's velocity as feedforward and closes the remaining error no faster
        than it could still stop at the target (the braking bound): after a late tick the command
        catches up without building up speed that would overshoot where the plan ends.
        """
        if self.position is None:
            raise RuntimeError('SafetyFilter.step before reset(): the starting position is unknown')
        low, high = self.velocity_bounds()
        if desired is None:
            inside = np.clip(self.position, self.position_min, self.position_max) - self.position
            wanted_velocity = np.sign(inside) * braking_velocity(np.abs(inside), self.acceleration_max, self.period)
        else:
            desired = np.asarray(desired, dtype=float)
            feedforward = (
                np.zeros_like(desired) if desired_velocity is None else np.asarray(desired_velocity, dtype=float)
            )
            finite = np.isfinite(desired) & np.isfinite(feedforward)
            desired, feedforward = np.where(finite, desired, self.position), np.where(finite, feedforward, 0.0)
            error = desired - self.position - feedforward * self.period
            correction = np.sign(error) * braking_velocity(np.abs(error), self.acceleration_max, self.period)
            wanted_velocity = np.where(finite, feedforward + correction, 0.0)
        velocity = np.clip(wanted_velocity, low, high)
        command = self.position + velocity * self.period
        if desired is not None and np.max(np.abs(command - desired)) > 1e-9:
            self.limit_events += 1
        self.acceleration = (velocity - self.velocity) / self.period
        self.position, self.velocity = command, velocity
        return command.copy()
