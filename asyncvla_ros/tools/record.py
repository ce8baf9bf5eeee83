"""`asyncvla record`: topics into a rosbag2 (mcap or sqlite3) through raw subscriptions, the bytes as
they came off the wire, stamped with the recorder's clock on arrival (as `ros2 bag record` does).
Topics are found as they appear; every definition, ours included, is stored in the bag."""

from __future__ import annotations

import fnmatch
import threading
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from asyncvla_ros.nodes.conversions import message_class
from asyncvla_ros.tools.bags import BagError, BagWriter

DEFAULT_TOPICS = (
    'camera/*',
    'joint_states',
    'asyncvla/*',
    'arm_controller/joint_trajectory',
    'forward_position_controller/commands',
    'sim/task_success',
    'sim/task_phase',
    '/diagnostics',
)


class Recorder:
    """Subscribes to every topic matching `patterns` (fnmatch on the full name; relative patterns are
    resolved in the node's namespace) and writes each message on arrival."""

    def __init__(self, node: Node, writer: BagWriter, patterns=DEFAULT_TOPICS):
        self.node, self.writer = node, writer
        namespace = node.get_namespace().rstrip('/')
        self.patterns = [p if p.startswith('/') else f'{namespace}/{p}' for p in patterns]
        self.lock = threading.Lock()
        self.subscriptions = {}
        self.errors: dict[str, str] = {}
        self.discover()
        node.create_timer(0.5, self.discover)

    def discover(self) -> None:
        for topic, types in self.node.get_topic_names_and_types():
            if (
                topic in self.subscriptions
                or topic in self.errors
                or not any(fnmatch.fnmatchcase(topic, p) for p in self.patterns)
            ):
                continue
            try:
                if len(types) != 1:
                    raise BagError(f'{len(types)} types on one topic ({", ".join(types)})')
                msg_class = message_class(types[0])
                with self.lock:
                    self.writer.add_topic(topic, types[0])
            except (BagError, ImportError, AttributeError) as exc:
                self.errors[topic] = str(exc)
                self.node.get_logger().error(f'not recording {topic}: {exc}')
                continue
            self.subscriptions[topic] = self.node.create_subscription(
                msg_class, topic, lambda raw, t=topic: self._write(t, raw), self._qos(topic), raw=True
            )
            self.node.get_logger().info(f'recording {topic} ({types[0]})')

    def _qos(self, topic: str) -> QoSProfile:
        """Reliable when every publisher offers it, else best effort (which matches any publisher)."""
        offered = self.node.get_publishers_info_by_topic(topic)
        if offered and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in offered):
            return QoSProfile(depth=100)
        return QoSProfile(depth=100, reliability=qos_profile_sensor_data.reliability)

    def _write(self, topic: str, raw: bytes) -> None:
        stamp = self.node.get_clock().now().nanoseconds
        try:
            with self.lock:
                self.writer.write(topic, stamp, raw)
        except BagError as exc:
            self.node.get_logger().warning(f'dropped a message on {topic}: {exc}', throttle_duration_sec=5.0)


def record(output, patterns, storage: str, duration: float, ros_args: list[str]) -> dict:
    """Records until Ctrl-C or `duration` seconds (0: no limit)."""
    writer = BagWriter(output, storage)
    rclpy.init(args=['asyncvla', *ros_args])
    node = rclpy.create_node('asyncvla_recorder')
    recorder = Recorder(node, writer, patterns)
    print(
        f'record: writing {storage} bag {output}; topics matching {" ".join(recorder.patterns)}; '
        f'{f"for {duration:.1f} s" if duration else "Ctrl-C stops"}',
        flush=True,
    )
    started = time.monotonic()
    try:
        while rclpy.ok() and (not duration or time.monotonic() - started < duration):
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        with recorder.lock:
            writer.close()
    counts = dict(writer.counts)
    print(
        f'record: wrote {sum(counts.values())} messages on {len(counts)} topics in {time.monotonic() - started:.1f} s '
        f'to {output}: ' + ', '.join(f'{t} {n}' for t, n in sorted(counts.items())),
        flush=True,
    )
    return {'output': str(output), 'messages': counts, 'errors': recorder.errors}
