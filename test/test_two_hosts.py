"""policy_node on one host and the robot's nodes on another, over DDS with the two-host profile and discovery by
static peers. Two network namespaces joined by a veth pair stand for the hosts (tools/netns.py); their addresses
exist only inside them, and the namespaces are removed afterwards, also when the test fails."""

import subprocess

import numpy as np
import pytest

from asyncvla_ros.control.profile import load_profile
from asyncvla_ros.paths import SOURCE_ROOT, config_path
from asyncvla_ros.tools.bags import open_bag
from asyncvla_ros.tools.netns import HostsUnavailable, inside, two_hosts
from asyncvla_ros.tools.processes import NodeProcess, cli_command, ros_environment

pytestmark = [pytest.mark.dds, pytest.mark.slow]

RECORD_S = 30


@pytest.fixture
def hosts():
    try:
        with two_hosts() as hosts:
            yield hosts
    except HostsUnavailable as exc:
        pytest.skip(str(exc))


def test_policy_on_one_host_and_the_arm_on_another(hosts, tiny_checkpoint, tmp_path):
    """The sim and the executor on the robot host, policy_node on the GPU host reading the sim's compressed
    front camera across the link: chunks flow, the executor runs them, and every command is inside the limits."""
    (robot, robot_address), (gpu, gpu_address) = hosts['robot'], hosts['gpu']
    robot_env = ros_environment(peers=[gpu_address])
    gpu_env = ros_environment(peers=[robot_address])
    on = {robot: inside(robot), gpu: inside(gpu)}
    nodes = [
        NodeProcess(
            'sim_arm_node',
            'asyncvla_ros.nodes.sim_arm_node',
            tmp_path,
            [config_path('sim_arm.yaml')],
            {'camera_names': ['front'], 'camera_transport': 'compressed'},
            robot_env,
            prefix=on[robot],
        ),
        NodeProcess(
            'executor_node',
            'asyncvla_ros.nodes.executor_node',
            tmp_path,
            [config_path('executor.yaml')],
            {'start_enabled': True},
            robot_env,
            prefix=on[robot],
        ),
        NodeProcess(
            'policy_node',
            'asyncvla_ros.nodes.policy_node',
            tmp_path,
            [config_path('policy.yaml')],
            {
                'checkpoint': str(tiny_checkpoint),
                'num_denoise_steps': 2,
                'camera_topics': ['camera/front/image_raw/compressed'],
            },
            gpu_env,
            prefix=on[gpu],
        ),
    ]
    bag = tmp_path / 'bag'
    try:
        for node in nodes:
            node.start()
        topics = ['/asyncvla/action_chunk', '/asyncvla/executor_state', '/arm_controller/joint_trajectory']
        record = subprocess.run(
            cli_command('record', '--output', bag, '--duration', RECORD_S, '--topics', *topics, prefix=on[robot]),
            env=robot_env,
            cwd=SOURCE_ROOT,
            capture_output=True,
            text=True,
            timeout=RECORD_S + 60,
        )
        assert record.returncode == 0, record.stderr[-2000:]
        assert all(node.running() for node in nodes), {n.name: n.log_text()[-1500:] for n in nodes if not n.running()}
    finally:
        for node in nodes:
            node.stop()
    logs = {node.name: node.log_text()[-1500:] for node in nodes}
    profile = load_profile('so101')
    chunks, modes, points = 0, set(), []
    with open_bag(bag) as reader:
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == '/asyncvla/action_chunk':
                chunks += 1
            elif connection.topic == '/asyncvla/executor_state':
                modes.add(msg.mode)
            else:
                points += [np.asarray(p.positions) for p in msg.points]
    assert chunks >= 3, (chunks, logs)
    assert 'executing' in modes and points, (modes, logs)
    positions = np.array(points)
    assert np.all(positions >= profile.position_min - 1e-6) and np.all(positions <= profile.position_max + 1e-6)
    assert np.ptp(positions, axis=0).max() > 1e-3, 'the arm never moved'
