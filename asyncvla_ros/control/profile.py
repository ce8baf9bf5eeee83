"""Robot profiles (config/robots/*.yaml): joints, limits, controller topics and unit mapping."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from asyncvla_ros.paths import config_path


@dataclass(frozen=True)
class RobotProfile:
    """Joint limits are in robot units (what the controller takes). `scale`/`offset` map the policy's
    units to robot units, robot = scale * policy + offset (identity for the simulated SO-101). policy_node maps
    at its boundary: joint states into the policy's units, its chunks back into robot units, which is what
    ActionChunk carries and what the executor checks against the limits."""

    name: str
    joint_names: tuple[str, ...]
    position_min: np.ndarray
    position_max: np.ndarray
    velocity_max: np.ndarray
    acceleration_max: np.ndarray
    command_topics: dict = field(default_factory=dict)
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.joint_names)
        if n == 0 or len(set(self.joint_names)) != n:
            raise ValueError(f'profile {self.name}: joint names must be non-empty and unique')
        for key in ('position_min', 'position_max', 'velocity_max', 'acceleration_max', 'scale', 'offset'):
            value = getattr(self, key)
            if value is None:
                value = np.ones(n) if key == 'scale' else np.zeros(n)
            value = np.asarray(value, dtype=float)
            if value.shape != (n,) or not np.all(np.isfinite(value)):
                raise ValueError(f'profile {self.name}: {key} needs {n} finite values, got {value.tolist()}')
            object.__setattr__(self, key, value)
        if np.any(self.scale == 0):
            raise ValueError(
                f'profile {self.name}: scale must be non-zero for every joint (it is inverted for joint states)'
            )
        if np.any(self.position_min >= self.position_max):
            raise ValueError(f'profile {self.name}: position_min must be below position_max for every joint')
        if np.any(self.velocity_max <= 0) or np.any(self.acceleration_max <= 0):
            raise ValueError(f'profile {self.name}: velocity and acceleration limits must be positive')

    def _unit_map(self, joint_names) -> tuple[np.ndarray, np.ndarray]:
        index = {name: i for i, name in enumerate(self.joint_names)}
        rows = [index.get(name) for name in joint_names]
        scale = np.array([1.0 if i is None else self.scale[i] for i in rows])
        offset = np.array([0.0 if i is None else self.offset[i] for i in rows])
        return scale, offset

    def to_robot(self, positions: np.ndarray, joint_names) -> np.ndarray:
        """Policy units -> robot units for positions (..., J) of `joint_names` (a joint the profile does not
        name passes unchanged)."""
        scale, offset = self._unit_map(joint_names)
        return np.asarray(positions, dtype=float) * scale + offset

    def to_policy(self, positions: np.ndarray, joint_names) -> np.ndarray:
        """Robot units -> policy units: the inverse of `to_robot`."""
        scale, offset = self._unit_map(joint_names)
        return (np.asarray(positions, dtype=float) - offset) / scale

    def with_overrides(self, **overrides) -> RobotProfile:
        """A copy with the overrides that are set (not None) applied (the executor's inline parameters)."""
        return replace(
            self, **{k: (tuple(v) if k == 'joint_names' else v) for k, v in overrides.items() if v is not None}
        )


def load_profile(name_or_path: str) -> RobotProfile:
    """A profile by name (config/robots/<name>.yaml) or by path. Raises ValueError with the file name."""
    path = Path(name_or_path)
    profiles = config_path('robots')
    if not path.suffix:
        path = profiles / f'{name_or_path}.yaml'
    if not path.is_file():
        known = ', '.join(sorted(p.stem for p in profiles.glob('*.yaml')))
        raise ValueError(f'robot profile {name_or_path!r} not found ({path}); known profiles: {known}')
    try:
        data = yaml.safe_load(path.read_text())
        joints = data['joints']
        return RobotProfile(
            name=data.get('name', path.stem),
            joint_names=tuple(j['name'] for j in joints),
            position_min=[j['position_min'] for j in joints],
            position_max=[j['position_max'] for j in joints],
            velocity_max=[j['velocity_max'] for j in joints],
            acceleration_max=[j['acceleration_max'] for j in joints],
            command_topics=dict(data.get('command_topics', {})),
            scale=[j.get('scale', 1.0) for j in joints],
            offset=[j.get('offset', 0.0) for j in joints],
        )
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise ValueError(f'{path}: malformed robot profile ({exc!r})') from exc
