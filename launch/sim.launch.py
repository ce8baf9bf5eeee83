"""AsyncVLA on the simulated SO-101 arm: sim_arm_node, policy_node and executor_node.

    ros2 launch asyncvla_ros sim.launch.py
    ros2 service call /executor_node/enable std_srvs/srv/SetBool "{data: true}"

On a machine without `ros2 launch`, `asyncvla bringup sim` starts the same nodes with the same files.
"""

import importlib.util
import os

from launch.actions import GroupAction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

_spec = importlib.util.spec_from_file_location(
    'asyncvla_launch', os.path.join(os.path.dirname(__file__), 'asyncvla.launch.py')
)
_asyncvla = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_asyncvla)  # the real-arm launch file: same nodes, same arguments
asyncvla_nodes, declare_arguments = _asyncvla.asyncvla_nodes, _asyncvla.declare_arguments


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare('asyncvla_ros'), 'config'])
    sim = Node(
        package='asyncvla_ros',
        executable='sim_arm_node',
        name='sim_arm_node',
        output='screen',
        parameters=[
            PathJoinSubstitution([config, 'sim_arm.yaml']),
            {'use_sim_time': LaunchConfiguration('use_sim_time')},
        ],
    )
    return LaunchDescription(
        [
            *declare_arguments(),
            GroupAction([PushRosNamespace(LaunchConfiguration('namespace')), sim, *asyncvla_nodes()]),
        ]
    )
