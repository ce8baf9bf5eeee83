"""AsyncVLA on a real arm: policy_node (GPU host or robot computer) and executor_node.

    ros2 launch asyncvla_ros asyncvla.launch.py robot_profile:=so101 checkpoint:=/path/to/checkpoint

Both nodes configure and activate themselves; the arm moves only after
`ros2 service call <namespace>/executor_node/enable std_srvs/srv/SetBool "{data: true}"`.
"""

from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.substitutions import FindPackageShare

from asyncvla_ros.nodes.params import EXECUTOR_NODE, POLICY_NODE
from launch import LaunchDescription


def _parameter(param):
    """A launch argument that sets a node parameter: its default and description are the schema's."""
    default = str(param.default).lower() if isinstance(param.default, bool) else str(param.default)
    return default, param.description


ARGUMENTS = {
    'robot_profile': _parameter(EXECUTOR_NODE['robot_profile']),
    'checkpoint': _parameter(POLICY_NODE['checkpoint']),
    # launch cannot pass an unset array, so this names the demo checkpoint's cameras (the node's unset default)
    'camera_topics': (
        "['camera/front/image_raw', 'camera/wrist/image_raw']",
        "Image topics for the policy, as a YAML list, one per checkpoint camera in the checkpoint's order.",
    ),
    'namespace': ('', 'Namespace for all nodes and (relative) topics, e.g. one per robot.'),
    'use_sim_time': ('false', 'Use /clock (bag replay, simulation).'),
    'command_interface': _parameter(EXECUTOR_NODE['command_interface']),
    'respawn_policy': (
        'false',
        'Restart policy_node 2 s after it dies; the executor holds the arm until chunks come again.',
    ),
    'start_policy': ('true', 'Start policy_node here (false on the robot computer when it runs on a GPU host).'),
    'start_executor': ('true', 'Start executor_node here (false on a GPU host that runs only the policy).'),
}
RESPAWN_DELAY_S = 2.0  # as `asyncvla bringup --respawn-policy`


def asyncvla_nodes():
    """The policy and executor nodes with the package's parameter files and the launch arguments."""
    config = PathJoinSubstitution([FindPackageShare('asyncvla_ros'), 'config'])
    use_sim_time = {'use_sim_time': LaunchConfiguration('use_sim_time')}
    policy = Node(
        package='asyncvla_ros',
        executable='policy_node',
        name='policy_node',
        output='screen',
        condition=IfCondition(LaunchConfiguration('start_policy')),
        respawn=LaunchConfiguration('respawn_policy'),
        respawn_delay=RESPAWN_DELAY_S,
        parameters=[
            PathJoinSubstitution([config, 'policy.yaml']),
            use_sim_time,
            {
                'checkpoint': LaunchConfiguration('checkpoint'),
                'robot_profile': LaunchConfiguration('robot_profile'),
                'camera_topics': LaunchConfiguration('camera_topics'),
            },
        ],
    )
    executor = Node(
        package='asyncvla_ros',
        executable='executor_node',
        name='executor_node',
        output='screen',
        condition=IfCondition(LaunchConfiguration('start_executor')),
        parameters=[
            PathJoinSubstitution([config, 'executor.yaml']),
            use_sim_time,
            {
                'robot_profile': LaunchConfiguration('robot_profile'),
                'command_interface': LaunchConfiguration('command_interface'),
            },
        ],
    )
    return [policy, executor]


def declare_arguments(overrides=None):
    defaults = {**{k: v[0] for k, v in ARGUMENTS.items()}, **(overrides or {})}
    return [
        DeclareLaunchArgument(name, default_value=defaults[name], description=text)
        for name, (_, text) in ARGUMENTS.items()
    ]


def generate_launch_description():
    return LaunchDescription(
        [
            *declare_arguments(),
            GroupAction([PushRosNamespace(LaunchConfiguration('namespace')), *asyncvla_nodes()]),
        ]
    )
