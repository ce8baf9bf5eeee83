"""Parameter schemas: the one source of truth for every node's ROS parameters.

Each parameter is declared once here with its type, default, allowed range or choices, description
and whether it may change while the node is active. From this, the nodes declare their parameters
(with descriptors) and validate every set, the README tables are generated, and `config/*.yaml` is
checked. No rclpy here, so the schemas can be read and tested anywhere; `nodes/ros_params.py` binds
them to a node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from asyncvla_ros.model.interface import COMPILE_MODES

TYPES = ('bool', 'int', 'double', 'string', 'string_array', 'double_array')
_PYTHON_TYPES = {'bool': bool, 'int': int, 'double': float, 'string': str}


@dataclass(frozen=True)
class Param:
    """One ROS parameter. `runtime` parameters apply to the next chunk or tick; the others are read at
    configure and are refused while the node is active. A default of None declares the parameter
    with its type but no value ("unset": e.g. take the limits from the robot profile); ROS cannot
    type an empty array, so this is how an optional list is declared."""

    name: str
    type: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    runtime: bool = False

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f'{self.name}: unknown type {self.type!r}')
        reason = self.check(self.default)
        if reason:
            raise ValueError(f'{self.name}: default {self.default!r} is invalid: {reason}')

    def check(self, value: Any) -> str | None:
        """The reason `value` is not acceptable, or None."""
        if value is None:
            return None if self.default is None else 'a value is required'
        if self.type.endswith('_array'):
            item = str if self.type == 'string_array' else float
            if not isinstance(value, (list, tuple)):
                return f'expected a list of {self.type[:-6]}, got {type(value).__name__}'
            values = list(value)
        else:
            item = _PYTHON_TYPES[self.type]
            values = [value]
        for v in values:
            if item is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if item is int and isinstance(v, bool) or not isinstance(v, item):
                return f'expected {self.type}, got {type(v).__name__} {v!r}'
            if item is float and not math.isfinite(v):
                return f'{v} is not finite'
            if self.range is not None and not (self.range[0] <= v <= self.range[1]):
                return f'{v} is outside [{self.range[0]}, {self.range[1]}]'
            if self.choices is not None and v not in self.choices:
                return f'{v!r} is not one of {", ".join(self.choices)}'
        return None

    def constraint_text(self) -> str:
        if self.choices:
            return ' \\| '.join(self.choices)
        if self.range:
            return f'[{_fmt(self.range[0])}, {_fmt(self.range[1])}]'
        return ''


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) + '.0'
    return str(value)


class ParamSchema:
    """The parameters of one node."""

    def __init__(self, node: str, params: Sequence[Param]):
        self.node = node
        self.params = {p.name: p for p in params}
        if len(self.params) != len(params):
            raise ValueError(f'{node}: duplicate parameter names')

    def __iter__(self):
        return iter(self.params.values())

    def __getitem__(self, name: str) -> Param:
        return self.params[name]

    def check(self, name: str, value: Any, active: bool = False) -> str | None:
        """The reason setting `name` to `value` is refused, or None."""
        param = self.params.get(name)
        if param is None:
            return f'unknown parameter {name!r} for {self.node}'
        if active and not param.runtime:
            return f'{name} is read at configure: deactivate and clean up the node before changing it'
        reason = param.check(value)
        return f'{name}: {reason}' if reason else None

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self}

    def load_yaml(self, path) -> dict[str, Any]:
        """Values for this node from a ROS parameter file (`/**` or node-name sections), validated,
        on top of the defaults. Raises ValueError naming the file and the first bad entry."""
        with open(path) as f:
            document = yaml.safe_load(f) or {}
        values = self.defaults()
        for section, body in document.items():
            if section.strip('/') not in ('**', self.node) or not isinstance(body, dict):
                continue
            for name, value in (body.get('ros__parameters') or {}).items():
                reason = self.check(name, value)
                if reason:
                    raise ValueError(f'{path}: {reason}')
                values[name] = value
        return values

    def markdown_table(self) -> str:
        rows = ['| parameter | type | default | allowed | run time | description |', '|---|---|---|---|---|---|']
        for p in self:
            default = 'unset' if p.default is None else f'`{p.default!r}`' if p.default != '' else '`""`'
            rows.append(
                f'| `{p.name}` | {p.type} | {default} | {p.constraint_text()} | '
                f'{"yes" if p.runtime else "no"} | {p.description} |'
            )
        return '\n'.join(rows)


def camera_topics_for(camera_keys) -> list[str]:
    """The conventional image topic of each checkpoint camera: observation.images.<name> -> camera/<name>/image_raw."""
    return [f'camera/{key.rsplit(".", 1)[-1]}/image_raw' for key in camera_keys]


SO101_JOINTS = ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper']

POLICY_NODE = ParamSchema(
    'policy_node',
    [
        Param(
            'checkpoint',
            'string',
            '',
            'Checkpoint directory (safetensors + JSON); empty: the demo checkpoint shipped with the package.',
        ),
        Param(
            'device',
            'string',
            'auto',
            'Where the model runs; auto picks CUDA when present.',
            choices=('auto', 'cuda', 'cpu'),
        ),
        Param(
            'dtype',
            'string',
            'auto',
            'Model weights dtype; auto is bfloat16 on CUDA, float32 on CPU.',
            choices=('auto', 'bfloat16', 'float32'),
        ),
        Param(
            'attn_implementation',
            'string',
            'auto',
            "Attention kernel; auto is sdpa (FlashAttention-2 cannot take the action tokens' attention mask).",
            choices=('auto', 'sdpa', 'eager'),
        ),
        Param(
            'num_threads',
            'int',
            0,
            'CPU threads for the model (torch.set_num_threads); 0: one fewer than the CPU cores, at least 1.',
            range=(0, 1024),
        ),
        Param(
            'inference_process',
            'bool',
            True,
            "Run the model in a child process, so inference never holds the node's GIL; false: in a node thread.",
        ),
        Param(
            'compile',
            'string',
            'eager',
            'eager, or torch.compile the generation (vision tower, prefix pass, denoising loop, rater) at configure; '
            'reduce-overhead also captures CUDA graphs on a GPU. Configure then takes longer.',
            choices=COMPILE_MODES,
        ),
        Param(
            'warmup_image_height',
            'int',
            224,
            'Frame height of the chunk run at configure; with compile, frames of another size compile again '
            'on their first chunk.',
            range=(16, 4096),
        ),
        Param(
            'warmup_image_width',
            'int',
            224,
            'Frame width of the chunk run at configure (see warmup_image_height).',
            range=(16, 4096),
        ),
        Param(
            'camera_topics',
            'string_array',
            None,
            'Image topics (Image, or CompressedImage for names ending in /compressed), one per checkpoint camera '
            'in its '
            'order; unset: camera/<name>/image_raw for each checkpoint camera.',
        ),
        Param(
            'camera_keys',
            'string_array',
            None,
            "The checkpoint's camera keys in topic order, checked at configure; unset skips the check.",
        ),
        Param(
            'joint_names',
            'string_array',
            SO101_JOINTS,
            'Joints forming the state and action vector, in model order; matched by name in /joint_states.',
        ),
        Param(
            'robot_profile',
            'string',
            'so101',
            "Robot profile (a name in config/robots or a path) whose scale and offset map joint states to the policy's "
            'units; give the executor the same one.',
        ),
        Param(
            'instruction',
            'string',
            'pick up the purple block and place it on the green target',
            'Task instruction used until one arrives on /asyncvla/instruction.',
            runtime=True,
        ),
        Param('num_denoise_steps', 'int', 3, 'Euler steps for SFM.', range=(1, 100), runtime=True),
        Param(
            'num_denoise_steps_afm',
            'int',
            3,
            'Euler steps for the AFM regeneration of low-confidence steps.',
            range=(1, 100),
            runtime=True,
        ),
        Param(
            'self_correction',
            'bool',
            True,
            'Rate the SFM chunk and regenerate low-confidence steps with AFM.',
            runtime=True,
        ),
        Param(
            'confidence_threshold',
            'double',
            0.5,
            'Steps whose confidence is below this are regenerated.',
            range=(0.0, 1.0),
            runtime=True,
        ),
        Param('num_correction_rounds', 'int', 1, 'Rate-and-regenerate rounds per chunk.', range=(1, 5), runtime=True),
        Param(
            'delay_compensation',
            'bool',
            False,
            'Pass the steps that run during inference to the model as committed tokens.',
            runtime=True,
        ),
        Param(
            'refill_threshold',
            'int',
            2,
            'Request a chunk when the executor has this many steps left, or the measured delay plus one if more.',
            range=(0, 1000),
            runtime=True,
        ),
        Param(
            'rate_hz', 'double', 0.0, 'Fixed inference rate; 0 means refill-driven.', range=(0.0, 100.0), runtime=True
        ),
        Param(
            'max_observation_age_s',
            'double',
            0.5,
            'Skip inference when an input is older than this.',
            range=(0.001, 60.0),
            runtime=True,
        ),
        Param(
            'max_chunk_age_s',
            'double',
            1.0,
            'Drop a chunk instead of publishing it when its observation is older than this once inference ends '
            '(a stalled inference process); the executor holds meanwhile.',
            range=(0.01, 60.0),
            runtime=True,
        ),
        Param('seed', 'int', 0, 'Seed of the sampling noise; -1 seeds from the clock.', range=(-1, 2**31 - 1)),
        Param(
            'max_clock_offset_s',
            'double',
            0.02,
            "Warn on /diagnostics when the executor's host clock differs from this host's by more than this.",
            range=(0.001, 10.0),
            runtime=True,
        ),
    ],
)

EXECUTOR_NODE = ParamSchema(
    'executor_node',
    [
        Param(
            'robot_profile', 'string', 'so101', 'Robot profile: a name in config/robots or a path to a profile YAML.'
        ),
        Param('joint_names', 'string_array', None, 'Overrides the profile: joints in command order.'),
        Param(
            'position_min',
            'double_array',
            None,
            'Overrides the profile: lower position limits, one per joint (rad or m).',
            runtime=True,
        ),
        Param(
            'position_max',
            'double_array',
            None,
            'Overrides the profile: upper position limits, one per joint.',
            runtime=True,
        ),
        Param(
            'velocity_max',
            'double_array',
            None,
            'Overrides the profile: velocity limits, one per joint (per second).',
            runtime=True,
        ),
        Param(
            'acceleration_max',
            'double_array',
            None,
            'Overrides the profile: acceleration limits, one per joint (per second squared).',
            runtime=True,
        ),
        Param(
            'command_interface',
            'string',
            'joint_trajectory',
            'How commands reach the arm controller.',
            choices=('joint_trajectory', 'forward_command'),
        ),
        Param('command_topic', 'string', '', "Controller topic; empty: the profile's topic for the chosen interface."),
        Param(
            'trajectory_streaming',
            'bool',
            False,
            'joint_trajectory only: stream single points at control_rate_hz instead of multi-point trajectories.',
        ),
        Param(
            'trajectory_lead_s',
            'double',
            0.05,
            'joint_trajectory only: compute commands this far ahead (at least two control periods), so that each '
            'trajectory '
            'reaches the controller before its first point; chunks take effect that much later.',
            range=(0.0, 1.0),
        ),
        Param('control_rate_hz', 'double', 100.0, 'Command and safety-filter rate.', range=(1.0, 1000.0), runtime=True),
        Param(
            'realtime_priority',
            'int',
            50,
            'SCHED_FIFO priority of the control thread (needs CAP_SYS_NICE or rtprio); 0 for normal scheduling.',
            range=(0, 99),
        ),
        Param('state_rate_hz', 'double', 50.0, 'ExecutorState publication rate.', range=(1.0, 1000.0)),
        Param(
            'interpolation',
            'string',
            'cubic',
            'Interpolant through the chunk steps.',
            choices=('linear', 'cubic', 'quintic'),
            runtime=True,
        ),
        Param(
            'watchdog_timeout_s',
            'double',
            2.0,
            'Hold when no chunk has arrived for this long, even if the plan has steps left.',
            range=(0.01, 600.0),
            runtime=True,
        ),
        Param(
            'max_joint_state_age_s',
            'double',
            0.2,
            'Hold when the newest joint state is older than this.',
            range=(0.001, 10.0),
            runtime=True,
        ),
        Param(
            'max_chunk_delay_s',
            'double',
            1.0,
            'Reject chunks whose newest step is already this far in the past.',
            range=(0.0, 60.0),
            runtime=True,
        ),
        Param(
            'chunk_fade_per_lateness',
            'double',
            1.5,
            'Fade a new chunk in from the running plan over this many times its lateness (how long after its first '
            'step '
            'was due it arrived); 0 switches at once.',
            range=(0.0, 10.0),
            runtime=True,
        ),
        Param('dry_run', 'bool', False, 'Publish commands only on ~/preview, never to the controller.', runtime=True),
        Param('start_enabled', 'bool', False, 'Enable commanding at activation; otherwise wait for ~/enable.'),
        Param(
            'ramp_in_s',
            'double',
            1.0,
            'After enable, blend from the measured position into the plan over this time.',
            range=(0.0, 30.0),
            runtime=True,
        ),
    ],
)

SIM_ARM_NODE = ParamSchema(
    'sim_arm_node',
    [
        Param(
            'seed',
            'int',
            0,
            'Scene seed: the scene at start and the first ~/reset after it is set come from seed, the k-th reset from '
            'seed + k - 1.',
            range=(0, 2**31 - 1),
            runtime=True,
        ),
        Param(
            'camera_names',
            'string_array',
            ['front', 'wrist'],
            'Cameras published on /camera/<name>/image_raw: front (the workspace) and wrist (on the gripper).',
        ),
        Param('image_width', 'int', 224, 'Camera image width (pixels).', range=(16, 1920)),
        Param('image_height', 'int', 224, 'Camera image height (pixels).', range=(16, 1080)),
        Param('camera_rate_hz', 'double', 10.0, 'Camera frame rate; 0 disables the camera.', range=(0.0, 60.0)),
        Param(
            'camera_transport',
            'string',
            'raw',
            'raw: camera/<name>/image_raw; compressed: JPEG on camera/<name>/image_raw/compressed; both.',
            choices=('raw', 'compressed', 'both'),
        ),
        Param('jpeg_quality', 'int', 90, 'JPEG quality of the compressed camera topics.', range=(1, 100)),
        Param(
            'light_meshes',
            'bool',
            True,
            'Draw the cameras with decimated SO-101 meshes (cheaper to render); false draws the full CAD meshes.',
        ),
        Param(
            'joint_state_rate_hz',
            'double',
            100.0,
            'Joint state rate (the sim advances in steps of this period).',
            range=(1.0, 1000.0),
        ),
        Param(
            'real_time_factor',
            'double',
            1.0,
            'Sim seconds per wall second; 0 runs as fast as possible.',
            range=(0.0, 100.0),
        ),
        Param('publish_clock', 'bool', False, 'Publish /clock with sim time (for use_sim_time).'),
    ],
)

SCHEMAS = {s.node: s for s in (POLICY_NODE, EXECUTOR_NODE, SIM_ARM_NODE)}


def render_markdown() -> str:
    """docs/parameters.md: every node's table."""
    sections = [f'## {node}\n\n{schema.markdown_table()}\n' for node, schema in SCHEMAS.items()]
    return (
        '# Parameters\n\nGenerated from `asyncvla_ros/nodes/params.py` by `asyncvla docs`: edit the schema, not this '
        'file. A set with an invalid value is refused with the reason; a parameter that is not a run-time one is '
        'refused while the node is active. `config/<node>.yaml` holds the same defaults.\n\n' + '\n'.join(sections)
    )


def render_yaml(schema: ParamSchema, values: dict[str, Any] | None = None) -> str:
    """A ROS parameter file for `schema` with each description as a comment; `values` override the
    defaults (so a regenerated file keeps its tuned values)."""
    values = {**schema.defaults(), **(values or {})}
    lines = [
        f'# {schema.node} parameters (generated from asyncvla_ros/nodes/params.py: `asyncvla docs`).',
        '/**:',
        '  ros__parameters:',
    ]
    for p in schema:
        lines.append(
            f'    # {p.description}'
            + (f' Allowed: {p.constraint_text().replace(chr(92), "")}.' if p.constraint_text() else '')
        )
        if values[p.name] is None:
            lines.append(f'    # {p.name}: unset')
        else:
            lines.append(
                f'    {yaml.safe_dump({p.name: values[p.name]}, default_flow_style=True, width=1000).strip()[1:-1]}'
            )
    return '\n'.join(lines) + '\n'
