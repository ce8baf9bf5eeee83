"""A long run of the whole graph under a robot computer's load: sim_arm_node (joint states at 500 Hz, no
rendering), executor_node (forward commands at 100 Hz, so that every control tick is one message),
policy_node (the demo checkpoint) and three 640x480 camera streams at 30 Hz, two of which are the policy's
cameras, all three received by a subscriber of their own. A monitor in this process times the commands and
the chunks.

Per node (the policy's inference process counted with it): RSS at minute 2 and at the end, CPU share. Also:
images dropped (sent but not received by that subscriber), executor ticks kept (commands received over the
control periods elapsed since the first), the longest command gap, chunk latency (PolicyStatus total_ms)
p50/p99 in the first and the last minute, and error lines and tracebacks in the node logs.
Last line JSON: crashes, rss_growth_max (of the package's three nodes), ticks_kept, latency_p99_drift (last
minute over first), errors.

    python bench/soak.py [--minutes 10] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

STREAMS = [f'camera/soak_{i}/image_raw' for i in range(3)]
WIDTH, HEIGHT, CAMERA_HZ = 640, 480, 30.0
JOINT_STATE_HZ, CONTROL_HZ = 500.0, 100.0
SAMPLE_S = 5.0
MONITOR_PRIORITY = 40  # SCHED_FIFO, below executor_node's control loop (50) and callbacks (49)


def publish_streams(argv: list[str]) -> None:
    """The camera driver: three streams of changing frames; frame_id carries the frame's number."""
    import rclpy
    from sensor_msgs.msg import Image

    from asyncvla_ros.control.pacing import run_paced
    from asyncvla_ros.nodes.conversions import to_time

    rclpy.init(args=argv)
    node = rclpy.create_node('soak_cameras')
    publishers = [node.create_publisher(Image, topic, 5) for topic in STREAMS]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8).tobytes() for _ in range(4)]
    count = [0]

    def step():
        stamp = to_time(node.get_clock().now().nanoseconds * 1e-9)
        for publisher in publishers:
            msg = Image(height=HEIGHT, width=WIDTH, encoding='rgb8', step=WIDTH * 3, data=frames[count[0] % 4])
            msg.header.stamp, msg.header.frame_id = stamp, str(count[0])
            publisher.publish(msg)
        count[0] += 1

    try:
        run_paced(step, lambda: 1.0 / CAMERA_HZ, lambda: not rclpy.ok())
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()


def count_frames(argv: list[str]) -> None:
    """A camera subscriber of its own (a recorder, say): the frame numbers it got per stream, as a JSON line
    on stdout when it is stopped. Apart from the monitor, so that 80 MB/s of images do not delay its timing."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    rclpy.init(args=argv)
    node = rclpy.create_node('soak_frames')
    seen = {topic: [0, None, None] for topic in STREAMS}  # frames received, first and last frame number

    def count(topic, msg):
        number, counts = int(msg.header.frame_id), seen[topic]
        counts[0] += 1
        counts[1] = number if counts[1] is None else counts[1]
        counts[2] = number

    for topic in STREAMS:
        node.create_subscription(Image, topic, lambda m, t=topic: count(t, m), 5)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(json.dumps(seen), flush=True)
        rclpy.try_shutdown()


class Monitor:
    """Times every forward command and keeps every chunk's latency."""

    def __init__(self, node):
        from std_msgs.msg import Float64MultiArray

        from asyncvla_ros.msg import PolicyStatus

        self.lock = threading.Lock()
        self.commands: list[float] = []
        self.latencies: list[tuple[float, float]] = []
        node.create_subscription(Float64MultiArray, 'forward_position_controller/commands', self._command, 50)
        node.create_subscription(PolicyStatus, 'asyncvla/policy_status', self._status, 50)

    def _command(self, msg):
        with self.lock:
            self.commands.append(time.monotonic())

    def _status(self, msg):
        if msg.total_ms > 0:
            with self.lock:
                self.latencies.append((time.monotonic(), msg.total_ms))


def process_tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def sample(nodes: dict) -> dict:
    """RSS (bytes) and CPU seconds so far of each node with its children."""
    out = {}
    for name, node in nodes.items():
        rss = cpu = 0.0
        for proc in process_tree(psutil.Process(node.process.pid)):
            try:
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                cpu += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        out[name] = (rss, cpu)
    return out


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float('nan')


def log_errors(text: str) -> int:
    return len(re.findall(r'^\[ERROR\]|^Traceback', text, re.MULTILINE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=10.0)
    parser.add_argument('--checkpoint', default='', help='policy checkpoint (default: the demo checkpoint)')
    args = parser.parse_args()

    from asyncvla_ros.nodes.loops import make_realtime
    from asyncvla_ros.paths import config_path
    from asyncvla_ros.tools.processes import NodeProcess, ros_environment

    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randrange(100, 200)))
    env = ros_environment(large_messages=True)
    os.environ.update(env)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    workdir = Path(tempfile.mkdtemp(prefix='asyncvla-soak-'))
    nodes = {
        'sim_arm_node': NodeProcess(
            'sim_arm_node',
            'asyncvla_ros.nodes.sim_arm_node',
            workdir,
            [config_path('sim_arm.yaml')],
            {'camera_rate_hz': 0.0, 'joint_state_rate_hz': JOINT_STATE_HZ},
            env,
        ),
        'executor_node': NodeProcess(
            'executor_node',
            'asyncvla_ros.nodes.executor_node',
            workdir,
            [config_path('executor.yaml')],
            {'start_enabled': True, 'command_interface': 'forward_command', 'control_rate_hz': CONTROL_HZ},
            env,
        ),
        'policy_node': NodeProcess(
            'policy_node',
            'asyncvla_ros.nodes.policy_node',
            workdir,
            [config_path('policy.yaml')],
            {'camera_topics': STREAMS[:2], **({'checkpoint': args.checkpoint} if args.checkpoint else {})},
            env,
        ),
        'cameras': NodeProcess('cameras', str(Path(__file__).resolve()), workdir, [], {}, env, ['--streams']),
        'frames': NodeProcess('frames', str(Path(__file__).resolve()), workdir, [], {}, env, ['--count-frames']),
    }
    rclpy.init()
    monitor_node = rclpy.create_node('soak_monitor')
    monitor = Monitor(monitor_node)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor_node)

    def spin():  # real-time like a controller (below the executor's loop), so gaps are the executor's, not ours
        make_realtime(MONITOR_PRIORITY, monitor_node.get_logger(), 'soak monitor')
        executor.spin()

    threading.Thread(target=spin, daemon=True).start()
    for node in nodes.values():
        node.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not monitor.latencies and all(n.running() for n in nodes.values()):
            time.sleep(1.0)
        if not monitor.latencies:
            raise SystemExit(f'no chunk within 2 minutes (or a node ended); logs in {workdir}')
        started = time.monotonic()
        end = started + args.minutes * 60
        at_minute_2 = None
        first = sample(nodes)
        while time.monotonic() < end and all(n.running() for n in nodes.values()):
            time.sleep(SAMPLE_S)
            if at_minute_2 is None and time.monotonic() - started >= min(120.0, args.minutes * 30):
                at_minute_2 = sample(nodes)
            print(f'soak: {(time.monotonic() - started) / 60:.1f} of {args.minutes:g} min', file=sys.stderr)
        finished = time.monotonic()
        last = sample(nodes)
        crashed = [name for name, n in nodes.items() if not n.running()]
    finally:
        for node in nodes.values():
            node.stop()
        executor.shutdown()
        rclpy.try_shutdown()

    with monitor.lock:
        commands = np.array(monitor.commands)
        latencies = list(monitor.latencies)
    frames = {
        topic: counts
        for topic, counts in json.loads(
            next(line for line in reversed(nodes['frames'].log_text().splitlines()) if line.startswith('{'))
        ).items()
    }
    commands = commands[(commands >= started) & (commands <= finished)]
    ticks_kept = len(commands) / ((commands[-1] - commands[0]) * CONTROL_HZ + 1) if len(commands) > 1 else 0.0
    gaps = np.diff(commands)
    gap = float(gaps.max()) if len(gaps) else float('inf')
    late = float(np.mean(gaps > 2.0 / CONTROL_HZ)) if len(gaps) else 1.0  # a tick that came a period late or more
    window = 60.0 if args.minutes >= 2 else args.minutes * 15
    early = [ms for t, ms in latencies if started <= t < started + window]
    last_minute = [ms for t, ms in latencies if finished - window <= t <= finished]
    dropped = {t: 1.0 - n / (last - first + 1) if n > 1 else 1.0 for t, (n, first, last) in frames.items()}
    seconds = finished - started
    growth = {
        name: (last[name][0] - at_minute_2[name][0]) / at_minute_2[name][0] if at_minute_2 else float('nan')
        for name in nodes
    }
    graph = [name for name in nodes if name.endswith('_node')]  # the package's nodes; the rest is this bench's
    print(f'\n{args.minutes:g} min soak ({workdir}):')
    print(
        f'{"node":15s} {"RSS min 2 (MB)":>15s} {"RSS end (MB)":>13s} {"growth":>8s} {"CPU (cores)":>12s} {"errors":>7s}'
    )
    errors = 0
    for name, node in nodes.items():
        count = log_errors(node.log_text())
        errors += count
        cpu = (last[name][1] - first[name][1]) / seconds
        rss2 = at_minute_2[name][0] / 1e6 if at_minute_2 else float('nan')
        print(f'{name:15s} {rss2:15.0f} {last[name][0] / 1e6:13.0f} {growth[name]:8.3f} {cpu:12.2f} {count:7d}')
    print(f'images dropped (frames): {", ".join(f"{t} {d:.4f}" for t, d in dropped.items())}')
    print(
        f'executor: {len(commands)} commands, ticks kept {ticks_kept:.4f}, longest gap {gap * 1e3:.1f} ms, '
        f'{late:.4f} of them more than two periods after the one before'
    )
    print(
        f'chunk latency (ms): first minute p50 {percentile(early, 50):.0f} p99 {percentile(early, 99):.0f}; '
        f'last minute p50 {percentile(last_minute, 50):.0f} p99 {percentile(last_minute, 99):.0f}; '
        f'{len(latencies)} chunks'
    )
    print(
        json.dumps(
            {
                'minutes': args.minutes,
                'crashes': len(crashed),
                'crashed': crashed,
                'rss_growth_max': max(growth[name] for name in graph),
                'ticks_kept': ticks_kept,
                'longest_command_gap_ms': gap * 1e3,
                'late_commands': late,
                'images_dropped_max': max(dropped.values()),
                'latency_p99_drift': percentile(last_minute, 99) / percentile(early, 99),
                'errors': errors,
            }
        )
    )


if __name__ == '__main__':
    if '--streams' in sys.argv:
        publish_streams(sys.argv)
    elif '--count-frames' in sys.argv:
        count_frames(sys.argv)
    else:
        main()
