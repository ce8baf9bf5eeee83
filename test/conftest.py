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
from rclpy._rclpy_pybind11 import InvalidHandle, RCLError  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from tiny_model import tiny_policy  # noqa: E402

from asyncvla_ros.tools.processes import NodeProcess, ros_environment  # noqa: E402

DDS_FIXTURES = {'ros_context', 'spinner', 'node_process'}
SIM_FIXTURES = {'dataset_root'}


def pytest_collection_modifyitems(items):
    """`dds` and `sim` follow from the fixtures a test uses (`make test-fast` deselects both); modules that start
    nodes or the sim without those fixtures carry their own `pytestmark`."""
    for item in items:
        fixtures = set(getattr(item, 'fixturenames', ()))
        if fixtures & DDS_FIXTURES:
            item.add_marker(pytest.mark.dds)
        if fixtures & SIM_FIXTURES:
            item.add_marker(pytest.mark.sim)


class Spinner:
    """Spins nodes of one context in a background thread (a real executor, real DDS). Single-threaded:
    rclpy's MultiThreadedExecutor holds the GIL so much that other threads (a node's control loop)
    miss their periods by 100 ms."""

    def __init__(self, context):
        self.executor = SingleThreadedExecutor(context=context)
        self._stopping = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except ExternalShutdownException:
            return  # the context was shut down under the executor at teardown
        except (InvalidHandle, AttributeError, RCLError):
            if not self._stopping:
                raise
            # shutdown destroyed the executor's guard condition (InvalidHandle), or already set it to None
            # (AttributeError in rclpy's handler: `gc.trigger()`), while a callback was finishing, or removed
            # the last node while the thread was waiting (RCLError "wait set is empty")

    def add(self, *nodes):
        for node in nodes:
            self.executor.add_node(node)
        return nodes[0] if len(nodes) == 1 else nodes

    def shutdown(self):
        self._stopping = True
        self.executor.shutdown(timeout_sec=10.0)  # a loaded machine can take seconds to finish a callback

    def destroy(self, nodes):
        """Stops spinning, then destroys the nodes: destroying one while the spin thread builds its wait
        set raises InvalidHandle in that thread."""
        self.shutdown()
        self._thread.join(timeout=10.0)
        for node in nodes:
            node.destroy_node()


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
        proc = NodeProcess(
            name=name,
            module=module,
            log_dir=tmp_path / 'logs',
            params_files=list(params_files),
            overrides=dict(overrides or {}),
            env=ros_environment(large_messages=large_messages),
            extra_args=list(extra_args),
        )
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()
        print(f'----- {proc.name} log ({proc.log_path}) -----\n{proc.log_text()[-4000:]}')


@pytest.fixture
def support_dir():
    return Path(__file__).parent / 'support'


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
    """A saved tiny checkpoint for the SO-101 (6 joints, the front camera), as policy_node loads it."""
    from asyncvla_ros.model import save_checkpoint

    model, processor = tiny_policy(camera_keys=('observation.images.front',))
    return save_checkpoint(model, processor, tmp_path_factory.mktemp('checkpoint') / 'tiny')


@pytest.fixture(scope='session')
def dataset_root(tmp_path_factory):
    """A 2-episode SO-101 expert dataset (LeRobot v3.0, 64x64 front camera), generated by the sim."""
    from asyncvla_ros.training.demonstrations import make_dataset

    root = tmp_path_factory.mktemp('data') / 'so101'
    result = make_dataset(root, episodes=2, seed=3, image_size=64)
    assert result['episodes'] == 2 and result['failed'] == 0
    return root
