"""executor_node over real DDS: with the simulated arm (sim_arm_node, a separate process), a scripted
chunk source, both command interfaces, enable, watchdog, run-time parameters and bad input."""

import os
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool
from trajectory_checks import FollowerRecord
from trajectory_msgs.msg import JointTrajectory

from asyncvla_ros.control.chunk import Chunk
from asyncvla_ros.control.pacing import wait_until
from asyncvla_ros.control.profile import load_profile
from asyncvla_ros.msg import ActionChunk, ExecutorState
from asyncvla_ros.nodes.conversions import chunk_to_msg, to_seconds, to_time
from asyncvla_ros.nodes.executor_node import ExecutorNode
from asyncvla_ros.paths import config_path

PROFILE = load_profile('so101')
JOINTS = list(PROFILE.joint_names)
GOAL = np.array([0.4, -0.5, 0.6, 0.3, -0.2, 0.8])


class Probe:
    """Test-side node: publishes chunks and joint states, records what the executor and sim send."""

    def __init__(self, context, interface='joint_trajectory'):
        self.node = rclpy.create_node('probe', context=context)
        self.lock = threading.Lock()
        self.commands, self.states, self.joint_states, self.phases = [], [], [], []
        self.chunk_pub = self.node.create_publisher(ActionChunk, '/asyncvla/action_chunk', 10)
        self.joint_pub = self.node.create_publisher(JointState, '/joint_states', qos_profile_sensor_data)
        self.node.create_subscription(JointTrajectory, '/arm_controller/joint_trajectory', self._record, 10)
        self.node.create_subscription(Float64MultiArray, '/forward_position_controller/commands', self._record, 10)
        self.node.create_subscription(ExecutorState, '/asyncvla/executor_state', self._on_state, 10)
        self.node.create_subscription(JointState, '/joint_states', self._on_joints, qos_profile_sensor_data)
        self.node.create_subscription(String, '/sim/task_phase', lambda msg: self._keep(self.phases, msg.data), 10)
        self.enable_client = self.node.create_client(SetBool, '/executor_node/enable')
        self.next_id = 1

    def _keep(self, store, item):
        with self.lock:
            store.append(item)

    def _record(self, msg):
        self._keep(self.commands, (time.monotonic(), msg))

    def _on_state(self, msg):
        with self.lock:
            self.states.append((time.monotonic(), msg))

    def _on_joints(self, msg):
        with self.lock:
            self.joint_states.append(np.array(msg.position))

    def now(self):
        return self.node.get_clock().now().nanoseconds * 1e-9

    def act_as_arm(self, start=(0.0,) * 6, silent: threading.Event | None = None) -> threading.Event:
        """A perfect arm, in a thread: every 10 ms its joint state is the last forward command (`start` before
        any), except while `silent` is set. Set the event returned to stop it."""
        stop = threading.Event()

        def run():
            while not stop.is_set():
                if silent is None or not silent.is_set():
                    with self.lock:
                        last = self.commands[-1][1].data if self.commands else start
                    self.joint_pub.publish(JointState(name=JOINTS, position=list(last)))
                time.sleep(0.01)

        threading.Thread(target=run, daemon=True).start()
        return stop

    def send_chunk(self, positions, start_delay=0.05, dt=0.1, joints=JOINTS, **fields):
        chunk = Chunk(self.next_id, self.now() + start_delay, dt, list(joints), np.asarray(positions, float))
        msg = chunk_to_msg(chunk, self.now())
        for key, value in fields.items():
            setattr(msg, key, value)
        self.chunk_pub.publish(msg)
        self.next_id += 1
        return msg

    def enable(self, value=True):
        assert self.enable_client.wait_for_service(timeout_sec=10)
        future = self.enable_client.call_async(SetBool.Request(data=value))
        assert wait_until(future.done, timeout=10)
        return future.result()

    def enable_once_ready(self):
        """Enable, retried: the probe hearing the sim does not mean the executor has a fresh joint state
        (a late one on a loaded machine), and until it has, enable is refused."""
        return wait_until(lambda: self.enable().success, timeout=10, period=0.2)

    def latest_state(self):
        with self.lock:
            return self.states[-1][1] if self.states else None

    def measured(self):
        with self.lock:
            return self.joint_states[-1] if self.joint_states else None


def move_towards(probe, goal, seconds=3.0, steps=10, dt=0.1):
    """A scripted policy: chunks from the measured pose to `goal`, refilled every half chunk."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = probe.measured()
        alpha = np.linspace(0.0, 1.0, steps)[:, None]
        probe.send_chunk(start + alpha * (goal - start), dt=dt)
        time.sleep(steps * dt / 2)


def command_positions(probe):
    """Every commanded position vector (forward commands, or trajectory points)."""
    with probe.lock:
        messages = [m for _, m in probe.commands]
    out = []
    for msg in messages:
        if isinstance(msg, Float64MultiArray):
            out.append(np.array(msg.data))
        else:
            out.extend(np.array(p.positions) for p in msg.points)
    return np.array(out)


def _assert_held(probe, what, seconds=0.3):
    """The forward commands of the last `seconds` are many and all the same: the arm holds. The last one."""
    with probe.lock:
        held = np.array([m.data for t, m in probe.commands if t > time.monotonic() - seconds])
    assert len(held) > 10 and np.ptp(held, axis=0).max() < 1e-9, what
    return held[-1]


def _assert_moved_within_limits(probe, last, what, period=0.01):
    """Consecutive commands move at most one period at the velocity limit (a jump would not), and the last
    `last` of them moved; the largest step."""
    positions = command_positions(probe)
    steps = np.abs(np.diff(positions, axis=0))
    assert np.all(steps <= PROFILE.velocity_max * period * (1 + 1e-6) + 1e-9), f'a command step of {steps.max():.4f}'
    assert np.ptp(positions[-last:], axis=0).max() > 0.01, what
    return steps.max()


@pytest.fixture
def sim(node_process):
    proc = node_process(
        'sim_arm_node',
        'asyncvla_ros.nodes.sim_arm_node',
        [config_path('sim_arm.yaml')],
        overrides={'camera_rate_hz': 0.0},
    )
    return proc


@pytest.fixture
def executor_in_process(spinner, ros_context):
    nodes = []

    def start(**overrides):
        params = [Parameter(k, value=v) for k, v in overrides.items()]
        node = ExecutorNode(context=ros_context, parameter_overrides=params)
        spinner.add(node)
        node.trigger_configure()
        node.trigger_activate()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.trigger_deactivate()
    spinner.destroy(nodes)


@pytest.mark.parametrize(
    'interface, streaming', [('joint_trajectory', False), ('joint_trajectory', True), ('forward_command', False)]
)
def test_scripted_chunks_drive_the_sim_arm_to_a_target(sim, spinner, ros_context, node_process, interface, streaming):
    probe = Probe(ros_context)
    spinner.add(probe.node)
    node_process(
        'executor_node',
        'asyncvla_ros.nodes.executor_node',
        [config_path('executor.yaml')],
        overrides={'command_interface': interface, 'trajectory_streaming': streaming},
    )
    assert wait_until(lambda: probe.latest_state() is not None and probe.measured() is not None, timeout=30)
    move_towards(probe, GOAL, seconds=1.0)
    assert command_positions(probe).size == 0, 'the controller received commands before enable'
    assert probe.latest_state().mode == 'disabled'

    assert probe.enable_once_ready()
    move_towards(probe, GOAL, seconds=4.0)
    assert wait_until(lambda: np.max(np.abs(probe.measured() - GOAL)) < 0.03, timeout=5), (
        f'arm at {probe.measured()}, target {GOAL}'
    )
    commands = command_positions(probe)
    assert np.all(commands >= PROFILE.position_min - 1e-9) and np.all(commands <= PROFILE.position_max + 1e-9)
    # the sim says how far the episode got: moving in joint space with the jaws open picks up nothing
    assert probe.phases and set(probe.phases) <= {'none', 'reached'}, probe.phases


def test_on_sim_time_the_executor_ticks_once_per_period_of_the_sim_clock(
    spinner, ros_context, node_process, executor_in_process
):
    """A sim at a quarter of real time publishing /clock: the safety filter's period must be a period of sim
    time, so commands come at control_rate_hz of sim time (a loop paced by the wall clock alone sends four
    times as many, each a period's move in a quarter of the arm's time)."""
    probe = Probe(ros_context, 'forward_command')
    spinner.add(probe.node)
    node_process(
        'sim_arm_node',
        'asyncvla_ros.nodes.sim_arm_node',
        [config_path('sim_arm.yaml')],
        overrides={'camera_rate_hz': 0.0, 'real_time_factor': 0.25, 'publish_clock': True},
    )
    executor = executor_in_process(
        command_interface='forward_command', control_rate_hz=100.0, start_enabled=True, use_sim_time=True
    )
    assert wait_until(lambda: executor.core.enabled and len(probe.commands) > 5, timeout=30)

    def sim_now():
        return executor.get_clock().now().nanoseconds * 1e-9

    with probe.lock:
        before = len(probe.commands)
    started = sim_now()
    time.sleep(2.0)
    elapsed = sim_now() - started
    with probe.lock:
        count = len(probe.commands) - before
    assert 0.1 < elapsed < 1.0, f'{elapsed:.2f} s of sim time in 2 s of wall time'
    assert 0.7 * elapsed * 100 <= count <= 1.3 * elapsed * 100 + 2, f'{count} commands in {elapsed:.2f} s of sim time'


def test_executor_holds_when_the_chunk_source_stops(spinner, ros_context, executor_in_process):
    probe = Probe(ros_context)
    spinner.add(probe.node)
    executor = executor_in_process(
        command_interface='forward_command',
        watchdog_timeout_s=0.5,
        control_rate_hz=100.0,
        start_enabled=True,
        max_joint_state_age_s=1.0,
    )
    stop = probe.act_as_arm()
    try:
        assert wait_until(lambda: executor.core.enabled, timeout=10)
        # long chunks (10 s), so only the watchdog can stop the arm
        for _ in range(4):
            time.sleep(0.2)
            probe.send_chunk(np.linspace(np.zeros(6), GOAL, 100), dt=0.1)
            last_chunk_at = time.monotonic()
        assert wait_until(lambda: probe.latest_state().mode == 'holding', timeout=3)
        with probe.lock:
            hold_at = next(t for t, s in probe.states if t > last_chunk_at and s.mode == 'holding')
        # ExecutorState is published at 50 Hz: allow one state period on top of the control period
        assert 0.5 - 0.05 <= hold_at - last_chunk_at <= 0.5 + 0.01 + 0.02 + 0.05, (
            f'held after {hold_at - last_chunk_at:.3f} s'
        )
        print(f'watchdog hold measured after {hold_at - last_chunk_at:.3f} s (timeout 0.5 s)')
        time.sleep(0.4)
        held = _assert_held(probe, 'the arm keeps moving while holding', seconds=0.2)
        assert np.max(np.abs(held)) > 0.01, 'the arm never moved: the test proves nothing'
    finally:
        stop.set()


@pytest.fixture
def perfect_arm(spinner, ros_context):
    """Probe plus a joint-state source that reports the last forward command (an ideal arm)."""
    probe = Probe(ros_context)
    spinner.add(probe.node)
    stop = probe.act_as_arm(start=(0.1, -0.2, 0.2, 0.1, 0.0, 0.3))
    yield probe
    stop.set()


def _set_params(node, probe, **values):
    client = AsyncParameterClient(probe.node, node.get_name())
    assert client.wait_for_services(timeout_sec=10)
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    assert wait_until(future.done, timeout=10)
    return future.result().results


def _command_rate(probe, seconds=1.0):
    with probe.lock:
        before = len(probe.commands)
    time.sleep(seconds)
    with probe.lock:
        return (len(probe.commands) - before) / seconds


def test_run_time_parameters_take_effect(perfect_arm, executor_in_process):
    probe = perfect_arm
    executor = executor_in_process(command_interface='forward_command', start_enabled=True, control_rate_hz=100.0)
    assert wait_until(lambda: executor.core.enabled, timeout=10)
    assert 80 <= _command_rate(probe) <= 110

    assert all(r.successful for r in _set_params(executor, probe, control_rate_hz=40.0))
    time.sleep(0.2)
    assert 30 <= _command_rate(probe) <= 45

    assert all(r.successful for r in _set_params(executor, probe, interpolation='linear', velocity_max=[0.2] * 6))
    probe.send_chunk(np.linspace(probe.measured(), GOAL, 10), dt=0.1)
    assert wait_until(lambda: executor.core.timeline.chunk is not None, timeout=5)
    assert executor.core.timeline.interpolant._spline.k == 1  # the new chunk is interpolated linearly
    time.sleep(1.0)
    commands = command_positions(probe)[-30:]
    speeds = np.abs(np.diff(commands, axis=0)) * 40.0
    assert speeds.max() <= 0.2 * (1 + 1e-6) and speeds.max() > 0.15  # moving, at the new limit

    for values, reason in [
        ({'control_rate_hz': 0.0}, 'range'),
        ({'interpolation': 'spline'}, 'not one of'),
        ({'velocity_max': [1.0, 2.0]}, 'needs 6 finite values'),
        ({'acceleration_max': [-1.0] * 6}, 'positive'),
        ({'robot_profile': 'other'}, 'read at configure'),
    ]:
        (result,) = _set_params(executor, probe, **values)
        assert not result.successful and reason in result.reason, (values, result.reason)
    assert executor.core.settings.interpolation == 'linear' and executor.core.filter.period == pytest.approx(1 / 40)


def _chunk_msg(probe, **changes):
    msg = chunk_to_msg(Chunk(probe.next_id, probe.now() + 0.05, 0.1, JOINTS, np.tile(GOAL, (10, 1))), probe.now())
    probe.next_id += 1
    for key, value in changes.items():
        setattr(msg, key, value)
    return msg


BAD_CHUNKS = {
    'NaN position': (lambda p: _chunk_msg(p, positions=[float('nan')] * 60), 'NaN'),
    'inf position': (lambda p: _chunk_msg(p, positions=[float('inf')] + [0.0] * 59), 'contain inf'),
    'dt zero': (lambda p: _chunk_msg(p, dt=0.0), 'dt must be'),
    'dt negative': (lambda p: _chunk_msg(p, dt=-0.1), 'dt must be'),
    'positions too short': (lambda p: _chunk_msg(p, positions=[0.0] * 59), 'expected num_steps'),
    'num_steps zero': (lambda p: _chunk_msg(p, num_steps=0, positions=[]), 'num_steps is 0'),
    'unknown joint': (lambda p: _chunk_msg(p, joint_names=JOINTS[:5] + ['elbow']), 'unknown'),
    'missing joint': (lambda p: _chunk_msg(p, joint_names=JOINTS[:5], num_steps=12, positions=[0.0] * 60), 'missing'),
    'duplicate joint': (lambda p: _chunk_msg(p, joint_names=JOINTS[:5] + ['wrist_roll']), 'duplicate'),
    'num_committed too large': (lambda p: _chunk_msg(p, num_committed=10), 'num_committed'),
    'confidence length': (lambda p: _chunk_msg(p, confidence=[0.5] * 3), 'confidence/refined'),
    'old chunk id': (lambda p: _chunk_msg(p, chunk_id=1), 'not newer'),
    'stale chunk': (
        lambda p: _chunk_msg(
            p, start_time=chunk_to_msg(Chunk(0, p.now() - 30, 0.1, JOINTS, np.zeros((1, 6))), 0).start_time
        ),
        'too old',
    ),
}
BAD_JOINT_STATES = {
    'NaN joint state': (JointState(name=JOINTS, position=[float('nan')] * 6), 'NaN'),
    'missing joint in state': (JointState(name=JOINTS[:5], position=[0.0] * 5), 'missing joints'),
    'names and positions differ': (JointState(name=JOINTS, position=[0.0] * 5), '6 names but 5 positions'),
}


def test_bad_input_matrix(perfect_arm, executor_in_process, capfd):
    """Every bad input: no crash, the plan and the arm stay safe, and a log line gives the reason."""
    probe = perfect_arm
    executor = executor_in_process(command_interface='forward_command', start_enabled=True)
    assert wait_until(lambda: executor.core.enabled, timeout=10)
    probe.send_chunk(np.linspace(probe.measured(), probe.measured() + 0.05, 10), dt=0.1)  # a good plan: chunk 1
    assert wait_until(lambda: executor.core.timeline.chunk is not None, timeout=5)
    probe.next_id = 5
    probe.send_chunk(np.linspace(probe.measured(), probe.measured() + 0.05, 10), dt=0.1)  # chunk 5 runs
    assert wait_until(lambda: executor.core.timeline.chunk.chunk_id == 5, timeout=5)
    failures = []
    for name, (make, reason) in BAD_CHUNKS.items():
        capfd.readouterr()
        plan = executor.core.timeline.interpolant
        probe.chunk_pub.publish(make(probe))
        if not wait_until(lambda reason=reason: reason in capfd.readouterr().err, timeout=3):
            failures.append(f'{name}: no log line with {reason!r}')
        if executor.core.timeline.interpolant is not plan:
            failures.append(f'{name}: the plan changed')
    for name, (msg, reason) in BAD_JOINT_STATES.items():
        capfd.readouterr()
        probe.joint_pub.publish(msg)
        if not wait_until(lambda reason=reason: reason in capfd.readouterr().err, timeout=3):
            failures.append(f'{name}: no log line with {reason!r}')
    # the same bad chunk again within 5 s: rejected and counted, but not logged again (inputs come at 10-500 Hz)
    for _ in range(2):  # the second is within 5 s of the first
        rejected = executor.core.rejected_chunks
        capfd.readouterr()
        probe.chunk_pub.publish(BAD_CHUNKS['dt zero'][0](probe))
        assert wait_until(lambda rejected=rejected: executor.core.rejected_chunks == rejected + 1, timeout=3)
    time.sleep(0.2)
    assert 'dt must be' not in capfd.readouterr().err
    # a valid chunk far outside the limits: executed, but every command stays inside them
    probe.send_chunk(np.tile([5.0, -5.0, 5.0, -5.0, 5.0, 5.0], (10, 1)), dt=0.1)
    time.sleep(1.0)
    commands = command_positions(probe)
    inside = np.all(commands >= PROFILE.position_min - 1e-9) and np.all(commands <= PROFILE.position_max + 1e-9)
    assert not failures and inside, failures
    assert executor.core.enabled and executor.core.rejected_chunks >= len(BAD_CHUNKS)
    assert probe.latest_state().limit_events > 0


def test_a_failing_control_step_disables_and_an_enable_resumes(perfect_arm, executor_in_process, capfd):
    probe = perfect_arm
    executor = executor_in_process(command_interface='forward_command', start_enabled=True)
    assert wait_until(lambda: executor.core.enabled, timeout=10)
    assert _command_rate(probe, 0.5) > 20
    tick, failures = executor.core.tick, [ValueError('injected fault')]

    def failing(now):
        if failures:
            raise failures.pop()
        return tick(now)

    executor.core.tick = failing
    assert wait_until(lambda: not executor.core.enabled, timeout=5)
    assert wait_until(lambda: probe.latest_state().mode == 'disabled', timeout=5)
    assert _command_rate(probe, 0.5) == 0, 'commands after the fault'
    assert probe.enable_once_ready()
    assert _command_rate(probe, 0.5) > 20, 'the control loop did not survive the fault'
    assert 'control step failed' in capfd.readouterr().err


def test_disabling_mid_motion_brakes_the_arm_to_rest_in_trajectory_mode(sim, spinner, ros_context, node_process):
    """A multi-point trajectory already sent would run to its end after the commands stop: the disable
    replaces it with a braking trajectory that ends at rest."""
    probe = Probe(ros_context)
    spinner.add(probe.node)
    node_process(
        'executor_node',
        'asyncvla_ros.nodes.executor_node',
        [config_path('executor.yaml')],
        # late joint states on a loaded machine would make it hold (and stop) before the disable
        overrides={
            'command_interface': 'joint_trajectory',
            'trajectory_streaming': False,
            'max_joint_state_age_s': 2.0,
        },
    )
    assert wait_until(lambda: probe.latest_state() is not None and probe.measured() is not None, timeout=30)
    assert probe.enable_once_ready()
    start = probe.measured()
    probe.send_chunk(np.linspace(start, GOAL, 20), dt=0.15)  # 3 s to the goal, in one trajectory
    assert wait_until(lambda: np.max(np.abs(probe.measured() - start)) > 0.05, timeout=5), 'the arm never moved'
    assert probe.latest_state().mode == 'executing'
    with probe.lock:
        sent = len(probe.commands)
    assert 'braking' in probe.enable(False).message
    assert wait_until(lambda: probe.latest_state().mode == 'disabled', timeout=3)
    with probe.lock:
        after = [m for _, m in probe.commands[sent:]]
    assert len(after) == 1 and np.all(np.array(after[0].points[-1].velocities) == 0.0), 'no braking trajectory'
    time.sleep(1.0)
    stopped = probe.measured()
    time.sleep(0.5)
    assert np.max(np.abs(probe.measured() - stopped)) < 0.01, 'the arm still moves after the disable'
    travelled, total = np.linalg.norm(stopped - start), np.linalg.norm(GOAL - start)
    assert travelled < 0.6 * total, f'the arm went on towards the goal ({travelled:.2f} of {total:.2f} rad)'


def test_each_trajectory_continues_the_one_it_replaces_for_a_trajectory_controller(spinner, ros_context, node_process):
    """joint_trajectory mode over DDS with a plausible policy: an 8-step chunk every 0.3 s, each a smooth path
    from where the arm is towards a new goal, so every chunk changes the plan. A controller that follows each
    trajectory by its header stamp and time_from_start, from the desired state it has (trajectory_checks),
    is never asked for a position jump at a seam, a velocity jump at one it received in time, or a point beyond
    the limits."""
    probe = Probe(ros_context)
    spinner.add(probe.node)
    period = 0.01
    controller, lock, stop = FollowerRecord(PROFILE, period), threading.Lock(), threading.Event()
    start = np.array([0.1, -0.2, 0.2, 0.1, 0.0, 0.3])

    def on_trajectory(msg, info):
        # a controller takes a trajectory at its next update after the middleware received it; this process's
        # Python callback can run tens of ms later on a loaded machine, a controller's does not
        taken_at = info['received_timestamp'] * 1e-9 + period
        stamp = to_seconds(msg.header.stamp)
        times = np.array([stamp + to_seconds(p.time_from_start) for p in msg.points])
        with lock:
            controller.receive(
                taken_at,
                times,
                np.array([p.positions for p in msg.points]),
                np.array([p.velocities for p in msg.points]),
            )

    def arm():  # a perfect arm: where the controller's trajectory is
        while not stop.is_set():
            with lock:
                target = controller.follower.target(probe.now())
            probe.joint_pub.publish(JointState(name=JOINTS, position=list(start if target is None else target)))
            time.sleep(period)

    probe.node.create_subscription(JointTrajectory, '/arm_controller/joint_trajectory', on_trajectory, 100)
    threading.Thread(target=arm, daemon=True).start()
    node_process(
        'executor_node',
        'asyncvla_ros.nodes.executor_node',
        [config_path('executor.yaml')],
        overrides={
            'command_interface': 'joint_trajectory',
            'trajectory_streaming': False,
            'control_rate_hz': 1 / period,
            'start_enabled': True,
            'max_joint_state_age_s': 1.0,
        },
    )
    rng = np.random.default_rng(7)
    try:
        assert wait_until(
            lambda: probe.latest_state() is not None and probe.latest_state().mode != 'disabled', timeout=30
        )
        for _ in range(int(os.environ.get('SEAM_CHECK_CHUNKS', 25))):  # more for the figures in docs/results.md
            here, goal = probe.measured(), start + rng.uniform(-0.4, 0.4, 6)
            s = np.linspace(1 / 8, 1.0, 8)[:, None]
            probe.send_chunk(here + (goal - here) * s * s * (3 - 2 * s), start_delay=0.0, dt=0.1)
            time.sleep(0.3)
    finally:
        stop.set()
    with lock:
        print(controller.summary())
        assert controller.trajectories >= 25 and len(controller.seams) >= 24, 'too few replacements to prove anything'
        # velocity jumps are judged at seams received before their first point: enough must be
        assert len(controller.seams) - controller.late_seams >= 10, (
            'too few trajectories reached the controller in time'
        )
        controller.assert_within_limits()


# --- faults over DDS (the policy-side ones are in test_policy_node.py)


def test_fault_joint_states_that_stop_mid_motion_hold_the_arm_and_resume_without_a_jump(
    spinner, ros_context, executor_in_process
):
    probe = Probe(ros_context)
    spinner.add(probe.node)
    # the watchdog well beyond the silence: when joint states return, the plan (moved on meanwhile) runs again
    executor_in_process(
        command_interface='forward_command', start_enabled=True, max_joint_state_age_s=0.2, watchdog_timeout_s=10.0
    )
    silent = threading.Event()  # the arm's joint-state driver goes silent while set
    stop = probe.act_as_arm(silent=silent)
    try:
        assert probe.enable_once_ready()
        probe.send_chunk(np.linspace(np.zeros(6), GOAL, 60), dt=0.1)  # 6 s of motion
        assert wait_until(lambda: probe.latest_state().mode == 'executing', timeout=5)
        time.sleep(1.0)
        silent.set()
        silenced = time.time()
        assert wait_until(lambda: probe.latest_state().mode == 'holding', timeout=2)
        with probe.lock:  # judged by the executor's stamps, not by when its states arrive here
            hold_at = next(
                to_seconds(s.header.stamp)
                for _, s in probe.states
                if to_seconds(s.header.stamp) > silenced and s.mode == 'holding'
            )
        # max_joint_state_age_s, one control period, one state period (50 Hz) and the arm's last period (10 ms)
        assert hold_at - silenced <= 0.2 + 0.01 + 0.02 + 0.01 + 0.02, f'held {hold_at - silenced:.3f} s after'
        time.sleep(1.0)
        _assert_held(probe, 'the arm kept moving without joint states')
        silent.clear()
        assert wait_until(lambda: probe.latest_state().mode == 'executing', timeout=2)
        time.sleep(1.0)
        largest = _assert_moved_within_limits(probe, 50, 'the arm did not move on')
        print(f'joint states silent: held after {hold_at - silenced:.3f} s; largest step {largest:.4f} rad')
    finally:
        stop.set()


def test_fault_a_clock_that_jumps_back_drops_the_plan_holds_and_resumes_on_the_new_clock(
    spinner, ros_context, executor_in_process
):
    """A bag looped with use_sim_time: /clock goes back 30 s. The plan (dated on the old run) is dropped, the arm
    holds without a jump, a chunk made before the jump (dated 30 s ahead) is refused, and one dated on the new
    clock runs."""
    from rosgraph_msgs.msg import Clock

    probe = Probe(ros_context)
    spinner.add(probe.node)
    clock_pub = probe.node.create_publisher(Clock, '/clock', 10)
    sim_time, stop = [100.0], threading.Event()

    def clock_and_arm():  # /clock at 100 Hz at the wall's pace, and a perfect arm
        while not stop.is_set():
            sim_time[0] += 0.01
            clock_pub.publish(Clock(clock=to_time(sim_time[0])))
            with probe.lock:
                last = probe.commands[-1][1].data if probe.commands else [0.0] * 6
            msg = JointState(name=JOINTS, position=list(last))
            msg.header.stamp = to_time(sim_time[0])
            probe.joint_pub.publish(msg)
            time.sleep(0.01)

    def send(positions, start):
        chunk = Chunk(probe.next_id, start, 0.1, JOINTS, np.asarray(positions, float))
        probe.chunk_pub.publish(chunk_to_msg(chunk, start))
        probe.next_id += 1

    threading.Thread(target=clock_and_arm, daemon=True).start()
    executor_in_process(command_interface='forward_command', start_enabled=True, use_sim_time=True)
    try:
        assert probe.enable_once_ready()
        before_jump = sim_time[0]
        send(np.linspace(np.zeros(6), GOAL, 60), sim_time[0] + 0.05)
        assert wait_until(lambda: probe.latest_state().mode == 'executing', timeout=5)
        time.sleep(1.0)
        sim_time[0] -= 30.0  # the bag loops
        jumped = time.monotonic()
        assert wait_until(lambda: probe.latest_state().mode == 'holding', timeout=2)
        hold_after = time.monotonic() - jumped
        send(np.linspace(np.zeros(6), -GOAL, 60), before_jump + 2.0)  # made before the loop: 30 s in the future
        time.sleep(1.0)
        assert probe.latest_state().mode == 'holding'
        held = _assert_held(probe, 'a plan dated on the old clock ran')
        send(np.linspace(held, np.zeros(6), 30), sim_time[0] + 0.05)  # dated on the new clock
        assert wait_until(lambda: probe.latest_state().mode == 'executing', timeout=2)
        time.sleep(0.5)
        largest = _assert_moved_within_limits(probe, 30, 'the chunk on the new clock did not run')
        print(f'clock jumped back 30 s: holding within {hold_after:.3f} s; largest step {largest:.4f} rad')
    finally:
        stop.set()
