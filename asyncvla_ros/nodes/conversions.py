"""Conversions between ROS messages and the core's types (numpy arrays, seconds, Chunk)."""

from __future__ import annotations

import importlib

import numpy as np
from builtin_interfaces.msg import Duration, Time
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from asyncvla_ros.control.chunk import Chunk, chunk_from_flat
from asyncvla_ros.control.observation import decode_image
from asyncvla_ros.msg import ActionChunk


def message_class(msgtype: str):
    """The Python class of `package/msg/Name` (rosidl_runtime_py is not on PyPI). Raises ImportError with
    a sentence a user can act on."""
    package, _, name = msgtype.partition('/msg/')
    try:
        return getattr(importlib.import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImportError(
            f'unknown message type {msgtype}: {package}.msg.{name} is not importable here '
            f'(source the workspace that builds {package})'
        ) from exc


def to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_time(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def to_duration(seconds: float) -> Duration:
    nanoseconds = max(int(round(seconds * 1e9)), 0)
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def chunk_from_msg(msg: ActionChunk) -> Chunk:
    """Raises ChunkRejected when the flat layout does not add up."""
    return chunk_from_flat(
        msg.chunk_id,
        to_seconds(msg.start_time),
        msg.dt,
        msg.joint_names,
        msg.num_steps,
        msg.positions,
        msg.num_committed,
        msg.confidence,
        msg.refined,
    )


def chunk_to_msg(chunk: Chunk, stamp: float) -> ActionChunk:
    msg = ActionChunk()
    msg.header.stamp = to_time(stamp)
    msg.chunk_id = chunk.chunk_id
    msg.start_time = to_time(chunk.start_time)
    msg.dt = float(chunk.dt)
    msg.joint_names = list(chunk.joint_names)
    msg.num_steps = chunk.num_steps
    msg.positions = np.asarray(chunk.positions, dtype=float).ravel().tolist()
    msg.confidence = np.asarray(chunk.confidence, dtype=np.float32).tolist()
    msg.refined = [bool(r) for r in chunk.refined]
    msg.num_committed = int(chunk.num_committed)
    return msg


def forward_command(positions: np.ndarray) -> Float64MultiArray:
    return Float64MultiArray(data=np.asarray(positions, dtype=float).tolist())


def joint_trajectory(
    joint_names, stamp: float, times: np.ndarray, positions: np.ndarray, velocities: np.ndarray | None = None
) -> JointTrajectory:
    """Points at absolute `times`, written as time_from_start relative to `stamp` (0 = on arrival)."""
    msg = JointTrajectory(joint_names=list(joint_names))
    msg.header.stamp = to_time(stamp)
    for i, t in enumerate(times):
        point = JointTrajectoryPoint(
            positions=np.asarray(positions[i], float).tolist(), time_from_start=to_duration(t - stamp)
        )
        if velocities is not None:
            point.velocities = np.asarray(velocities[i], float).tolist()
        msg.points.append(point)
    return msg


_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage (jpeg, png) -> (H, W, 3)
    uint8 RGB. Raises ValueError with the reason for anything else (encoding, sizes, truncated data)."""
    if hasattr(msg, 'encoding'):
        channels = _CHANNELS.get(msg.encoding)
        if channels is None:
            raise ValueError(f'unsupported image encoding {msg.encoding!r} (supported: {", ".join(_CHANNELS)})')
        if msg.height == 0 or msg.width == 0 or msg.step < msg.width * channels:
            raise ValueError(f'inconsistent image size {msg.width}x{msg.height}, step {msg.step}')
        if len(msg.data) != msg.step * msg.height:
            raise ValueError(f'image data has {len(msg.data)} bytes, expected step*height = {msg.step * msg.height}')
        rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
        pixels = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
        if msg.encoding == 'mono8':
            return np.repeat(pixels, 3, axis=2)
        rgb = pixels[..., :3]
        return np.ascontiguousarray(rgb[..., ::-1] if msg.encoding.startswith('bgr') else rgb)
    if msg.format.split(';')[0].strip().lower() not in ('jpeg', 'jpg', 'png', 'rgb8', 'bgr8'):
        raise ValueError(f'unsupported compressed format {msg.format!r} (jpeg or png)')
    decoded = decode_image(bytes(msg.data))
    if decoded is None:
        raise ValueError(f'compressed image ({msg.format}, {len(msg.data)} bytes) cannot be decoded')
    return decoded
