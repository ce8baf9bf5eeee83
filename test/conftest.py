"""Test isolation for real ROS 2: every test process (and pytest-xdist worker) gets its own
ROS_DOMAIN_ID, loopback-only discovery and a temporary ROS_LOG_DIR, set before rclpy starts."""
import os
import random
import tempfile
import threading
from pathlib import Path

import pytest

_base = int(os.environ.setdefault('ASYNCVLA_TEST_DOMAIN_BASE', str(random.randrange(1, 90))))
_worker = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
DOMAIN_ID = _base + int(_worker.removeprefix('gw'))
OTHER_DOMAIN_ID = DOMAIN_ID + 100  # for isolation tests: never used by another worker
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['ROS_LOG_DIR'] = tempfile.mkdtemp(prefix='asyncvla-roslog-')
os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)

import rclpy  # noqa: E402 (after the environment is set)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402

from asyncvla_ros.tools.processes import NodeProcess, ros_environment  # noqa: E402


class Spinner:
    """Spins nodes of one context in a background thread (a real executor, real DDS). Single-threaded:
    rclpy's MultiThreadedExecutor holds the GIL so much that other threads (a node's control loop)
    miss their periods by 100 ms."""

    def __init__(self, context):
        self.executor = SingleThreadedExecutor(context=context)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except ExternalShutdownException:
            return  # the context was shut down under the executor at teardown

    def add(self, *nodes):
        for node in nodes:
            self.executor.add_node(node)
        return nodes[0] if len(nodes) == 1 else nodes

    def shutdown(self):
        self.executor.shutdown(timeout_sec=2.0)


@pytest.fixture
def ros_context():
    """An rclpy context on this process's test domain."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    yield context
    context.try_shutdown()


@pytest.fixture
def spinner(ros_context):
    spin = Spinner(ros_context)
    yield spin
    spin.shutdown()


@pytest.fixture
def node_process(tmp_path):
    """Starts nodes as separate processes (`python -m <module> --ros-args --params-file ...`);
    stops them all at the end and prints their logs when the test failed."""
    started = []

    def start(name, module, params_files=(), overrides=None, large_messages=False, extra_args=()):
        proc = NodeProcess(name=name, module=module, log_dir=tmp_path / 'logs', params_files=list(params_files),
                           overrides=dict(overrides or {}), env=ros_environment(large_messages=large_messages),
                           extra_args=list(extra_args))
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()
        print(f'----- {proc.name} log ({proc.log_path}) -----\n{proc.log_text()[-4000:]}')


@pytest.fixture
def support_dir():
    return Path(__file__).parent / 'support'
