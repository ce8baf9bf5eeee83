"""`asyncvla replay BAG`: publishes a rosbag2 with its recorded timing (the bag's receive stamps), the
bytes exactly as stored, optionally driving /clock from the bag's time so that nodes with
`use_sim_time` run on the recording's clock. On a ROS install `ros2 bag play` does the same job."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock

from asyncvla_ros.nodes.conversions import message_class, to_time
from asyncvla_ros.tools.bags import BagError, bag_topics, open_bag, require_topics


@dataclass
class ReplayOptions:
    rate: float = 1.0  # playback speed factor
    start_offset: float = 0.0  # seconds of the bag skipped at the start
    loop: bool = False
    topics: list[str] | None = None  # None: every topic in the bag
    remap: dict[str, str] = field(default_factory=dict)  # bag topic -> published topic
    clock_hz: float = 0.0  # > 0: publish /clock from the bag's time at this rate
    startup_delay: float = 1.0  # seconds for subscribers to discover the publishers before playing


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class Player:
    """Publishers for the selected topics, checked before anything is published (unknown types and
    missing topics are errors), and a paced playback that records how late each message went out."""

    def __init__(self, node, reader, path, options: ReplayOptions):
        if not options.rate > 0:
            raise BagError(f'rate must be > 0, got {options.rate}')
        self.node, self.reader, self.options = node, reader, options
        present = bag_topics(reader)
        topics = options.topics if options.topics is not None else sorted(present)
        require_topics(reader, topics, path)
        if options.clock_hz > 0 and '/clock' in topics:
            topics = [t for t in topics if t != '/clock']  # the player's /clock replaces the recorded one
        if not topics:
            raise BagError(f'{path}: no topics to replay')
        self.connections = [c for c in reader.connections if c.topic in topics]
        self.publishers = {}
        for topic in topics:
            msgtype = present[topic].msgtype
            try:
                msg_class = message_class(msgtype)
            except ImportError as exc:
                raise BagError(f'{path}: cannot replay {topic}: {exc}') from exc
            self.publishers[topic] = node.create_publisher(
                msg_class, options.remap.get(topic, topic), QoSProfile(depth=100)
            )
        self.clock_pub = node.create_publisher(Clock, '/clock', 10) if options.clock_hz > 0 else None
        self.counts = dict.fromkeys(topics, 0)
        self.lateness: list[float] = []

    def play(self, stop=lambda: False) -> None:
        while True:
            self._play_once(stop)
            if not self.options.loop or stop():
                return

    def _play_once(self, stop) -> None:
        rate, start = self.options.rate, self.reader.start_time + int(self.options.start_offset * 1e9)
        wall_start = time.monotonic()

        def due(stamp_ns: int) -> float:
            return wall_start + (stamp_ns - start) * 1e-9 / rate

        clock_period = int(1e9 / self.options.clock_hz) if self.clock_pub else 0
        next_clock = start
        for connection, stamp, raw in self.reader.messages(connections=self.connections, start=start):
            while self.clock_pub and next_clock <= stamp:
                _sleep_until(due(next_clock))
                self.clock_pub.publish(Clock(clock=to_time(next_clock * 1e-9)))
                next_clock += clock_period
            _sleep_until(due(stamp))
            self.lateness.append(time.monotonic() - due(stamp))
            self.publishers[connection.topic].publish(bytes(raw))
            self.counts[connection.topic] += 1
            if stop():
                return

    def timing(self) -> dict:
        late = np.abs(np.asarray(self.lateness or [0.0])) * 1e3
        return {
            'timing_error_ms_p50': float(np.percentile(late, 50)),
            'timing_error_ms_p95': float(np.percentile(late, 95)),
            'timing_error_ms_max': float(late.max()),
        }


def replay(path, options: ReplayOptions, ros_args: list[str]) -> dict:
    with open_bag(path) as reader:
        rclpy.init(args=['asyncvla', *ros_args])
        node = rclpy.create_node('asyncvla_player')
        try:
            player = Player(node, reader, path, options)
            duration = (reader.end_time - reader.start_time) * 1e-9
            print(
                f'replay: {path} ({duration:.1f} s, {len(player.publishers)} topics) at rate {options.rate}'
                f'{f", /clock at {options.clock_hz:g} Hz" if options.clock_hz > 0 else ""}'
                f'{", looping" if options.loop else ""}; Ctrl-C stops',
                flush=True,
            )
            time.sleep(options.startup_delay)
            started = time.monotonic()
            with contextlib.suppress(KeyboardInterrupt):
                player.play(stop=lambda: not rclpy.ok())
            result = {
                'bag': str(path),
                'seconds': round(time.monotonic() - started, 3),
                'messages': player.counts,
                **player.timing(),
            }
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    print(
        f'replay: published {sum(result["messages"].values())} messages in {result["seconds"]:.1f} s; timing error '
        f'p50 {result["timing_error_ms_p50"]:.2f} ms, p95 {result["timing_error_ms_p95"]:.2f} ms',
        flush=True,
    )
    return result
