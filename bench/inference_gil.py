"""Chunk latency of the demo checkpoint beside policy_node's joint-state callbacks: the model in the node's
process (a worker thread, sharing the GIL with the callbacks) against the model in a child process
(`inference_process`, the default).

A separate process publishes /joint_states at each rate; policy_node's own `_on_joint_state` handles them in
a thread of this process spinning a SingleThreadedExecutor (as `run_node` does). Both runners use
policy_node's default thread count and are timed in the same run, alternating. Ratios: `<rate>_thread_over_idle`
(what the callbacks cost an in-process
inference) and `<rate>_process_over_idle`. Last line: JSON.

    python bench/inference_gil.py                     # 0, 100 and 500 Hz of joint states
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time

os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 50))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp())

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from tqdm import tqdm  # noqa: E402

from asyncvla_ros.control.pacing import wait_until  # noqa: E402
from asyncvla_ros.model.inference_process import InferenceProcess  # noqa: E402
from asyncvla_ros.model.interface import ChunkRequest, Sampling  # noqa: E402
from asyncvla_ros.model.runner import PolicyRunner  # noqa: E402
from asyncvla_ros.nodes.policy_node import PolicyNode, cpu_threads  # noqa: E402
from asyncvla_ros.sim.so101 import JOINT_NAMES  # noqa: E402


def publish_joint_states(rate_hz: float, stop) -> None:
    """Another process's joint-state driver (a paced loop: an rclpy timer does not reach 500 Hz here)."""
    rclpy.init()
    node = rclpy.create_node('joint_state_driver')
    pub = node.create_publisher(JointState, '/joint_states', qos_profile_sensor_data)
    message = JointState(name=list(JOINT_NAMES), position=[0.1] * len(JOINT_NAMES))
    due = time.monotonic()
    while not stop.is_set():
        pub.publish(message)
        due += 1.0 / rate_hz
        time.sleep(max(due - time.monotonic(), 0.0))
    node.destroy_node()
    rclpy.try_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rates', type=float, nargs='+', default=[0.0, 100.0, 500.0])
    parser.add_argument('--repeats', type=int, default=15)
    args = parser.parse_args()

    threads = cpu_threads(0)  # as policy_node's default
    runners = {
        'thread': PolicyRunner(seed=0, num_threads=threads),
        'process': InferenceProcess(seed=0, num_threads=threads),
    }
    rng = np.random.default_rng(0)
    request = ChunkRequest(
        [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in runners['thread'].camera_keys],
        np.full(len(JOINT_NAMES), 0.1),
        'pick up the purple block and place it on the green target',
        sampling=Sampling(num_denoise_steps=5, num_denoise_steps_afm=4),
    )
    for runner in runners.values():  # warm up
        runner.predict(request)

    rclpy.init()
    node = PolicyNode()  # unconfigured: only its joint-state callback is used
    received = []
    node.create_subscription(
        JointState, 'joint_states', lambda m: (received.append(1), node._on_joint_state(m)), qos_profile_sensor_data
    )
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    spawn = multiprocessing.get_context('spawn')
    p50 = {}
    for rate in args.rates:
        stop = spawn.Event()
        driver = spawn.Process(target=publish_joint_states, args=(rate, stop)) if rate > 0 else None
        received.clear()
        if driver:
            driver.start()
            if not wait_until(lambda: len(received) > 0, timeout=30):
                raise SystemExit('inference_gil: no joint states arrived from the driver process')
        received.clear()
        started = time.perf_counter()
        times = {name: [] for name in runners}
        for _ in tqdm(range(args.repeats), desc=f'{rate:.0f} Hz of joint states', leave=False):
            for name, runner in runners.items():
                t = time.perf_counter()
                runner.predict(request)
                times[name].append((time.perf_counter() - t) * 1e3)
        measured_rate = len(received) / (time.perf_counter() - started)
        if driver:
            stop.set()
            driver.join()
        for name, values in times.items():
            p50[(rate, name)] = float(np.median(values))
        print(
            f'{rate:.0f} Hz of joint states (received {measured_rate:.0f} Hz): p50 chunk '
            f"{p50[(rate, 'thread')]:.1f} ms in the node's thread, {p50[(rate, 'process')]:.1f} ms in a child process",
            flush=True,
        )
    runners['process'].close()
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    idle = {name: p50[(args.rates[0], name)] for name in runners}
    ratios = {
        f'{rate:.0f}hz_{name}_over_idle': round(p50[(rate, name)] / idle[name], 3)
        for rate in args.rates[1:]
        for name in runners
    }
    print(json.dumps({'rates_hz': args.rates, **ratios}))


if __name__ == '__main__':
    main()
