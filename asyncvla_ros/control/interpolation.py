"""Interpolants through plan waypoints: linear, cubic (continuous velocity) and quintic (continuous
acceleration). Each starts from the current commanded state, so a splice is continuous by
construction, and comes to rest at its last waypoint."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline, make_interp_spline

KINDS = ('linear', 'cubic', 'quintic')


class Interpolant:
    """q(t) and q'(t) for t in [times[0], times[-1]]; held constant outside."""

    def __init__(
        self,
        kind: str,
        times: np.ndarray,
        positions: np.ndarray,
        velocity0: np.ndarray | None = None,
        acceleration0: np.ndarray | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f'interpolation must be one of {KINDS}, got {kind!r}')
        times = np.asarray(times, dtype=float)
        positions = np.asarray(positions, dtype=float)
        if len(times) != len(positions) or len(times) == 0 or np.any(np.diff(times) <= 0):
            raise ValueError('interpolation needs strictly increasing times, one per waypoint')
        self.times, self.positions = times, positions
        zeros = np.zeros(positions.shape[1])
        v0 = zeros if velocity0 is None else np.asarray(velocity0, dtype=float)
        a0 = zeros if acceleration0 is None else np.asarray(acceleration0, dtype=float)
        self._derivative = None
        if len(times) == 1:
            self._spline = None
        elif kind == 'linear':
            self._spline = make_interp_spline(times, positions, k=1)
        elif kind == 'cubic':
            self._spline = CubicSpline(times, positions, bc_type=((1, v0), (1, zeros)))
        else:
            self._spline = make_interp_spline(
                times, positions, k=5, bc_type=([(1, v0), (2, a0)], [(1, zeros), (2, zeros)])
            )

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def position(self, t: float | np.ndarray) -> np.ndarray:
        if self._spline is None:
            return np.broadcast_to(self.positions[0], np.shape(t) + self.positions.shape[1:]).copy()
        return self._spline(np.clip(t, self.start, self.end))

    def velocity(self, t: float | np.ndarray) -> np.ndarray:
        inside = (np.asarray(t) >= self.start) & (np.asarray(t) <= self.end)
        if self._spline is None:
            return np.zeros(np.shape(t) + self.positions.shape[1:])
        if self._derivative is None:
            self._derivative = self._spline.derivative(1)
        v = self._derivative(np.clip(t, self.start, self.end))
        return np.where(np.expand_dims(inside, -1), v, 0.0)
