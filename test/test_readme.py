"""The README's commands run as written: `asyncvla` ones parse with the real command line (every flag exists and
every value is accepted), make targets exist, launch files and their arguments exist, and `ros2 param set`
names a parameter with a value its schema takes. Read cold, a command that fails is a dead end."""

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

from asyncvla_ros.nodes.params import SCHEMAS
from asyncvla_ros.tools.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
PROGRAMS = ('asyncvla ', 'make ', 'ros2 ')


def readme_commands(text: str) -> list[str]:
    """Commands in fenced bash blocks (continuations joined, comments dropped) and in inline code (those with an
    option or an argument assignment: a bare `asyncvla train-rater` in a sentence names a command, it is not one)."""
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
            line = re.sub(r'\s+#.*$', '', line.strip())
            if line.startswith(PROGRAMS):
                commands.append(line)
    commands += [
        code
        for code in re.findall(r'`([^`\n]+)`', re.sub(r'```.*?```', '', text, flags=re.S))
        if code.startswith(PROGRAMS) and re.search(r' --|:=| \S+ \S+ ', code)
    ]
    return commands


def launch_arguments() -> set[str]:
    tree = ast.parse((ROOT / 'launch' / 'asyncvla.launch.py').read_text())
    assign = next(
        n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == 'ARGUMENTS'
    )
    return {key.value for key in assign.value.keys}


def check(command: str) -> None:
    words = shlex.split(command)
    if words[0] == 'asyncvla':
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as exc:
            raise AssertionError(f'{command!r} does not parse') from exc
    elif words[0] == 'make':
        targets = set(re.findall(r'^([\w-]+):', (ROOT / 'Makefile').read_text(), re.M))
        assert set(words[1:]) <= targets, f'{command!r}: no such make target'
    elif words[:2] == ['ros2', 'launch']:
        assert words[2] == 'asyncvla_ros' and (ROOT / 'launch' / words[3]).is_file(), command
        names = {w.split(':=')[0] for w in words[4:]}
        assert names <= launch_arguments(), f'{command!r}: unknown launch arguments {names - launch_arguments()}'
    elif words[:3] == ['ros2', 'param', 'set']:
        node, name, value = words[3].lstrip('/'), words[4], yaml.safe_load(words[5])
        assert SCHEMAS[node].check(name, value) is None, command
    elif words[:3] == ['ros2', 'service', 'call']:
        assert words[1:] and words[4] == 'std_srvs/srv/SetBool' and 'data' in yaml.safe_load(words[5]), command
    else:
        raise AssertionError(f'{command!r}: the README check does not know this program')


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_commands_and_stays_short():
    assert len(COMMANDS) >= 15 and len(README.read_text().splitlines()) <= 300


@pytest.mark.parametrize('command', COMMANDS)
def test_every_readme_command_runs_as_written(command):
    check(command)


@pytest.mark.parametrize(
    'command',
    [
        'asyncvla evaluate --closed-loop 2 --output x --no-such-flag',
        'asyncvla train --dataset d --output o --preset huge',
        'ros2 launch asyncvla_ros asyncvla.launch.py robot:=so101',
        'ros2 param set /policy_node confidence_threshold 3.0',
        'make no-such-target',
    ],
)
def test_the_check_catches_a_broken_command(command):
    with pytest.raises(AssertionError):
        check(command)
