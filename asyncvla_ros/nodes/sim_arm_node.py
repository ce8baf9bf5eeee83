"""sim_arm_node: the MuJoCo SO-101 (asyncvla_ros/sim) as a ROS robot with ros2_control-like topics.

Publishes /joint_states at the sim rate and /camera/<name>/image_raw (rgb8) per camera; takes
/arm_controller/joint_trajectory (followed like a joint_trajectory_controller) and
/forward_position_controller/commands; ~/reset (std_srvs/Trigger) starts a new episode,
/sim/task_success reports the pick-and-place result and /sim/task_phase how far the episode got (none,
reached, carried, placed), /clock is published on request.
"""

from __future__ import annotations

import json
import threading

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from asyncvla_ros.control.observation import encode_jpeg
from asyncvla_ros.nodes.conversions import to_seconds, to_time
from asyncvla_ros.nodes.loops import NodeLoop, run_node
from asyncvla_ros.nodes.params import SIM_ARM_NODE
from asyncvla_ros.nodes.ros_params import BoundParams
from asyncvla_ros.sim.so101 import CAMERAS, JOINT_NAMES, SO101Plant
from asyncvla_ros.sim.trajectory import TrajectoryFollower


class SimArmNode(Node):
    def __init__(self, **kwargs):
        super().__init__('sim_arm_node', **kwargs)
        self.p = BoundParams(self, SIM_ARM_NODE, is_active=lambda: True, on_change=self._on_params).values()
        self.plant = SO101Plant(
            self.p['seed'],
            self.p['image_width'],
            self.p['image_height'],
            render=self.p['camera_rate_hz'] > 0,
            light_meshes=self.p['light_meshes'],
        )
        self.lock = threading.Lock()
        self.follower = TrajectoryFollower()
        self.episode = 0
        self.sim_time = 0.0  # monotonic across resets, for /clock
        self.joint_pub = self.create_publisher(JointState, 'joint_states', qos_profile_sensor_data)
        unknown = set(self.p['camera_names']) - set(CAMERAS)
        if unknown:
            raise ValueError(f'camera_names: no camera {sorted(unknown)} in the sim (it has {list(CAMERAS)})')
        transport = self.p['camera_transport']
        self.cameras = list(self.p['camera_names'])
        self.raw_pubs = {
            name: self.create_publisher(Image, f'camera/{name}/image_raw', 5)
            for name in self.cameras
            if transport in ('raw', 'both')
        }
        self.compressed_pubs = {
            name: self.create_publisher(CompressedImage, f'camera/{name}/image_raw/compressed', 5)
            for name in self.cameras
            if transport in ('compressed', 'both')
        }
        self.success_pub = self.create_publisher(Bool, 'sim/task_success', 10)
        self.phase_pub = self.create_publisher(String, 'sim/task_phase', 10)
        self.clock_pub = self.create_publisher(Clock, '/clock', 10) if self.p['publish_clock'] else None
        self.create_subscription(JointTrajectory, 'arm_controller/joint_trajectory', self._on_trajectory, 10)
        self.create_subscription(Float64MultiArray, 'forward_position_controller/commands', self._on_forward, 10)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self._steps = 0
        factor = self.p['real_time_factor']
        physics_period = 1.0 / self.p['joint_state_rate_hz']
        self._loops = [
            NodeLoop(self, 'physics', self._physics_step, lambda: physics_period / factor if factor else 0.0).start()
        ]
        if self.p['camera_rate_hz'] > 0:
            camera_period = 1.0 / self.p['camera_rate_hz']
            self._loops.append(
                NodeLoop(self, 'camera', self._camera_step, lambda: camera_period / factor if factor else 0.0).start()
            )
        self.get_logger().info(
            f'SO-101 sim: episode seed {self.p["seed"]}, joint states at {self.p["joint_state_rate_hz"]:.0f} Hz, '
            f'cameras {list(self.p["camera_names"])} {self.p["image_width"]}x{self.p["image_height"]} at '
            f'{self.p["camera_rate_hz"]:.0f} Hz, '
            f'real-time factor {self.p["real_time_factor"]}'
        )

    # --- clocks: sim time when /clock is published, else the node's clock
    def _stamp(self) -> float:
        return self.sim_time if self.clock_pub is not None else self.get_clock().now().nanoseconds * 1e-9

    def _physics_step(self) -> None:
        period = 1.0 / self.p['joint_state_rate_hz']
        report_phase = self._steps % max(int(0.1 / period), 1) == 0  # task phase and success at 10 Hz
        with self.lock:
            target = self.follower.target(self._stamp())
            if target is not None:
                self.plant.set_targets(target)
            self.plant.advance(period)
            self.sim_time += period
            q, v = self.plant.joint_positions, self.plant.joint_velocities
            phase = self.plant.phase() if report_phase else None
        msg = JointState(name=list(JOINT_NAMES), position=q.tolist(), velocity=v.tolist())
        msg.header.stamp = to_time(self._stamp())
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=msg.header.stamp))
        self.joint_pub.publish(msg)
        self._steps += 1
        if phase is not None:
            self.success_pub.publish(Bool(data=phase == 'placed'))
            self.phase_pub.publish(String(data=phase))

    def _camera_step(self) -> None:
        with self.lock:
            self.plant.capture(self.cameras)
            stamp = self._stamp()
        for name in self.cameras:
            frame = self.plant.draw(name)
            if name in self.raw_pubs:
                msg = Image(
                    height=frame.shape[0],
                    width=frame.shape[1],
                    encoding='rgb8',
                    step=frame.shape[1] * 3,
                    data=frame.tobytes(),
                )
                msg.header.stamp, msg.header.frame_id = to_time(stamp), f'{name}_camera'
                self.raw_pubs[name].publish(msg)
            if name in self.compressed_pubs:  # as image_transport's compressed plugin names the format
                msg = CompressedImage(
                    format='rgb8; jpeg compressed bgr8', data=encode_jpeg(frame, self.p['jpeg_quality'])
                )
                msg.header.stamp, msg.header.frame_id = to_time(stamp), f'{name}_camera'
                self.compressed_pubs[name].publish(msg)

    # --- commands
    def _on_forward(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=float)
        if data.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(data)):
            self.get_logger().warning(
                f'forward command ignored: need {len(JOINT_NAMES)} finite values, got {data.tolist()}'
            )
            return
        with self.lock:
            self.follower = TrajectoryFollower()
            self.plant.set_targets(data)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = list(msg.joint_names)
        if sorted(names) != sorted(JOINT_NAMES) or not msg.points:
            self.get_logger().warning(f'trajectory ignored: needs points for joints {list(JOINT_NAMES)}, got {names}')
            return
        order = [names.index(j) for j in JOINT_NAMES]
        positions = np.array([[p.positions[i] for i in order] for p in msg.points if len(p.positions) == len(names)])
        has_velocities = all(len(p.velocities) == len(names) for p in msg.points)
        velocities = np.array([[p.velocities[i] for i in order] for p in msg.points]) if has_velocities else None
        if len(positions) != len(msg.points) or not np.all(np.isfinite(positions)):
            self.get_logger().warning('trajectory ignored: malformed or non-finite points')
            return
        with self.lock:
            now = self._stamp()
            start = to_seconds(msg.header.stamp) or now
            times = start + np.array([to_seconds(p.time_from_start) for p in msg.points])
            if np.any(np.diff(times) <= 0):
                self.get_logger().warning('trajectory ignored: time_from_start must increase')
                return
            self.follower.replace(now, self.plant.targets, times, positions, velocities)

    def _on_params(self, changed: dict) -> None:
        with self.lock:
            self.p.update(changed)
            if 'seed' in changed:
                self.episode = 0

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            info = self.plant.reset(self.p['seed'] + self.episode)
            self.episode += 1
            self.follower = TrajectoryFollower()
        response.success, response.message = True, json.dumps(info)
        self.get_logger().info(f'reset: episode {self.episode} {response.message}')
        return response

    def destroy_node(self):
        for loop in self._loops:
            loop.stop()
        self.plant.close()
        return super().destroy_node()


def main(args=None) -> None:
    run_node(SimArmNode, args)


if __name__ == '__main__':
    main()
