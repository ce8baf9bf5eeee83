"""The layering the package keeps: the cores (control/, model/, sim/) import no ROS and nothing from nodes/ or
tools/, so they run and are tested without a ROS graph; nodes/ wires topics to the cores and imports nothing
from tools/ (the command-line tools build on the nodes, not the other way round). Read from the source, so a
lazy import inside a function counts as well."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / 'asyncvla_ros'
ROS = ('rclpy', 'launch', 'launch_ros', 'rosidl_runtime_py', 'asyncvla_ros.msg')
FORBIDDEN = {
    'control': ROS + ('asyncvla_ros.nodes', 'asyncvla_ros.tools'),
    'model': ROS + ('asyncvla_ros.nodes', 'asyncvla_ros.tools'),
    'sim': ROS + ('asyncvla_ros.nodes', 'asyncvla_ros.tools'),
    'nodes': ('asyncvla_ros.tools',),
}


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = '.'.join(path.relative_to(root.parent).with_suffix('').parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
                base = f'{parent}.{base}' if base else parent
            names.add(base)
            names.update(f'{base}.{alias.name}' for alias in node.names)
    return names


@pytest.mark.parametrize('layer', sorted(FORBIDDEN))
def test_a_layer_imports_nothing_it_must_not(layer):
    breaches = [
        f'{path.relative_to(PACKAGE.parent)} imports {name}'
        for path in sorted((PACKAGE / layer).rglob('*.py'))
        for name in sorted(imported_modules(path))
        if any(name == f or name.startswith(f + '.') for f in FORBIDDEN[layer])
    ]
    assert not breaches, breaches


def test_the_check_sees_a_lazy_relative_import(tmp_path):
    layer = tmp_path / 'asyncvla_ros' / 'nodes'
    layer.mkdir(parents=True)
    (layer / 'bad.py').write_text('def f():\n    from ..tools.processes import NodeProcess\n')
    assert 'asyncvla_ros.tools.processes' in imported_modules(layer / 'bad.py', tmp_path / 'asyncvla_ros')
