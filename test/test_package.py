"""The ROS package itself: dependencies declared, installed data files, entry points."""
import ast
import importlib.metadata
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

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
    ros_modules = {m: f for m, f in _imported_top_level_modules().items()
                   if any(d.startswith('ros-') for d in distributions.get(m, ()))}
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
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group='console_scripts')
           if ep.value.startswith('asyncvla_ros.')}
    assert {'executor_node', 'sim_arm_node', 'policy_node', 'asyncvla'} <= set(eps)
    for ep in eps.values():
        module = ep.value.split(':')[0]
        if (ROOT / (module.replace('.', '/') + '.py')).exists():
            assert callable(ep.load()), ep.name
