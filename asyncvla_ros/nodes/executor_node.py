"""executor_node: ActionChunk stream -> safe joint commands for the arm controller.

Wiring only: the plan, interpolation, safety filter, enable/ramp and holds live in
control/executor.py (ExecutorCore). Lifecycle: configure reads the robot profile and parameters,
activate starts the control loop, deactivate (like ~/enable false) brakes a moving arm to rest and stops
commanding. Nothing reaches the controller before ~/enable (or `start_enabled`).
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import fields

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from asyncvla_ros.control.chunk import ChunkRejected
from asyncvla_ros.control.executor import ExecutorCore, ExecutorSettings, Tick
from asyncvla_ros.control.pacing import ClockTicks, RepeatedReasons, wait_until
from asyncvla_ros.control.profile import RobotProfile, load_profile
from asyncvla_ros.control.trajectory_output import TrajectoryOutput
from asyncvla_ros.msg import ActionChunk, ExecutorState
from asyncvla_ros.nodes.conversions import chunk_from_msg, forward_command, joint_trajectory, to_time
from asyncvla_ros.nodes.loops import NodeLoop, run_node
from asyncvla_ros.nodes.params import EXECUTOR_NODE
from asyncvla_ros.nodes.ros_params import BoundParams

LIMIT_PARAMS = ('position_min', 'position_max', 'velocity_max', 'acceleration_max')
SETTINGS = tuple(f.name for f in fields(ExecutorSettings))
MAX_BRAKING_WAIT_S = 2.0  # deactivate waits this long at most for a moving arm to brake to rest


def publisher_id(info) -> bytes | None:
    """The publisher of a message (its DDS GID), from rclpy's MessageInfo; None where the RMW gives none."""
    gid = (info or {}).get('publisher_gid')
    return bytes(gid['data']) if gid else None


class ExecutorNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__('executor_node', **kwargs)
        self.params = BoundParams(
            self, EXECUTOR_NODE, is_active=lambda: self.active, on_change=self._on_params, check=self._check_param
        )
        self.p = self.params.values()  # kept current by _on_params: read on every tick
        self.active = False
        self.core: ExecutorCore | None = None
        self.lock = threading.Lock()
        self._loop: NodeLoop | None = None
        self._clock_ticks: ClockTicks | None = None
        self._trajectories: TrajectoryOutput | None = None  # joint_trajectory mode, one trajectory per change
        self._last_mode = 'disabled'
        self._reasons = RepeatedReasons()  # which refused inputs to log again

    # --- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.p
        try:
            profile = self._profile(p)
        except ValueError as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        self.core = ExecutorCore(profile, ExecutorSettings.from_params(p))
        self.interface = p['command_interface']
        topic = p['command_topic'] or profile.command_topics.get(self.interface)
        if not topic:
            self.get_logger().error(
                f'configure failed: no command_topic and profile {profile.name} has none for {self.interface}'
            )
            return TransitionCallbackReturn.FAILURE
        message_type = JointTrajectory if self.interface == 'joint_trajectory' else Float64MultiArray
        multi_point = self.interface == 'joint_trajectory' and not p['trajectory_streaming']
        self._trajectories = TrajectoryOutput(p['trajectory_lead_s']) if multi_point else None
        self.command_pub = self.create_publisher(message_type, topic, 10)
        self.preview_pub = self.create_publisher(message_type, '~/preview', 10)
        self.state_pub = self.create_publisher(ExecutorState, 'asyncvla/executor_state', 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(ActionChunk, 'asyncvla/action_chunk', self._on_chunk, QoSProfile(depth=10))
        self.create_subscription(JointState, 'joint_states', self._on_joint_state, qos_profile_sensor_data)
        self.create_service(SetBool, '~/enable', self._on_enable)
        self.create_timer(1.0 / p['state_rate_hz'], self._publish_state)
        self.get_logger().info(
            f'configured: profile {profile.name}, {self.interface} on {topic}, '
            f'{p["control_rate_hz"]:.0f} Hz, {p["interpolation"]} interpolation'
        )
        return TransitionCallbackReturn.SUCCESS

    @property
    def spin_realtime_priority(self) -> int:
        """For the thread spinning this node's callbacks: just below the control loop, so that it is not
        preempted by other work while it holds the GIL that the control loop needs next."""
        return max(self.p['realtime_priority'] - 1, 0)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        # ticks on a grid of control periods; on sim time the loop polls /clock: one tick per control period of
        # sim time, whatever the sim's pace
        self._clock_ticks = ClockTicks() if self.get_parameter('use_sim_time').value else ClockTicks(lead=0.5)
        self._loop = NodeLoop(
            self,
            'executor_control',
            self._control_step,
            lambda: self.core.filter.period,
            realtime_priority=self.p['realtime_priority'],
            on_error=self._on_control_error,
        ).start()
        if self.p['start_enabled']:
            self._enable(True, when_ready=True)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._enable(False)
        wait_until(lambda: not self.core.braking, timeout=MAX_BRAKING_WAIT_S, period=0.005)
        self._stop_loop()
        self.active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        self.core = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        return TransitionCallbackReturn.SUCCESS

    # --- parameters
    def _profile(self, p) -> RobotProfile:
        overrides = {k: p[k] for k in ('joint_names', *LIMIT_PARAMS)}
        return load_profile(p['robot_profile']).with_overrides(**overrides)

    def _check_param(self, name, value) -> str | None:
        if name in LIMIT_PARAMS and self.core is not None:
            try:
                self.core.profile.with_overrides(**{name: value})
            except ValueError as exc:
                return str(exc)
        return None

    def _on_params(self, changed) -> None:
        self.p.update(changed)
        if self.core is None:
            return
        with self.lock:
            self.core.configure(**{k: v for k, v in changed.items() if k in SETTINGS})
            limits = {k: v for k, v in changed.items() if k in LIMIT_PARAMS}
            if limits:
                self.core.set_limits(self.core.profile.with_overrides(**limits))
        self.get_logger().info(f'parameters changed: {changed}')

    # --- inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        if self.core is None:
            return
        now = self._now()
        with self.lock:
            reason = self.core.on_joint_state(msg.name, msg.position, now)
        if reason:
            self._warn_input(reason, now)

    def _on_chunk(self, msg: ActionChunk, info) -> None:
        if self.core is None:
            return
        now = self._now()
        source = publisher_id(info)
        with self.lock:
            try:
                reason = self.core.on_chunk(chunk_from_msg(msg), now, source)
            except ChunkRejected as exc:
                reason = self.core.reject(msg.chunk_id, exc)
            rejected = self.core.rejected_chunks
        if reason:
            self._warn_input(
                reason, now, {'rejected_chunks': rejected, 'source': source.hex() if source else 'unknown'}
            )

    def _warn_input(self, message: str, now: float, values: dict | None = None) -> None:
        """A refused input: logged and put on /diagnostics (WARN); a repeated one every 5 s (RepeatedReasons,
        on this host's monotonic clock: sim time may stand still or jump)."""
        if not self._reasons.due(message, time.monotonic()):
            return
        self.get_logger().warning(message)
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN,
            name=f'{self.get_name()}: inputs',
            hardware_id='asyncvla_ros',
            message=message,
            values=[KeyValue(key=k, value=str(v)) for k, v in (values or {}).items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = to_time(now)
        self.diagnostics_pub.publish(array)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        response.success, response.message = self._enable(request.data)
        return response

    def _enable(self, enable: bool, when_ready: bool = False) -> tuple[bool, str]:
        if self.core is None or not self.active:
            return False, 'executor is not active (configure and activate it first)'
        with self.lock:
            if enable:
                ok, message = self.core.enable(self._now(), when_ready)
            else:
                self.core.disable()
                ok, message = (
                    True,
                    'disabled: braking to rest, then no further commands'
                    if self.core.braking
                    else 'disabled: no further commands',
                )
        self.get_logger().info(message)
        return ok, message

    # --- output
    def _control_step(self) -> None:
        period = self.core.filter.period
        for moment in self._clock_ticks.due(self._now(), period):
            with self.lock:
                tick = self.core.tick(moment + (self._trajectories.lead(period) if self._trajectories else 0.0))
                trajectory = self._trajectories.after_tick(self.core, tick) if self._trajectories else None
            self._publish_tick(tick)
            if trajectory is not None:
                self._output(
                    joint_trajectory(
                        self.core.profile.joint_names,
                        trajectory.times[0],
                        trajectory.times,
                        trajectory.positions,
                        trajectory.velocities,
                    )
                )

    def _on_control_error(self, exc: Exception) -> None:
        """A control step that raises: nothing more is commanded until an operator enables again. A moving
        arm brakes to rest first (a braking trajectory replaces one already sent); if braking fails too, the
        commands stop at once."""
        with self.lock:
            self.core.disable(brake=not self.core.braking)
        self.get_logger().error(
            'control step failed; disabled, enable again to resume: ' + ''.join(traceback.format_exception(exc))
        )

    def _publish_tick(self, tick: Tick) -> None:
        mode_changed, self._last_mode = tick.mode != self._last_mode, tick.mode
        if tick.command is None:
            return
        if mode_changed and tick.mode == 'holding':
            self.get_logger().warning(f'holding: {tick.reason}')
        if self.interface == 'forward_command':
            self._output(forward_command(tick.command))
        elif self.p['trajectory_streaming']:  # one point, due one period after arrival
            self._output(
                joint_trajectory(
                    self.core.profile.joint_names, 0.0, [self.core.filter.period], [tick.command], [tick.velocity]
                )
            )

    def _output(self, msg) -> None:
        (self.preview_pub if self.p['dry_run'] else self.command_pub).publish(msg)

    def _publish_state(self) -> None:
        if self.core is None:
            return
        with self.lock:
            now = self._now()
            progress = self.core.timeline.progress(now)
            msg = ExecutorState(
                mode=self._last_mode,
                chunk_id=progress.chunk_id,
                step=progress.step,
                steps_remaining=progress.steps_remaining,
                limit_events=self.core.filter.limit_events,
            )
            if self.core.filter.position is not None:
                msg.last_command = self.core.filter.position.tolist()
        if self.core.enabled and self.p['dry_run']:
            msg.mode = 'dry_run'
        msg.header.stamp = to_time(now)
        self.state_pub.publish(msg)

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None


def main(args=None) -> None:
    run_node(ExecutorNode, args)


if __name__ == '__main__':
    main()
