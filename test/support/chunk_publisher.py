"""Publishes a fixed ActionChunk at 20 Hz on /asyncvla/action_chunk (chunk_id counts up) until stopped.
Used by the cross-process and domain-isolation tests."""

import sys

import rclpy
from rclpy.executors import ExternalShutdownException

from asyncvla_ros.msg import ActionChunk


def reference_chunk(chunk_id: int) -> ActionChunk:
    msg = ActionChunk()
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 12, 345, 'base_link'
    msg.chunk_id = chunk_id
    msg.start_time.sec, msg.start_time.nanosec = 13, 500_000_000
    msg.dt = 0.1
    msg.joint_names = ['a', 'b']
    msg.num_steps = 3
    msg.positions = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6]
    msg.confidence = [0.9, 0.25, 0.75]
    msg.refined = [False, True, False]
    msg.num_committed = 1
    return msg


def main():
    rclpy.init(args=sys.argv)
    node = rclpy.create_node('chunk_publisher')
    pub = node.create_publisher(ActionChunk, '/asyncvla/action_chunk', 10)
    count = [0]

    def tick():
        count[0] += 1
        pub.publish(reference_chunk(count[0]))

    node.create_timer(0.05, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
