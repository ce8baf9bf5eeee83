"""The ROS package itself: dependencies declared, installed data files, entry points."""

import ast
import importlib.metadata
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_XML = ET.parse(ROOT / 'package.xml').getroot()
DEPENDS = {e.text for e in PACKAGE_XML if e.tag.endswith('depend')}


def _imported_top_level_modules():
    modules = {}
    for path in (ROOT / 'asyncvla_ros').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                modules.setdefault(name.split('.')[0], path.relative_to(ROOT))
    return modules


def test_package_xml_lists_every_ros_package_the_code_imports():
    distributions = importlib.metadata.packages_distributions()
    ros_modules = {
        m: f
        for m, f in _imported_top_level_modules().items()
        if any(d.startswith('ros-') for d in distributions.get(m, ()))
    }
    assert 'rclpy' in ros_modules, 'the scan found no ROS imports at all'
    missing = {m: str(f) for m, f in ros_modules.items() if m not in DEPENDS}
    assert not missing, f'ROS packages imported but not in package.xml: {missing}'


def test_package_xml_is_an_interface_package_built_by_ament_python():
    assert PACKAGE_XML.find('name').text == 'asyncvla_ros'
    assert PACKAGE_XML.find('export/build_type').text == 'ament_python'
    assert PACKAGE_XML.find('member_of_group').text == 'rosidl_interface_packages'
    assert {'rosidl_default_generators', 'rosidl_default_runtime', 'rclpy'} <= DEPENDS


@pytest.mark.parametrize('folder', ['launch', 'config'])
def test_install_ships_launch_and_config_files(folder):
    share = Path(sys.prefix) / 'share' / 'asyncvla_ros'
    files = [p.relative_to(ROOT) for p in (ROOT / folder).rglob('*') if p.is_file()]
    assert files, f'{folder}/ is empty'
    missing = [str(f) for f in files if not (share / f).is_file()]
    assert not missing, f'not installed under {share}: {missing}'
    assert (Path(sys.prefix) / 'share/ament_index/resource_index/packages/asyncvla_ros').is_file()


def test_console_scripts_resolve():
    eps = {
        ep.name: ep
        for ep in importlib.metadata.entry_points(group='console_scripts')
        if ep.value.startswith('asyncvla_ros.')
    }
    assert {'executor_node', 'sim_arm_node', 'policy_node', 'asyncvla'} <= set(eps)
    for ep in eps.values():
        assert callable(ep.load()), ep.name  # a missing module or main fails here


def test_colcon_builds_the_package_as_a_ros_install_would(tmp_path):
    """`colcon build` of the checkout against the pip ROS wheels: messages, `ros2 run` executables in
    lib/asyncvla_ros, launch/config/checkpoints in share/, and the built messages import."""
    import os
    import shutil
    import subprocess

    workspace = tmp_path / 'ws'
    source = workspace / 'src' / 'asyncvla_ros'
    ignored = shutil.ignore_patterns('.venv', 'build', 'install', 'log', 'runs', '.git', '__pycache__', '*.egg-info')
    shutil.copytree(ROOT, source, ignore=ignored)
    env = {**os.environ, 'AMENT_PREFIX_PATH': sys.prefix, 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}'}
    result = subprocess.run(
        ['colcon', 'build', '--event-handlers', 'console_direct-'],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    install = workspace / 'install' / 'asyncvla_ros'
    assert {'policy_node', 'executor_node', 'sim_arm_node', 'asyncvla'} <= {
        p.name for p in (install / 'lib/asyncvla_ros').iterdir()
    }
    for relative in (
        'launch/sim.launch.py',
        'config/executor.yaml',
        'config/robots/so101.yaml',
        'msg/ActionChunk.msg',
        'package.xml',
    ):
        assert (install / 'share/asyncvla_ros' / relative).is_file(), relative
    site = next(install.glob('lib/python3*/site-packages'))
    check = subprocess.run(
        [sys.executable, '-c', 'from asyncvla_ros.msg import ActionChunk; print(ActionChunk().num_steps)'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={
            **env,
            'PYTHONPATH': str(site),
            'LD_LIBRARY_PATH': f'{install / "lib"}:{os.environ.get("LD_LIBRARY_PATH", "")}',
        },
    )
    assert check.stdout.strip() == '0', check.stderr[-2000:]


def test_the_foxglove_layout_shows_topics_and_fields_the_package_publishes():
    """config/foxglove_layout.json: every panel placed is configured, and every message path names a topic of the
    graph and a field its message has (a renamed field would leave a panel blank)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from asyncvla_ros.msg import ExecutorState, PolicyStatus

    topics = {
        '/joint_states': JointState,
        '/asyncvla/executor_state': ExecutorState,
        '/asyncvla/policy_status': PolicyStatus,
        '/sim/task_phase': String,
        '/camera/front/image_raw': Image,
        '/camera/wrist/image_raw': Image,
        '/diagnostics': DiagnosticArray,
    }
    layout = json.loads((ROOT / 'config/foxglove_layout.json').read_text())

    def placed(tree):
        return [tree] if isinstance(tree, str) else placed(tree['first']) + placed(tree['second'])

    panels = placed(layout['layout'])
    assert sorted(panels) == sorted(layout['configById'])
    paths = [p['value'] for config in layout['configById'].values() for p in config.get('paths', [])]
    images = [c['imageMode']['imageTopic'] for c in layout['configById'].values() if 'imageMode' in c]
    assert len(paths) >= 10 and len(images) == 2
    for value in paths:
        topic, field = re.fullmatch(r'(/[\w/]+)\.(\w+)(\[\d+\])?', value).group(1, 2)
        assert field in topics[topic].get_fields_and_field_types(), value
    assert all(topic in topics for topic in images)


GPU_CHECK = ['bash', str(ROOT / 'bench' / 'gpu_check.sh')]


@pytest.mark.parametrize(
    'arguments, code, says',
    [
        (['--dry-run'], 0, 'bench/model_latency.py --preset qwen2.5-vl-3b --device cuda --compile reduce-overhead'),
        (['--dry-run', '--compile', 'max-autotune', '--repeats', '5'], 0, '--compile max-autotune --repeats 5'),
        (['--help'], 0, 'Exit codes'),
        (['--frobnicate'], 2, 'unknown argument --frobnicate'),
        (['--compile', 'fast'], 2, '--compile must be'),
        (['--repeats', 'x'], 2, '--repeats must be a positive integer'),
        (['--out'], 2, '--out needs a value'),
        (['--python', sys.executable], 3, 'no CUDA GPU visible'),  # CI's torch is the CPU build
    ],
)
def test_gpu_check_script_handles_its_arguments(arguments, code, says, tmp_path):
    """The parts of bench/gpu_check.sh that run without a GPU: arguments, the plan, the refusal without CUDA."""
    import subprocess

    import torch

    if code == 3 and torch.cuda.is_available():
        pytest.skip('this machine has a GPU: the script would run the real check')
    assert subprocess.run(['bash', '-n', GPU_CHECK[1]]).returncode == 0
    done = subprocess.run(
        [*GPU_CHECK, *arguments, '--out', str(tmp_path)] if code == 3 else [*GPU_CHECK, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code, done.stderr
    assert says in done.stdout + done.stderr
