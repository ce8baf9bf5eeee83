"""Action chunks as the executor sees them, and the checks every incoming chunk must pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


class ChunkRejected(ValueError):
    """A chunk that must not touch the plan; the message is the reason, for logs and counters."""


@dataclass
class Chunk:
    """L steps of joint positions: step i is due at `start_time + i * dt` (seconds, ROS time)."""

    chunk_id: int
    start_time: float
    dt: float
    joint_names: Sequence[str]
    positions: np.ndarray  # (L, J), robot units
    num_committed: int = 0
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))
    refined: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def num_steps(self) -> int:
        return int(self.positions.shape[0])

    def step_times(self) -> np.ndarray:
        return self.start_time + self.dt * np.arange(self.num_steps)


def chunk_from_flat(
    chunk_id, start_time, dt, joint_names, num_steps, positions, num_committed=0, confidence=(), refined=()
) -> Chunk:
    """Builds a Chunk from a message's flat fields, checking the layout (ChunkRejected otherwise)."""
    joint_names = list(joint_names)
    flat = np.asarray(positions, dtype=float)
    if num_steps <= 0:
        raise ChunkRejected('num_steps is 0')
    if not joint_names:
        raise ChunkRejected('no joint_names')
    if flat.size != num_steps * len(joint_names):
        raise ChunkRejected(
            f'positions has {flat.size} values, expected num_steps*joints = {num_steps}*{len(joint_names)}'
        )
    if len(confidence) not in (0, num_steps) or len(refined) not in (0, num_steps):
        raise ChunkRejected(f'confidence/refined must be empty or have {num_steps} values')
    return Chunk(
        int(chunk_id),
        float(start_time),
        float(dt),
        joint_names,
        flat.reshape(num_steps, len(joint_names)),
        int(num_committed),
        np.asarray(confidence, dtype=float),
        np.asarray(refined, dtype=bool),
    )


def validate_chunk(chunk: Chunk, joint_names: Sequence[str]) -> np.ndarray:
    """The chunk's positions reordered to `joint_names` (L, J). Raises ChunkRejected with the reason
    for NaN/inf, bad dt, unknown, missing or duplicate joints, or bad num_committed."""
    if not (np.isfinite(chunk.dt) and chunk.dt > 0):
        raise ChunkRejected(f'dt must be a positive finite number, got {chunk.dt}')
    if not np.isfinite(chunk.start_time):
        raise ChunkRejected('start_time is not finite')
    if chunk.positions.ndim != 2 or chunk.positions.shape[1] != len(chunk.joint_names) or chunk.num_steps == 0:
        raise ChunkRejected(f'positions shape {chunk.positions.shape} does not match {len(chunk.joint_names)} joints')
    if not np.all(np.isfinite(chunk.positions)):
        raise ChunkRejected(f'positions contain {"NaN" if np.isnan(chunk.positions).any() else "inf"}')
    if len(set(chunk.joint_names)) != len(chunk.joint_names):
        raise ChunkRejected(f'duplicate joint names {list(chunk.joint_names)}')
    unknown = sorted(set(chunk.joint_names) - set(joint_names))
    missing = [j for j in joint_names if j not in chunk.joint_names]
    if unknown or missing:
        raise ChunkRejected(f'joint names do not match the robot: unknown {unknown}, missing {missing}')
    if not 0 <= chunk.num_committed < chunk.num_steps:
        raise ChunkRejected(f'num_committed {chunk.num_committed} must be in [0, num_steps={chunk.num_steps})')
    order = [list(chunk.joint_names).index(j) for j in joint_names]
    return chunk.positions[:, order]
