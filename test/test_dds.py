"""Messages over real DDS between processes: the custom ActionChunk, domain isolation, camera images."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import rclpy
from conftest import DOMAIN_ID, OTHER_DOMAIN_ID

from asyncvla_ros.control.pacing import wait_until
from asyncvla_ros.msg import ActionChunk
from asyncvla_ros.tools.processes import ros_environment

SUPPORT = Path(__file__).parent / 'support'
sys.path.insert(0, str(SUPPORT))
from chunk_publisher import reference_chunk  # noqa: E402

pytestmark = pytest.mark.dds


def _collect(context, topic=ActionChunk, name='/asyncvla/action_chunk'):
    node = rclpy.create_node('collector', context=context)
    received, lock = [], threading.Lock()

    def on_msg(msg):
        with lock:
            received.append(msg)

    node.create_subscription(topic, name, on_msg, 10)
    return node, received


def test_action_chunk_crosses_processes_field_for_field(spinner, ros_context, node_process):
    node, received = _collect(ros_context)
    spinner.add(node)
    node_process('chunk_publisher', str(SUPPORT / 'chunk_publisher.py'))
    assert wait_until(lambda: len(received) >= 3, timeout=20), 'no ActionChunk arrived from the other process'
    msg = received[-1]
    expected = reference_chunk(msg.chunk_id)
    for field in ActionChunk.get_fields_and_field_types():
        assert getattr(msg, field) == getattr(expected, field), field
    assert msg.chunk_id >= 3 and list(msg.positions) == [0.1, -0.2, 0.3, -0.4, 0.5, -0.6]


def test_domains_are_isolated(spinner, ros_context, node_process):
    other = rclpy.Context()
    rclpy.init(context=other, domain_id=OTHER_DOMAIN_ID)
    try:
        from conftest import Spinner

        other_spinner = Spinner(other)
        same_node, same = _collect(ros_context)
        other_node, foreign = _collect(other)
        spinner.add(same_node)
        other_spinner.add(other_node)
        node_process('chunk_publisher', str(SUPPORT / 'chunk_publisher.py'))  # on DOMAIN_ID
        assert wait_until(lambda: len(same) >= 20, timeout=20)  # control: the same domain receives
        assert foreign == [], f'domain {OTHER_DOMAIN_ID} saw {len(foreign)} messages of domain {DOMAIN_ID}'
        other_spinner.shutdown()
    finally:
        other.try_shutdown()


def test_camera_images_cross_processes_with_the_shipped_profile():
    env = ros_environment(large_messages=True)
    receiver = subprocess.Popen(
        [sys.executable, str(SUPPORT / 'image_stream.py'), 'receive', '100', '40'],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    publisher = subprocess.Popen([sys.executable, str(SUPPORT / 'image_stream.py'), 'publish', '100', '30'], env=env)
    out, _ = receiver.communicate(timeout=60)
    publisher.wait(timeout=30)
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {'received': 100, 'intact': 100, 'in_order': True}
