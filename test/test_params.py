"""Parameter schemas: declaration, validation over the real parameter services, docs and YAML in step."""

import json
import os
import re
from pathlib import Path

import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from asyncvla_ros.control.pacing import wait_until
from asyncvla_ros.nodes.params import SCHEMAS, Param, ParamSchema, render_markdown
from asyncvla_ros.nodes.ros_params import BoundParams

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ParamSchema(
    'demo_node',
    [
        Param('gain', 'double', 1.0, 'A gain.', range=(0.0, 10.0), runtime=True),
        Param('mode', 'string', 'fast', 'A mode.', choices=('fast', 'safe'), runtime=True),
        Param('model', 'string', 'a', 'Read at configure.'),
    ],
)


def _set(client, node, params):
    future = client.set_parameters(params)
    assert wait_until(future.done, timeout=10)
    return future.result().results


def test_parameters_are_validated_through_the_parameter_services(spinner, ros_context):
    active = [False]
    changes = []
    server = rclpy.create_node('demo_node', context=ros_context)
    bound = BoundParams(server, SCHEMA, is_active=lambda: active[0], on_change=changes.append)
    caller = rclpy.create_node('caller', context=ros_context)
    spinner.add(server, caller)
    client = AsyncParameterClient(caller, 'demo_node')
    assert client.wait_for_services(timeout_sec=10)

    (ok,) = _set(client, caller, [Parameter('gain', value=2.5)])
    assert ok.successful and bound.values()['gain'] == 2.5
    assert wait_until(lambda: {'gain': 2.5} in changes, timeout=5)

    (bad,) = _set(client, caller, [Parameter('gain', value=11.0)])
    assert not bad.successful and 'out of range' in bad.reason  # rclpy checks the descriptor range first
    (bad,) = _set(client, caller, [Parameter('mode', value='reckless')])
    assert not bad.successful and 'not one of fast, safe' in bad.reason
    active[0] = True
    (bad,) = _set(client, caller, [Parameter('model', value='b')])
    assert not bad.successful and 'read at configure' in bad.reason
    assert bound.values() == {'gain': 2.5, 'mode': 'fast', 'model': 'a'}


def test_invalid_override_at_declaration_is_refused(ros_context):
    node = rclpy.create_node('demo_node', context=ros_context, parameter_overrides=[Parameter('gain', value=-1.0)])
    with pytest.raises(Exception, match='gain'):
        BoundParams(node, SCHEMA, is_active=lambda: False)


@pytest.mark.parametrize(
    'value, reason',
    [
        (float('nan'), 'not finite'),
        (True, 'expected double'),
        ('x', 'expected double'),
        (-0.5, 'outside'),
    ],
)
def test_param_check_reasons(value, reason):
    assert reason in SCHEMA.check('gain', value)


def test_the_parameter_docs_match_the_schemas():
    assert (ROOT / 'docs' / 'parameters.md').read_text() == render_markdown(), (
        'docs/parameters.md drifted from the schemas: run `asyncvla docs`'
    )


@pytest.mark.parametrize('node', sorted(SCHEMAS))
def test_config_yaml_covers_and_satisfies_schema(node):
    path = ROOT / 'config' / f'{node.removesuffix("_node")}.yaml'
    import yaml

    keys = set(next(iter(yaml.safe_load(path.read_text()).values()))['ros__parameters'])
    unset = {
        re.match(r'\s*# (\w+): unset$', ln).group(1)
        for ln in path.read_text().splitlines()
        if re.match(r'\s*# (\w+): unset$', ln)
    }
    assert keys | unset == set(SCHEMAS[node].params), f'{path.name}: keys differ from the schema'
    assert unset == {p.name for p in SCHEMAS[node] if p.default is None}
    values = SCHEMAS[node].load_yaml(path)  # raises on an invalid value
    changed = {name: value for name, value in values.items() if value != SCHEMAS[node].defaults()[name]}
    assert not changed, f'{path.name} ships values other than the defaults the README documents: {changed}'


def test_the_closed_loop_evaluation_runs_policy_node_as_it_runs_by_default():
    """`asyncvla evaluate --closed-loop` stands in for policy_node: its settings default to policy_node's, or
    its figures describe a policy configured otherwise than the one a user launches."""
    from asyncvla_ros.tools.cli import build_parser

    args = build_parser().parse_args(['evaluate', '--closed-loop', '1', '--output', 'unused'])
    defaults = SCHEMAS['policy_node'].defaults()
    for name in (
        'refill_threshold',
        'confidence_threshold',
        'num_correction_rounds',
        'num_denoise_steps',
        'num_denoise_steps_afm',
    ):
        assert getattr(args, name) == defaults[name], name
    assert (args.delay_compensation == 'on') == defaults['delay_compensation']


@pytest.mark.parametrize('light', [True, False])
def test_sim_arm_node_draws_the_meshes_its_parameter_names(ros_context, light):
    from asyncvla_ros.nodes.sim_arm_node import SimArmNode

    node = SimArmNode(
        context=ros_context,
        parameter_overrides=[
            Parameter('light_meshes', value=light),
            Parameter('image_width', value=32),
            Parameter('image_height', value=32),
        ],
    )
    try:
        with node.lock:
            node.plant.capture()
        drawn = node.plant._drawn[0]
        assert (drawn is not node.plant.model) == light
        assert (drawn.nmeshface < node.plant.model.nmeshface) == light
    finally:
        node.destroy_node()


def test_setting_the_sim_seed_restarts_the_scene_count(ros_context):
    """Two runs that set the same seed get the same scenes (the demo compares its modes on them)."""
    from std_srvs.srv import Trigger

    from asyncvla_ros.nodes.sim_arm_node import SimArmNode

    node = SimArmNode(
        context=ros_context, parameter_overrides=[Parameter('seed', value=40), Parameter('camera_rate_hz', value=0.0)]
    )

    def reset():
        return json.loads(node._on_reset(Trigger.Request(), Trigger.Response()).message)

    try:
        first = [reset() for _ in range(2)]
        assert [r['seed'] for r in first] == [40, 41]  # the first reset draws the seed's own scene
        assert node.set_parameters([Parameter('seed', value=40)])[0].successful
        again = [reset() for _ in range(2)]
        assert again == first  # same seeds, same block and goal
        assert node.set_parameters([Parameter('seed', value=7)])[0].successful and reset()['seed'] == 7
    finally:
        node.destroy_node()


# Names whose flags and arguments mean something other than the node parameter (a training or scene seed).
OTHER_MEANINGS = {'seed'}


def restated_defaults(path: Path, names: dict) -> list[str]:
    """Literal defaults in `path` for node parameter names, where the schema's own default is what they say:
    function and dataclass defaults, argparse flags (`--name`) and launch arguments (`'name': (default, ...)`)."""
    import ast

    def restates(name, node):
        try:
            value = ast.literal_eval(node)
        except ValueError:
            return False  # computed, e.g. from the schema
        return (
            name in names
            and name not in OTHER_MEANINGS
            and value is not None
            and any(value == d or str(value).lower() == str(d).lower() for d in names[name])
        )

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        pairs = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args
            pairs += [(a.arg, d) for a, d in zip(args[len(args) - len(node.args.defaults) :], node.args.defaults)]
            pairs += [(a.arg, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            pairs.append((node.target.id, node.value))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, 'attr', None) == 'add_argument'
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).startswith('--')
        ):
            pairs += [(node.args[0].value[2:].replace('-', '_'), k.value) for k in node.keywords if k.arg == 'default']
        elif isinstance(node, ast.Dict):
            pairs += [
                (k.value, v.elts[0])
                for k, v in zip(node.keys, node.values)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Tuple) and v.elts
            ]
        found += [
            f'{os.path.relpath(path, ROOT)}:{node.lineno} {name}' for name, value in pairs if restates(name, value)
        ]
    return found


def test_no_default_is_restated_outside_the_schema():
    """The settings the cores take (ExecutorSettings, RequestSettings, Sampling, the closed loop's), the command
    line's flags and the launch arguments take their defaults from nodes/params.py, so one edit changes them all."""
    names = {}
    for schema in SCHEMAS.values():
        for param in schema:
            names.setdefault(param.name, []).append(param.default)
    sources = [
        p
        for p in (ROOT / 'asyncvla_ros').rglob('*.py')
        if p.parts[-2] in ('control', 'tools', 'nodes', 'training') and p.name != 'params.py'
    ] + sorted((ROOT / 'launch').glob('*.py'))
    breaches = [line for path in sources for line in restated_defaults(path, names)]
    assert not breaches, breaches


def test_the_restated_default_check_can_fail(tmp_path):
    path = tmp_path / 'restated.py'
    path.write_text(
        "def f(control_rate_hz=100.0, interpolation=PARAMS['interpolation']):\n    pass\n"
        "parser.add_argument('--robot-profile', default='so101')\nARGS = {'dry_run': ('false', 'x')}\n"
    )
    found = restated_defaults(
        path, {'control_rate_hz': [100.0], 'interpolation': ['cubic'], 'robot_profile': ['so101'], 'dry_run': [False]}
    )
    assert [line.split()[-1] for line in found] == ['control_rate_hz', 'robot_profile', 'dry_run']
