"""`asyncvla demo` (`make demo`): the closed loop on the simulated SO-101 arm through the real ROS graph.

sim_arm_node, executor_node and policy_node run as separate processes (as `asyncvla bringup sim` starts
them); this process resets the sim between episodes, enables the executor, and watches
`sim/task_success` and `sim/task_phase` (how far a failed episode got), once with self-correction and once
without. It writes a report (markdown and PNG plots) and ends with one JSON line. Without a checkpoint it says so and
stops.

With `real_time_factor` below 1 the sim runs slower than real time and publishes /clock, and the executor and
the policy run on it (`use_sim_time`): inference then costs the arm that fraction of its wall time, as on a
machine that much faster. The default, `auto`, runs in real time when policy_node's model runs on a GPU and
at a quarter of real time when it runs on the CPU: a chunk then costs the arm about what a GPU takes, rather
than what a few CPU cores take beside the sim's physics and cameras (docs/results.md). The factor
is printed and is in the JSON line; `--real-time-factor 1` is the real-time loop on any machine.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from asyncvla_ros.control.pacing import wait_until
from asyncvla_ros.control.profile import load_profile
from asyncvla_ros.control.seams import commanded_stream, seam_summary, stream_seams, trajectory_splice_jumps
from asyncvla_ros.control.trajectory_output import TrajectoryOutput
from asyncvla_ros.model.runner import demo_checkpoint
from asyncvla_ros.nodes.conversions import chunk_from_msg, image_to_rgb, to_seconds
from asyncvla_ros.nodes.params import EXECUTOR_NODE, POLICY_NODE, SIM_ARM_NODE
from asyncvla_ros.paths import config_path
from asyncvla_ros.sim.so101 import JOINT_NAMES, phase_counts
from asyncvla_ros.tools.processes import NodeProcess, ros_environment
from asyncvla_ros.tools.video import VIDEO_CAMERA, EpisodeFrames, outcome_text, write_contact_sheet, write_video
from asyncvla_ros.training.metrics import success_summary


class DemoProbe:
    """The demo's own node: services of the sim and executor, policy parameters, and what to measure."""

    def __init__(self):
        import rclpy
        from lifecycle_msgs.srv import GetState
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter_client import AsyncParameterClient
        from rclpy.qos import qos_profile_sensor_data
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, String
        from std_srvs.srv import SetBool, Trigger
        from trajectory_msgs.msg import JointTrajectory

        from asyncvla_ros.msg import ActionChunk, ExecutorState, PolicyStatus

        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C reaches run_demo, which stops the nodes
        self.node = rclpy.create_node('demo')
        self.lock = threading.Lock()
        self.success = False
        self.phase = 'none'
        self.executor_mode = ''
        self.sim_time = 0.0  # stamp of the last joint state: sim time under /clock, else wall time
        self.statuses, self.chunks, self.joints = [], [], []
        self.trajectories, self.executor_states = [], []  # what the controller is sent, and (stamp, mode)
        self.video: EpisodeFrames | None = None  # the front camera, while an episode runs
        self.node.create_subscription(Bool, 'sim/task_success', self._on_success, 10)
        self.node.create_subscription(ExecutorState, 'asyncvla/executor_state', self._on_executor_state, 10)
        self.node.create_subscription(
            JointTrajectory, load_profile('so101').command_topics['joint_trajectory'], self._on_trajectory, 100
        )
        self.node.create_subscription(String, 'sim/task_phase', self._on_phase, 10)
        self.node.create_subscription(
            PolicyStatus, 'asyncvla/policy_status', lambda m: self._keep(self.statuses, m), 50
        )
        self.node.create_subscription(
            ActionChunk, 'asyncvla/action_chunk', lambda m: self._keep(self.chunks, (self.sim_time, m)), 10
        )
        self.node.create_subscription(JointState, 'joint_states', self._on_joints, qos_profile_sensor_data)
        self.node.create_subscription(
            Image, f'camera/{VIDEO_CAMERA}/image_raw', self._on_image, qos_profile_sensor_data
        )
        self.reset_client = self.node.create_client(Trigger, 'sim_arm_node/reset')
        self.enable_client = self.node.create_client(SetBool, 'executor_node/enable')
        self.policy_state_client = self.node.create_client(GetState, 'policy_node/get_state')
        self.params = {name: AsyncParameterClient(self.node, name) for name in ('policy_node', 'sim_arm_node')}
        self.Trigger, self.SetBool, self.GetState = Trigger, SetBool, GetState
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_joints(self, msg):
        self.sim_time = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self._keep(self.joints, (self.sim_time, list(msg.position)))

    def _on_image(self, msg):
        video = self.video
        if video is not None:
            video.add(image_to_rgb(msg), self.phase)

    def _on_executor_state(self, msg):
        self.executor_mode = msg.mode
        self._keep(self.executor_states, (to_seconds(msg.header.stamp), msg.mode))

    def _on_trajectory(self, msg):
        stamp = to_seconds(msg.header.stamp)
        self._keep(
            self.trajectories,
            (
                self.sim_time,
                list(msg.joint_names),
                np.array([stamp + to_seconds(p.time_from_start) for p in msg.points]),
                np.array([p.positions for p in msg.points]),
            ),
        )

    def _keep(self, store, item):
        with self.lock:
            store.append(item)

    def _on_success(self, msg):
        if msg.data:
            self.success = True

    def _on_phase(self, msg):
        self.phase = msg.data

    def call(self, client, request, timeout=10.0):
        future = client.call_async(request)
        if not wait_until(future.done, timeout):
            raise TimeoutError(f'no answer from {client.srv_name}')
        return future.result()

    def set_parameters(self, node: str, attempts: int = 3, **values):
        """Sets parameters, asking again when no answer comes: Fast DDS drops a service's response when it has
        not yet matched the client's reader ("failed to send response (timeout)" in the node's log)."""
        from rclpy.parameter import Parameter

        for _ in range(attempts):
            future = self.params[node].set_parameters([Parameter(k, value=v) for k, v in values.items()])
            if wait_until(future.done, 5):
                if all(r.successful for r in future.result().results):
                    return
                raise RuntimeError(f'{node} refused {values}: {[r.reason for r in future.result().results]}')
        raise TimeoutError(f'{node} did not answer setting {values} ({attempts} tries)')

    def ready(self) -> bool:
        return (
            self.reset_client.service_is_ready()
            and self.enable_client.service_is_ready()
            and all(client.services_are_ready() for client in self.params.values())
            and 'policy_node' in self.node.get_node_names()
        )

    def policy_active(self) -> bool:
        """policy_node answers only once it spins, after its configure (which compiles, with `compile`)."""
        if not self.policy_state_client.service_is_ready():
            return False
        future = self.policy_state_client.call_async(self.GetState.Request())
        return wait_until(future.done, 5.0) and future.result().current_state.label == 'active'

    def shutdown(self):
        import rclpy

        self.executor.shutdown()
        rclpy.try_shutdown()


POLICY_START_TIMEOUT_S = 900  # loading, and with `--compile` compiling, on a slow CPU
CPU_REAL_TIME_FACTOR = 0.25  # `auto` when the policy runs on the CPU (module docstring)


def auto_real_time_factor(policy_device: str) -> float:
    """The sim's pace for `--real-time-factor auto`: 1 when policy_node's `device` puts the model on a GPU."""
    import torch

    return 1.0 if policy_device != 'cpu' and torch.cuda.is_available() else CPU_REAL_TIME_FACTOR


LATENCY_STAGES = ('prefix', 'sfm', 'rater', 'afm', 'total')  # PolicyStatus.<stage>_ms
EPISODE_STREAMS = ('statuses', 'chunks', 'joints', 'trajectories', 'executor_states')  # DemoProbe's lists


def run_episode(probe: DemoProbe, seconds: float, real_time_factor: float, video: EpisodeFrames) -> dict:
    """One episode of `seconds` sim seconds (read from the joint states' stamps); the front camera's frames go
    into `video`."""
    probe.call(probe.enable_client, probe.SetBool.Request(data=False))
    # A moving arm brakes to rest before its commands stop; a reset before then would teleport the arm home and
    # the rest of the braking would drive it back towards the last episode's pose.
    if not wait_until(lambda: probe.executor_mode == 'disabled', 10 + 5 / real_time_factor, period=0.02):
        raise TimeoutError(f'executor_node did not come to rest after the disable (mode {probe.executor_mode!r})')
    probe.call(probe.reset_client, probe.Trigger.Request())
    time.sleep(0.5)
    with probe.lock:
        first = {name: len(getattr(probe, name)) for name in EPISODE_STREAMS}
    probe.success, probe.phase = False, 'none'
    probe.video = video
    probe.call(probe.enable_client, probe.SetBool.Request(data=True))
    started = probe.sim_time
    wait_until(
        lambda: probe.success or probe.sim_time - started >= seconds, 3 * seconds / real_time_factor + 10, period=0.1
    )
    ended, success = probe.sim_time, probe.success
    probe.video = None
    with probe.lock:
        streams = {name: getattr(probe, name)[first[name] :] for name in EPISODE_STREAMS}
    statuses = [s for s in streams['statuses'] if s.total_ms > 0]
    chunks = [(received, chunk_from_msg(m)) for received, m in streams['chunks']]
    return {
        'success': success,
        'phase': 'placed' if success else probe.phase,
        'seconds': ended - started,
        'chunk_ms': [s.total_ms for s in statuses],
        'observation_age_ms': [s.observation_age_ms for s in statuses],
        'stages_ms': {stage: [getattr(s, f'{stage}_ms') for s in statuses] for stage in LATENCY_STAGES},
        'refined_fraction': [s.refined_fraction for s in statuses],
        'confidence': [list(c.confidence) for _, c in chunks],
        'joints': streams['joints'],
        'seams': episode_seams(
            streams['trajectories'],
            streams['executor_states'],
            chunks,
            started,
            ended,
            ended - started if success else None,
            real_time_factor,
        ),
    }


def trajectory_lead_s(real_time_factor: float) -> float:
    """executor_node's trajectory lead in the demo: it covers wall-clock work (rollout, transport), so on a slowed
    sim that fraction of it."""
    return EXECUTOR_NODE.defaults()['trajectory_lead_s'] * min(real_time_factor, 1.0)


def episode_seams(
    trajectories, executor_states, chunks, start: float, end: float, time_to_success, real_time_factor: float
) -> dict:
    """control/seams.py's figures for one episode, from what the controller was sent (executor_node in
    joint_trajectory mode: each trajectory carries the control loop's own ticks, computed the trajectory lead
    ahead of its clock), the executor's states and the chunks, each with the sim time it was received."""
    params = EXECUTOR_NODE.load_yaml(config_path('executor.yaml'))
    period = 1.0 / params['control_rate_hz']
    if not trajectories or not chunks:
        return {}
    lead = TrajectoryOutput(trajectory_lead_s(real_time_factor)).lead(period)
    times, commands = commanded_stream([(t, q) for _, _, t, q in trajectories], period, start + lead, end + lead)
    if not len(times):
        return {}
    times = times - lead
    stamps = np.array([stamp for stamp, _ in executor_states] or [np.inf])
    modes = [mode for _, mode in executor_states] or ['']
    latest = np.clip(np.searchsorted(stamps, times, side='right') - 1, 0, len(modes) - 1)
    holding = np.array([modes[i] == 'holding' and stamps[i] <= t for i, t in zip(latest, times)])
    splices = trajectory_splice_jumps([(r, t, q) for r, _, t, q in trajectories], chunks, trajectories[0][1])
    return stream_seams(times, commands, holding, splices, period, chunks[0][1].dt, time_to_success)


def demo_summary(results: dict, real_time_factor: float) -> dict:
    """The JSON line: success per mode (with the paired comparison), how far episodes got, and the
    self-correction mode's latency and refined fraction."""
    latencies = [ms for e in results['self_correction'] for ms in e['chunk_ms']]
    ages = [ms for e in results['self_correction'] for ms in e['observation_age_ms']]
    refined = [f for e in results['self_correction'] for f in e['refined_fraction']]
    return {
        **success_summary({mode: [e['success'] for e in episodes] for mode, episodes in results.items()}),
        **{f'phases_{mode}': phase_counts(e['phase'] for e in episodes) for mode, episodes in results.items()},
        'episodes': len(results['self_correction']),
        'p50_chunk_ms': float(np.median(latencies)) if latencies else None,
        'p50_observation_age_ms': float(np.median(ages)) if ages else None,
        'refined_fraction': float(np.mean(refined)) if refined else None,
        'real_time_factor': real_time_factor,
        **{f'seams_{mode}': seam_summary([e['seams'] for e in episodes]) for mode, episodes in results.items()},
    }


def write_report(output: Path, results: dict, summary: dict) -> Path:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    episode = next((e for e in results['self_correction'] if e['joints']), None)
    if episode:
        t0 = episode['joints'][0][0]
        q = np.array([j for _, j in episode['joints']])
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([t - t0 for t, _ in episode['joints']], q, label=list(JOINT_NAMES))
        ax.set(xlabel='s', ylabel='rad', title='joint positions, first episode with self-correction')
        ax.legend(fontsize='small', ncol=3)
        fig.savefig(output / 'joints.png', dpi=100)
        plt.close(fig)
    confidences = [c for e in results['self_correction'] for c in e['confidence'] if c]
    if confidences:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.boxplot(np.array(confidences), positions=range(len(confidences[0])))
        ax.set(xlabel='step in chunk', ylabel='confidence', title='rater confidence per step')
        fig.savefig(output / 'confidence.png', dpi=100)
        plt.close(fig)
    latencies = [ms for mode in results.values() for e in mode for ms in e['chunk_ms']]
    if latencies:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.hist(latencies, bins=30)
        ax.set(xlabel='ms', ylabel='chunks', title='chunk latency (request to publication)')
        fig.savefig(output / 'latency.png', dpi=100)
        plt.close(fig)
    lines = [
        '# asyncvla demo on the simulated SO-101',
        '',
        '| mode | episodes | success rate | 95 % interval (Wilson) | how far episodes got |',
        '|---|---|---|---|---|',
    ]
    for mode, episodes in results.items():
        low, high = summary[f'success_ci95_{mode}']
        phases = ', '.join(f'{phase} {n}' for phase, n in summary[f'phases_{mode}'].items())
        lines.append(
            f'| {mode} | {len(episodes)} | {summary[f"success_rate_{mode}"]:.2f} | {low:.3f}-{high:.3f} | {phases} |'
        )
    lines += [
        '',
        '| mode | p50 ms: ' + ' | '.join(LATENCY_STAGES) + ' | observation age |',
        '|---|' + '---|' * (len(LATENCY_STAGES) + 1),
    ]
    for mode, episodes in results.items():
        medians = [
            np.median([ms for e in episodes for ms in e['stages_ms'][stage]] or [np.nan]) for stage in LATENCY_STAGES
        ]
        age = np.median([ms for e in episodes for ms in e['observation_age_ms']] or [np.nan])
        lines.append(f'| {mode} | ' + ' | '.join(f'{ms:.0f}' for ms in [*medians, age]) + ' |')
    lines += [
        '',
        '| mode | command jerk RMS at seams / inside chunks (rad/s³) | largest splice jump (rad) | '
        'episodes with a hold | median time to success (s) |',
        '|---|---|---|---|---|',
    ]
    for mode in results:
        seams = summary[f'seams_{mode}']
        lines.append(
            f'| {mode} | {seams["jerk_rms_seam"]} / {seams["jerk_rms_inside"]} | {seams["splice_jump_max_rad"]} | '
            f'{seams["episodes_with_holds"]} | {seams["median_time_to_success_s"]} |'
        )
    sheet = write_contact_sheet(
        output / 'contact_sheet.png', [e['key_frames'] for episodes in results.values() for e in episodes]
    )
    if sheet:
        lines += ['', '## Episodes to watch', '', '![key frames of every episode](contact_sheet.png)', '']
        lines += [
            f'- [{mode} {i + 1}]({os.path.relpath(e["video"], output)}): {e["phase"]}'
            for mode, episodes in results.items()
            for i, e in enumerate(episodes)
            if e['video']
        ]
    lines += [
        '',
        f'```json\n{json.dumps(summary, indent=1)}\n```',
        '',
        '![joints](joints.png)',
        '![confidence](confidence.png)',
        '![latency](latency.png)',
    ]
    (output / 'report.md').write_text('\n'.join(lines) + '\n')
    return output / 'report.md'


def _real_time_factor(requested) -> float:
    """`--real-time-factor`, with auto resolved from where policy_node runs its model."""
    if requested != 'auto':
        return requested
    factor = auto_real_time_factor(POLICY_NODE.load_yaml(config_path('policy.yaml'))['device'])
    pace = (
        'policy_node runs the model on a GPU'
        if factor == 1.0
        else f'the model runs on the CPU here: at {factor:g}x a chunk costs the arm about what a GPU takes; '
        '--real-time-factor 1 for real time'
    )
    print(f'demo: --real-time-factor auto: {factor:g} ({pace})')
    return factor


def _demo_nodes(checkpoint: Path, output: Path, seed: int, factor: float, compile_mode: str) -> list[NodeProcess]:
    """sim_arm_node, executor_node and policy_node, on the sim's /clock when the sim is slowed."""
    sim_clock = {'use_sim_time': True} if factor != 1.0 else {}
    nodes = (
        ('sim_arm_node', {'seed': seed, 'real_time_factor': factor, 'publish_clock': bool(sim_clock)}),
        ('executor_node', {**sim_clock, 'trajectory_lead_s': trajectory_lead_s(factor)}),
        ('policy_node', {'checkpoint': str(checkpoint), 'compile': compile_mode, **sim_clock}),
    )
    env = ros_environment(large_messages=True)
    return [
        NodeProcess(
            name,
            f'asyncvla_ros.nodes.{name}',
            output / 'logs',
            [config_path(f'{name.removesuffix("_node")}.yaml')],
            overrides=overrides,
            env=env,
        )
        for name, overrides in nodes
    ]


def _run_modes(probe: DemoProbe, args, factor: float, results: dict) -> None:
    """Every episode with self-correction, then without, on the same scenes; `results` fills as they end, and
    each episode's video is written as it ends."""
    camera_rate_hz = SIM_ARM_NODE.load_yaml(config_path('sim_arm.yaml'))['camera_rate_hz']
    videos = Path(args.output) / 'videos'
    for mode, on in (('self_correction', True), ('sfm', False)):
        probe.set_parameters('sim_arm_node', seed=args.seed)  # both modes on the same scenes
        probe.set_parameters('policy_node', self_correction=on)
        results[mode] = []
        for episode in range(args.episodes):
            frames = EpisodeFrames(f'scene {episode + 1} (seed {args.seed}), {mode}', camera_rate_hz)
            result = run_episode(probe, args.episode_seconds, factor, frames)
            outcome = outcome_text(result['success'], result['phase'])
            result['video'] = write_video(videos / f'{mode}_{episode + 1:02d}.mp4', frames, outcome)
            result['key_frames'] = (frames.key_only(), outcome)
            results[mode].append(result)
            print(
                f'demo: {mode} episode {episode + 1}/{args.episodes}: {outcome} after {result["seconds"]:.1f} s',
                flush=True,
            )
    probe.call(probe.enable_client, probe.SetBool.Request(data=False))


def _print_summary(results: dict, summary: dict, report: Path) -> None:
    rates = ', '.join(
        f'{summary[f"success_rate_{mode}"]:.2f} {summary[f"success_ci95_{mode}"]} {label} '
        f'({len(results[mode])} episodes)'
        for mode, label in (('self_correction', 'with self-correction'), ('sfm', 'without'))
        if mode in results
    )
    paired = ''
    if 'mcnemar_p' in summary:
        paired = (
            f'; on the same scenes only with it {summary["only_self_correction"]}, only without '
            f'{summary["only_sfm"]}, McNemar p {summary["mcnemar_p"]:.2f}'
        )
    print(f'demo: success {rates} (95 % intervals){paired}; report in {report}')
    print(json.dumps(summary))


def run_demo(args) -> int:
    checkpoint = Path(args.checkpoint) if args.checkpoint else demo_checkpoint()
    if not checkpoint.is_dir():
        print(
            f'demo: no checkpoint at {checkpoint}: train one (README, "Models") and pass --checkpoint, '
            'or commit the demo checkpoint there'
        )
        print(json.dumps({'episodes': 0, 'missing': str(checkpoint)}))
        return 1
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='asyncvla-demo-'))
    output = Path(args.output)
    factor = _real_time_factor(args.real_time_factor)
    if not 0.0 < factor <= 100.0:
        print(f'demo: --real-time-factor must be in (0, 100], got {factor}')
        return 2
    nodes = _demo_nodes(checkpoint, output, args.seed, factor, args.compile)
    print(
        f'demo: starting {", ".join(n.name for n in nodes)} (logs in {output / "logs"}), {args.episodes} episodes '
        f'with self-correction, then without; the sim at {factor:g}x real time'
        + (' (/clock, use_sim_time: inference costs the arm that fraction of its wall time)' if factor != 1.0 else '')
    )
    for node in nodes:
        node.start()
    probe = DemoProbe()
    results, interrupted = {}, False
    try:
        started = wait_until(probe.ready, 120) and wait_until(
            lambda: probe.policy_active() or not all(node.running() for node in nodes), POLICY_START_TIMEOUT_S
        )
        if not (started and all(node.running() for node in nodes)):
            print(f'demo: the nodes did not come up; see their logs in {output / "logs"}')
            return 1
        _run_modes(probe, args, factor, results)
    except (TimeoutError, RuntimeError) as exc:
        print(f"demo: stopped: {exc}; the nodes' logs are in {output / 'logs'}")
        return 1
    except KeyboardInterrupt:
        interrupted = True
        print(
            f'demo: interrupted; stopping the nodes (their logs are in {output / "logs"}), reporting the episodes run'
        )
    finally:
        probe.shutdown()
        for node in nodes:
            node.stop()
    results = {mode: episodes for mode, episodes in results.items() if episodes}
    if 'self_correction' not in results:
        return 130
    summary = demo_summary(results, factor)
    _print_summary(results, summary, write_report(output, results, summary))
    return 130 if interrupted else 0
