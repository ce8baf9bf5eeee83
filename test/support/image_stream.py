"""Camera-sized image stream between two processes: `publish N HZ` or `receive N TIMEOUT`.
The receiver prints one JSON line: frames received, frames intact, ids in order."""

import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
HEIGHT, WIDTH = 480, 640


def frame(i: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), i % 256, np.uint8)


def publish(node, count: int, rate_hz: float):
    pub = node.create_publisher(Image, '/camera/test/image_raw', QOS)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for i in range(count):
        msg = Image(height=HEIGHT, width=WIDTH, encoding='rgb8', step=WIDTH * 3, data=frame(i).tobytes())
        msg.header.frame_id = str(i)
        pub.publish(msg)
        time.sleep(1.0 / rate_hz)


def receive(node, count: int, timeout: float):
    got, intact = [], 0

    def on_image(msg):
        i = int(msg.header.frame_id)
        got.append(i)
        arr = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        nonlocal intact
        intact += int(np.array_equal(arr, frame(i)))

    node.create_subscription(Image, '/camera/test/image_raw', on_image, QOS)
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({'received': len(got), 'intact': intact, 'in_order': got == sorted(got)}), flush=True)


def main():
    rclpy.init(args=sys.argv)
    node = rclpy.create_node('image_stream')
    mode, count, value = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    (publish if mode == 'publish' else receive)(node, count, value)
    rclpy.try_shutdown()


if __name__ == '__main__':
    main()
