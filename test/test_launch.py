"""Launch files, checked statically (these machines have no `launch` package): every executable is an
installed entry point, every parameter file exists, every node parameter is in the schema, and every
launch argument is documented in the README."""

import ast
import configparser
import os
import re
from pathlib import Path

import pytest

from asyncvla_ros.nodes.params import SCHEMAS
from asyncvla_ros.tools.cli import RESPAWN_DELAY_S
from asyncvla_ros.tools.processes import cli_command

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))
SETUP = (ROOT / 'setup.py').read_text()
ENTRY_POINTS = dict(re.findall(r"'(\w+) = (asyncvla_ros[\w.]+):main'", SETUP))


def _calls(tree, name):
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name
    ]


def _keywords(call):
    return {k.arg: k.value for k in call.keywords}


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_nodes_are_entry_points_with_existing_parameter_files(path):
    tree = ast.parse(path.read_text())
    nodes = _calls(tree, 'Node')
    assert nodes or 'asyncvla_nodes' in path.read_text()
    for node in nodes:
        kw = _keywords(node)
        executable = kw['executable'].value
        assert kw['package'].value == 'asyncvla_ros'
        assert executable in ENTRY_POINTS, f'{executable} is not a console script in setup.py'
        module = ROOT / (ENTRY_POINTS[executable].replace('.', '/') + '.py')
        assert module.exists(), f'{executable}: {module} does not exist'
        for joined in _calls(node, 'PathJoinSubstitution'):
            parts = [e.value for e in joined.args[0].elts if isinstance(e, ast.Constant)]
            if parts and parts[-1].endswith('.yaml'):
                assert (ROOT / 'config' / parts[-1]).is_file(), f'{parts[-1]} does not exist in config/'
        schema = SCHEMAS[kw['name'].value]
        for params in _calls(node, 'dict') + [d for d in ast.walk(node) if isinstance(d, ast.Dict)]:
            for key in getattr(params, 'keys', []):
                if isinstance(key, ast.Constant) and key.value != 'use_sim_time':
                    assert key.value in schema.params, f'{key.value} is not a parameter of {schema.node}'


def test_every_launch_argument_is_documented_in_the_readme():
    readme = (ROOT / 'README.md').read_text()
    tree = ast.parse((ROOT / 'launch' / 'asyncvla.launch.py').read_text())
    arguments = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == 'ARGUMENTS')
    names = [k.value for k in arguments.value.keys]
    assert {'robot_profile', 'checkpoint', 'camera_topics', 'namespace', 'use_sim_time', 'command_interface'} <= set(
        names
    )
    for name in names:
        assert re.search(rf'\| `{name}` \|', readme), f'launch argument {name} is not in the README table'


def test_colcon_scripts_go_where_ros2_run_looks():
    config = configparser.ConfigParser()
    config.read(ROOT / 'setup.cfg')
    assert config['develop']['script_dir'] == config['install']['install_scripts'] == '$base/lib/asyncvla_ros'


def test_the_launch_files_respawn_the_policy_as_bringup_does():
    tree = ast.parse((ROOT / 'launch' / 'asyncvla.launch.py').read_text())
    delay = next(
        n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == 'RESPAWN_DELAY_S'
    )
    keywords = next(_keywords(call) for call in _calls(tree, 'Node') if _keywords(call)['name'].value == 'policy_node')
    assert keywords['respawn'].args[0].value == 'respawn_policy' and keywords['respawn_delay'].id == 'RESPAWN_DELAY_S'
    assert delay.value.value == RESPAWN_DELAY_S


def _children(pid: int) -> dict[int, str]:
    """Child processes of `pid` and their command lines (Linux /proc)."""
    children = Path(f'/proc/{pid}/task/{pid}/children').read_text().split()
    return {
        int(c): Path(f'/proc/{c}/cmdline').read_bytes().replace(b'\0', b' ').decode()
        for c in children
        if Path(f'/proc/{c}/cmdline').exists()
    }


def test_bringup_starts_the_sim_graph_respawns_a_dead_policy_and_ctrl_c_stops_it(
    tmp_path, tiny_checkpoint, spinner, ros_context
):
    """`asyncvla bringup sim --respawn-policy` as a user runs it: nodes come up over DDS, a killed
    policy_node is started again (the others keep running), Ctrl-C stops every process."""
    import signal
    import subprocess

    import rclpy

    from asyncvla_ros.control.pacing import wait_until
    from asyncvla_ros.msg import ExecutorState
    from asyncvla_ros.tools.processes import SOURCE_ROOT

    node = spinner.add(rclpy.create_node('bringup_probe', context=ros_context))
    states = []
    node.create_subscription(ExecutorState, 'asyncvla/executor_state', states.append, 10)
    proc = subprocess.Popen(
        cli_command(
            'bringup', 'sim', '--checkpoint', tiny_checkpoint, '--log-dir', tmp_path / 'logs', '--respawn-policy'
        ),
        cwd=SOURCE_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    policy_log = tmp_path / 'logs' / 'policy_node.log'
    configured = lambda: policy_log.read_text().count('configured:') if policy_log.exists() else 0  # noqa: E731
    try:
        assert wait_until(lambda: len(states) > 0, timeout=60), 'executor_node never published its state'
        assert wait_until(
            lambda: {'sim_arm_node', 'executor_node', 'policy_node'} <= set(node.get_node_names()), timeout=60
        )
        assert wait_until(lambda: configured() == 1, timeout=60), policy_log.read_text()
        before = _children(proc.pid)
        policy = next(pid for pid, cmd in before.items() if 'nodes.policy_node' in cmd)
        os.kill(policy, signal.SIGKILL)
        assert wait_until(lambda: configured() == 2, timeout=60), 'policy_node was not started again'
        after = _children(proc.pid)
        assert {pid for pid, cmd in after.items() if 'nodes.policy_node' in cmd} - {policy}, after
        assert {pid for pid, cmd in before.items() if 'nodes.policy_node' not in cmd} <= set(after), (
            'the other nodes were restarted'
        )
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert 'logs in' in out and 'stopped' in out and 'policy_node exited (code -9); restarting it' in out, out
    for name in ('sim_arm_node', 'executor_node', 'policy_node'):
        log = (tmp_path / 'logs' / f'{name}.log').read_text()
        assert 'Traceback' not in log, log
    assert proc.returncode == 0, out
