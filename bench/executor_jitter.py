"""Control-loop timing of executor_node at a high rate, idle and with both cores loaded.

Runs a real executor_node (forward_command, enabled, executing a long chunk) with a joint-state
publisher at 200 Hz, records the time of every control tick and reports the achieved rate and
percentiles of the period error |interval - period|. Last line: JSON with rate_hz_idle, p99_ms_idle,
rate_hz_loaded, p99_ms_loaded.
"""

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time

os.environ.setdefault('ROS_DOMAIN_ID', str(150 + os.getpid() % 50))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp())

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from asyncvla_ros.control.chunk import Chunk  # noqa: E402
from asyncvla_ros.nodes.conversions import chunk_to_msg  # noqa: E402
from asyncvla_ros.nodes.executor_node import ExecutorNode  # noqa: E402
from asyncvla_ros.nodes.loops import make_realtime  # noqa: E402
from asyncvla_ros.sim.so101 import JOINT_NAMES  # noqa: E402


def burn(stop):
    while not stop.is_set():
        pass


def measure(rate_hz: float, seconds: float, load: bool) -> dict:
    stop_load = multiprocessing.Event()
    burners = (
        [multiprocessing.Process(target=burn, args=(stop_load,)) for _ in range(os.cpu_count() or 2)] if load else []
    )
    for b in burners:
        b.start()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = ExecutorNode(
        context=context,
        parameter_overrides=[
            Parameter('command_interface', value='forward_command'),
            Parameter('control_rate_hz', value=rate_hz),
            Parameter('start_enabled', value=True),
            Parameter('watchdog_timeout_s', value=600.0),
        ],
    )
    ticks = []
    step = node._control_step
    node._control_step = lambda: (ticks.append(time.perf_counter()), step())
    source = rclpy.create_node('joint_source', context=context)
    pub = source.create_publisher(JointState, '/joint_states', 10)
    chunk_pub = source.create_publisher(
        type(chunk_to_msg(Chunk(0, 0.0, 0.1, ['a'], np.zeros((1, 1))), 0.0)), '/asyncvla/action_chunk', 10
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(source)
    node.trigger_configure()
    node.trigger_activate()

    def spin():  # as run_node does for executor_node
        make_realtime(node.spin_realtime_priority, node.get_logger(), 'callbacks')
        executor.spin()

    threading.Thread(target=spin, daemon=True).start()
    q = np.zeros(6)
    source.create_timer(0.005, lambda: pub.publish(JointState(name=list(JOINT_NAMES), position=q.tolist())))
    time.sleep(0.5)
    now = source.get_clock().now().nanoseconds * 1e-9
    chunk = Chunk(1, now, 0.1, list(JOINT_NAMES), np.linspace(np.zeros(6), np.full(6, 0.5), int(seconds * 10) + 20))
    chunk_pub.publish(chunk_to_msg(chunk, now))
    ticks.clear()
    time.sleep(seconds)
    recorded = np.array(ticks)
    node.trigger_deactivate()
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    source.destroy_node()
    context.try_shutdown()
    stop_load.set()
    for b in burners:
        b.join()
    intervals = np.diff(recorded)
    error_ms = np.abs(intervals - 1.0 / rate_hz) * 1e3
    return {
        'rate_hz': len(recorded) / seconds,
        'p50_ms': float(np.percentile(error_ms, 50)),
        'p99_ms': float(np.percentile(error_ms, 99)),
        'max_ms': float(error_ms.max()),
        'late_ticks': int(np.sum(intervals > 2.0 / rate_hz)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rate', type=float, default=500.0)
    parser.add_argument('--seconds', type=float, default=10.0)
    args = parser.parse_args()
    results = {}
    for label, load in (('idle', False), ('loaded', True)):
        print(f'executor_jitter: {args.seconds:.0f} s at {args.rate:.0f} Hz, {label} ...', flush=True)
        r = measure(args.rate, args.seconds, load)
        print(
            f'  {label}: {r["rate_hz"]:.1f} Hz ({100 * r["rate_hz"] / args.rate:.2f} % of ticks), period error '
            f'p50 {r["p50_ms"]:.3f} ms, p99 {r["p99_ms"]:.3f} ms, max {r["max_ms"]:.2f} ms, '
            f'{r["late_ticks"]} ticks over 2 periods',
            flush=True,
        )
        results[label] = r
    print(
        json.dumps(
            {
                'rate_hz_idle': round(results['idle']['rate_hz'], 1),
                'p99_ms_idle': round(results['idle']['p99_ms'], 3),
                'rate_hz_loaded': round(results['loaded']['rate_hz'], 1),
                'p99_ms_loaded': round(results['loaded']['p99_ms'], 3),
            }
        )
    )


if __name__ == '__main__':
    main()
