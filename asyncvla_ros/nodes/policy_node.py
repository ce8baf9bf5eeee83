"""policy_node: cameras + joint states + instruction -> AsyncVLA (SFM -> rater -> AFM) -> ActionChunk.

Wiring only: inference is asyncvla_ros/model/runner.py (in a child process, model/inference_process.py,
unless `inference_process` is false); when a request is due and what it asks for is the request loop
(control/request_loop.py), which the offline tools run too. One request is in flight at a time, sent from a
worker thread, so callbacks never block. A missing, stale or bad input skips a request and says why
(PolicyStatus, /diagnostics, log). Each request pairs the images with the joint states of their moment
(control/observation.py).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from asyncvla_ros.control.observation import ClockOffset, JointHistory, frame_time
from asyncvla_ros.control.pacing import RepeatedReasons
from asyncvla_ros.control.profile import load_profile
from asyncvla_ros.control.request_loop import ExecutorProgress, PendingRequest, RequestLoop, RequestSettings
from asyncvla_ros.model.inference_process import InferenceProcess
from asyncvla_ros.model.interface import CheckpointError, ChunkRequest, Sampling
from asyncvla_ros.msg import ActionChunk, ExecutorState, PolicyStatus
from asyncvla_ros.nodes.conversions import chunk_to_msg, image_to_rgb, to_seconds, to_time
from asyncvla_ros.nodes.loops import run_node
from asyncvla_ros.nodes.params import POLICY_NODE, camera_topics_for
from asyncvla_ros.nodes.ros_params import BoundParams

MAX_INSTRUCTION_CHARS = 1000
TRIGGER_RATE_HZ = 50.0


def cpu_threads(requested: int) -> int:
    """`num_threads` 0: every CPU core this process may use but one (at least one). torch's default of one
    per core stalls whenever a core is busy elsewhere (its threads wait for each other at every operation),
    and next to a policy_node there is always the node's own callbacks, the executor and the drivers."""
    return requested if requested > 0 else max(1, len(os.sched_getaffinity(0)) - 1)


def _in_process_runner():
    """PolicyRunner, imported only when the model runs in the node's own process: it brings torch and
    transformers, which a node with the model in its child process never needs."""
    import logging

    from asyncvla_ros.model.runner import PolicyRunner

    logging.basicConfig(level=logging.INFO, format='[inference] %(message)s')  # the runner's lines, as the child's
    return PolicyRunner


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__('policy_node', **kwargs)
        self.params = BoundParams(
            self,
            POLICY_NODE,
            is_active=lambda: self.active,
            on_change=lambda changed: self.p.update(changed),
            check=self._check_param,
        )
        self.p = self.params.values()
        self.active = False
        self.runner = None  # InferenceProcess, or PolicyRunner with inference_process false
        self.profile = None  # the robot profile of the joint states' units, from configure
        self.clock_offset, self.clock_warning = ClockOffset(), None  # against the executor's host
        self.camera_topics: list[str] = []  # resolved at configure (the checkpoint's cameras)
        self.lock = threading.Lock()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix='policy_inference')
        self.busy = False
        self.closing = False
        self.images: dict[str, tuple[float, float, np.ndarray]] = {}  # topic -> (taken, stamp, rgb)
        self.joints = JointHistory()  # by header stamp, to pair each image with the joints of its moment
        self.joints_received: float | None = None
        self.instruction = self.p['instruction']
        self.executor_progress: ExecutorProgress | None = None
        self.loop: RequestLoop | None = None  # made at configure, for the checkpoint's chunk
        self.state, self.message = 'unconfigured', ''
        self.reasons = RepeatedReasons()  # which skipped requests and refused inputs to log again
        self.status_pub = self.create_publisher(PolicyStatus, 'asyncvla/policy_status', 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.chunk_pub = None
        self._trigger = None

    # --- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.p
        try:
            runner = InferenceProcess if p['inference_process'] else _in_process_runner()
            self.runner = runner(
                p['checkpoint'],
                p['device'],
                p['dtype'],
                p['attn_implementation'],
                p['seed'],
                cpu_threads(p['num_threads']),
                p['compile'],
            )
            keys = self.runner.camera_keys
            self.camera_topics = list(p['camera_topics'] or camera_topics_for(keys))
            if len(self.camera_topics) != len(keys):
                raise CheckpointError(
                    f'{len(self.camera_topics)} camera_topics for a checkpoint with {len(keys)} camera(s) {keys}'
                )
            if p['camera_keys'] and list(p['camera_keys']) != keys:
                raise CheckpointError(f"camera_keys {p['camera_keys']} do not match the checkpoint's {keys}")
            self.profile = load_profile(p['robot_profile'])
            if len(p['joint_names']) != self.runner.num_joints:
                raise CheckpointError(
                    f'{len(p["joint_names"])} joint_names but the checkpoint has {self.runner.num_joints} joints'
                )
            self._warm_up()
        except (CheckpointError, OSError, RuntimeError, ValueError) as exc:
            self._drop_runner()
            self._set_state('error', f'configure failed: {exc}', error=True)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f'cameras: {dict(zip(keys, self.camera_topics))}')
        for topic in self.camera_topics:
            compressed = topic.rstrip('/').endswith('compressed')
            self.create_subscription(
                CompressedImage if compressed else Image,
                topic,
                lambda msg, t=topic: self._on_image(t, msg),
                qos_profile_sensor_data,
            )
        self.create_subscription(JointState, 'joint_states', self._on_joint_state, qos_profile_sensor_data)
        self.create_subscription(String, 'asyncvla/instruction', self._on_instruction, 10)
        self.create_subscription(ExecutorState, 'asyncvla/executor_state', self._on_executor_state, 10)
        # a lifecycle publisher: a chunk whose inference was in flight at deactivate is not sent
        self.chunk_pub = self.create_lifecycle_publisher(ActionChunk, 'asyncvla/action_chunk', 10)
        self._set_state(
            'idle',
            f'configured: {self.runner.chunk_size} steps of {self.runner.dt:.3f} s on {self.runner.device}'
            + (' (inference process)' if p['inference_process'] else ''),
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self._trigger = self.create_timer(1.0 / TRIGGER_RATE_HZ, self._maybe_request)
        self._set_state('running', 'producing chunks')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        if self._trigger is not None:
            self.destroy_timer(self._trigger)
            self._trigger = None
        self._set_state('idle', 'deactivated')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_runner()
        self._set_state('unconfigured', 'cleaned up')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.worker.shutdown(wait=True, cancel_futures=True)
        self._drop_runner()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Also ends the inference process when the node goes without a lifecycle shutdown (Ctrl-C)."""
        self.closing = True  # Ctrl-C reached the inference process too: a request in flight fails, as expected
        self.worker.shutdown(wait=True, cancel_futures=True)
        self._drop_runner()
        super().destroy_node()

    def _drop_runner(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.close()

    def _check_param(self, name, value) -> str | None:
        if name in ('camera_topics', 'camera_keys'):
            other = self.p['camera_keys' if name == 'camera_topics' else 'camera_topics']
            if value and other and len(value) != len(other):
                return f'camera_topics and camera_keys need the same length ({len(value)} vs {len(other)})'
        return None

    def _warm_up(self) -> None:
        """One chunk before the first real one: it loads what loads lazily, compiles with `compile`, and
        measures the prefix for the request loop's first delay estimate."""
        p = self.p
        images = [
            np.zeros((p['warmup_image_height'], p['warmup_image_width'], 3), np.uint8) for _ in self.runner.camera_keys
        ]
        # with the node's self_correction, so a checkpoint whose rater is untrained fails configure, saying so;
        # compiled, every step is regenerated, so that AFM compiles now and not at the first real chunk
        sampling = Sampling.from_params(p)
        if p['compile'] != 'eager':
            sampling = dataclasses.replace(sampling, confidence_threshold=2.0)
        request = ChunkRequest(images, np.zeros(self.runner.num_joints), self.instruction, sampling=sampling)
        prediction = self.runner.predict(request)  # compiling: the runner logs how long it took, and the breaks
        if p['compile'] != 'eager':
            prediction = self.runner.predict(request)  # the compiling chunk's prefix time says nothing
        self.loop = RequestLoop(
            self.p['joint_names'],
            self.runner.dt,
            self.runner.chunk_size,
            initial_delay_steps=prediction.timings_ms.get('prefix_ms', 0.0) / 1e3 / self.runner.dt + 1,
        )

    # --- inputs (fast: store and return)
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, topic: str, msg) -> None:
        try:
            rgb = image_to_rgb(msg)
        except ValueError as exc:
            self._report(f'image on {topic} refused: {exc}')
            return
        now = self._now()
        stamp = to_seconds(msg.header.stamp) or now
        with self.lock:
            self.images[topic] = (frame_time(stamp, now), stamp, rgb)

    def _on_joint_state(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        missing = [j for j in self.p['joint_names'] if j not in index]
        if missing or len(msg.position) != len(msg.name):
            self._report(
                f'joint state refused: missing joints {missing}'
                if missing
                else 'joint state refused: names and positions differ in length'
            )
            return
        q = np.array([msg.position[index[j]] for j in self.p['joint_names']], dtype=float)
        if not np.all(np.isfinite(q)):
            self._report('joint state refused: NaN or inf positions')
            return
        now = self._now()
        with self.lock:
            self.joints.add(to_seconds(msg.header.stamp) or now, self.profile.to_policy(q, self.p['joint_names']))
            self.joints_received = now

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text or len(text) > MAX_INSTRUCTION_CHARS:
            self._report(
                f'instruction refused: '
                f'{"empty" if not text else f"{len(text)} characters (max {MAX_INSTRUCTION_CHARS})"}'
            )
            return
        with self.lock:
            self.instruction = text
        self.get_logger().info(f'instruction: {text!r}')

    def _on_executor_state(self, msg: ExecutorState) -> None:
        with self.lock:
            self.executor_progress = ExecutorProgress(
                msg.chunk_id, msg.step, msg.steps_remaining, msg.mode in ('executing', 'dry_run')
            )
        stamp = to_seconds(msg.header.stamp)
        if stamp:
            self.clock_offset.observe(stamp, self._now())
            self._check_clock_offset()

    def _check_clock_offset(self) -> None:
        """Warns (log and /diagnostics) when the executor's host and this one disagree on the time by more than
        `max_clock_offset_s`, once per 10 ms of change: chunks are dated on the robot's clock, but a stale-input
        check and any fallback to arrival times are on this one."""
        offset = self.clock_offset.estimate
        if offset is None or abs(offset) <= self.p['max_clock_offset_s']:
            return
        if self.clock_warning is not None and abs(offset - self.clock_warning) < 0.01:
            return
        self.clock_warning = offset
        side = 'ahead of' if offset > 0 else 'behind'
        message = (
            f"clock offset: this host runs {abs(offset) * 1e3:.0f} ms {side} the executor's (quickest "
            'delivery of its states); synchronise the hosts (chrony) or check the link'
        )
        self.get_logger().warning(message)
        self._publish_diagnostics(DiagnosticStatus.WARN, message, {'clock_offset_ms': f'{offset * 1e3:.1f}'})

    # --- requests
    def _maybe_request(self) -> None:
        now = self._now()
        with self.lock:
            if (
                self.busy
                or self.runner is None
                or not self.loop.due(now, RequestSettings.from_params(self.p), self.executor_progress)
            ):
                return
            reason = self._missing_input(now)
            joints, note = (
                (None, '') if reason else self.joints.pair(min(self.images[t][1] for t in self.camera_topics))
            )
            if joints is None:
                self._report(f'inference skipped: {reason or note}')
                return
            if note:
                self._report(note)
            observed = min(self.images[t][0] for t in self.camera_topics)  # when the observation was taken
            pending = self.loop.request(
                now,
                RequestSettings.from_params(self.p),
                observed,
                [self.images[t][2] for t in self.camera_topics],
                joints,
                self.instruction,
                self.executor_progress,
            )
            self.busy = True
        self.worker.submit(self._infer, pending, time.perf_counter())

    def _missing_input(self, now: float) -> str:
        max_age = self.p['max_observation_age_s']
        if self.joints_received is None or now - self.joints_received > max_age:
            return (
                self._nothing_on('joint_states')
                if self.joints_received is None
                else f'joint state is {now - self.joints_received:.2f} s old'
            )
        for topic in self.camera_topics:
            if topic not in self.images:
                return self._nothing_on(topic)
            if now - self.images[topic][0] > max_age:
                return f'image on {topic} is {now - self.images[topic][0]:.2f} s old'
        return ''

    def _infer(self, pending: PendingRequest, started: float) -> None:
        try:
            prediction = self.runner.predict(pending.request)
        except Exception as exc:  # keep serving: a failed request is reported, the next one may work
            with self.lock:
                self.busy = False
            if self.closing:
                return
            self._set_state('error', f'inference failed: {exc!r}', error=True)
            return
        now = self._now()  # the arm's time: sim time on /clock
        stale = self.loop.stale(pending, now, RequestSettings.from_params(self.p))
        if stale:
            with self.lock:
                self.busy = False
            self._report(stale)
            return
        with self.lock:
            chunk = self.loop.complete(pending, prediction, now, self.executor_progress)
        robot = replace(chunk, positions=self.profile.to_robot(chunk.positions, chunk.joint_names))
        self.chunk_pub.publish(chunk_to_msg(robot, pending.observed))
        elapsed = time.perf_counter() - started
        with self.lock:
            self.busy = False
        if self.state == 'error':  # a failed request before this one
            self.get_logger().info('inference works again')
            self.state = 'running'
        self.message = ''
        self.reasons.clear()
        committed = chunk.num_committed
        free = ~prediction.refined[committed:] if len(prediction.refined) else np.zeros(0, bool)
        refined_fraction = float(1.0 - free.mean()) if free.size else 0.0
        confidence = float(prediction.confidence[committed:].mean()) if prediction.confidence.size else 0.0
        self._publish_status(
            chunk.chunk_id,
            (pending.requested_at - pending.observed) * 1e3,
            prediction.timings_ms,
            elapsed * 1e3,
            refined_fraction,
            confidence,
        )

    # --- status
    def _publish_status(self, chunk_id, age_ms, timings, total_ms, refined_fraction, confidence) -> None:
        msg = PolicyStatus(
            state=self.state,
            last_chunk_id=chunk_id,
            observation_age_ms=age_ms,
            prefix_ms=timings.get('prefix_ms', 0.0),
            sfm_ms=timings.get('sfm_ms', 0.0),
            rater_ms=timings.get('rater_ms', 0.0),
            afm_ms=timings.get('afm_ms', 0.0),
            total_ms=total_ms,
            refined_fraction=refined_fraction,
            mean_confidence=confidence,
            message=self.message,
        )
        msg.header.stamp = to_time(self._now())
        self.status_pub.publish(msg)
        values = {
            'chunk_id': chunk_id,
            'total_ms': f'{total_ms:.1f}',
            'observation_age_ms': f'{age_ms:.1f}',
            'refined_fraction': f'{refined_fraction:.3f}',
            'mean_confidence': f'{confidence:.3f}',
            'delay_steps': self.loop.delay.delay,
        }
        self._publish_diagnostics(DiagnosticStatus.OK, 'chunk published', values)

    def _publish_diagnostics(self, level, message: str, values: dict | None = None) -> None:
        status = DiagnosticStatus(
            level=level,
            name=f'{self.get_name()}: AsyncVLA policy',
            hardware_id='asyncvla_ros',
            message=message,
            values=[KeyValue(key=k, value=str(v)) for k, v in (values or {}).items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = to_time(self._now())
        self.diagnostics_pub.publish(array)

    def _nothing_on(self, topic: str) -> str:
        """Nothing received yet: with a publisher matched, the transport is at fault, not the graph (Fast DDS
        shared memory can leave a node restarted after a crash deaf, eProsima/Fast-DDS#5053)."""
        name = self.resolve_topic_name(topic)
        publishers = self.count_publishers(name)
        return f'nothing received on {name} ({publishers} publisher{"" if publishers == 1 else "s"} matched)'

    def _report(self, reason: str) -> None:
        """A skipped request or a refused input: log, PolicyStatus and diagnostics (RepeatedReasons: a repeated
        reason every 5 s); the status message is always the latest."""
        self.message = reason
        if not self.reasons.due(reason, time.monotonic()):
            return
        self.get_logger().warning(reason)
        msg = PolicyStatus(
            state=self.state,
            message=reason,
            last_chunk_id=self.loop.last_chunk.chunk_id if self.loop and self.loop.last_chunk else 0,
        )
        msg.header.stamp = to_time(self._now())
        self.status_pub.publish(msg)
        self._publish_diagnostics(DiagnosticStatus.WARN, reason)

    def _set_state(self, state: str, message: str, error: bool = False) -> None:
        self.state, self.message = state, message
        if error:  # one call site per severity: rclpy refuses a call site whose severity changes
            self.get_logger().error(message)
        else:
            self.get_logger().info(message)
        msg = PolicyStatus(state=state, message=message)
        msg.header.stamp = to_time(self._now())
        self.status_pub.publish(msg)
        self._publish_diagnostics(DiagnosticStatus.ERROR if error else DiagnosticStatus.OK, message)


def main(args=None) -> None:
    run_node(PolicyNode, args)


if __name__ == '__main__':
    main()
