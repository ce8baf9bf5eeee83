"""The executor without ROS: enable/disable, ramp-in, watchdog, stale-input holds, chunk splicing and
the safety filter, advanced one control period per `tick`. executor_node only wires topics to it.

Disabling a moving arm brakes it within the acceleration limits before the commands stop: a position
controller holds its last command, so stopping the commands mid-motion would ask for an instant stop, and
a trajectory controller would run the rest of the trajectory it was sent."""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import numpy as np

from asyncvla_ros.control.chunk import Chunk, ChunkRejected
from asyncvla_ros.control.profile import RobotProfile
from asyncvla_ros.control.safety import SafetyFilter
from asyncvla_ros.control.timeline import ChunkTimeline, Progress


@dataclass
class ExecutorSettings:
    """executor_node's parameters that shape the control loop; nodes/params.py declares, documents and
    defaults them (`from_params(EXECUTOR_NODE.defaults())` is the node as it runs by default)."""

    control_rate_hz: float
    interpolation: str
    watchdog_timeout_s: float
    max_joint_state_age_s: float
    max_chunk_delay_s: float
    ramp_in_s: float
    chunk_fade_per_lateness: float

    @classmethod
    def from_params(cls, params: dict, **changes) -> ExecutorSettings:
        return cls(**{f.name: changes.get(f.name, params[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class Tick:
    command: np.ndarray | None  # None: disabled, command nothing
    velocity: np.ndarray | None
    mode: str  # disabled | holding (also while braking after a disable) | executing
    reason: str  # why holding ('' when executing)
    progress: Progress


class ExecutorCore:
    def __init__(self, profile: RobotProfile, settings: ExecutorSettings):
        self.profile = profile
        self.settings = settings
        self.timeline = ChunkTimeline(
            profile.joint_names,
            settings.interpolation,
            settings.max_chunk_delay_s,
            settings.chunk_fade_per_lateness,
            profile.acceleration_max,
        )
        self.filter = SafetyFilter(
            profile.position_min,
            profile.position_max,
            profile.velocity_max,
            profile.acceleration_max,
            1.0 / settings.control_rate_hz,
        )
        self.enabled = False
        self.enable_pending = False  # enable as soon as a fresh joint state arrives (start_enabled), or braking ends
        self.braking = False  # disabled while moving: decelerate to rest, then command nothing
        self.braked_at: float | None = None  # when braking last reached rest (the arm holds that last command)
        self.measured: np.ndarray | None = None
        self.measured_at: float | None = None
        self.enabled_at: float | None = None
        self.enabled_from: np.ndarray | None = None
        self.last_tick_at: float | None = None  # the time of the filter's state: the commanded state is of then
        self.rejected_chunks = 0
        self.source = None  # the publisher whose chunks the plan follows (any hashable id; None: not known)
        self.source_heard_at: float | None = None

    # --- inputs
    def on_joint_state(self, names, positions, now: float) -> str | None:
        """Takes a joint state (any order, extra joints ignored); the reason when it is refused."""
        index = {n: i for i, n in enumerate(names)}
        missing = [j for j in self.profile.joint_names if j not in index]
        if missing or len(positions) != len(names):
            return (
                f'joint state refused: missing joints {missing}'
                if missing
                else f'joint state refused: {len(names)} names but {len(positions)} positions'
            )
        q = np.array([positions[index[j]] for j in self.profile.joint_names], dtype=float)
        if not np.all(np.isfinite(q)):
            return 'joint state refused: NaN or inf positions'
        self.measured, self.measured_at = q, now
        if self.enable_pending:
            self.enable(now)
        return None

    def on_chunk(self, chunk: Chunk, now: float, source=None) -> str | None:
        """Splices a chunk into the plan; the reason when it is rejected (the plan is then unchanged).

        `source` identifies the publisher. Chunks come from one source at a time: another source's chunks are
        refused while the current one has published within `watchdog_timeout_s` (two policy nodes running by
        mistake would otherwise interleave their plans); after that silence the newcomer takes over, with ids
        of its own. A chunk whose step 0 is due more than `watchdog_timeout_s` ahead is refused: it is dated on
        another clock (made before the clock jumped back, or on a host whose clock runs far ahead)."""
        refused = self._check_source(source, now)
        if refused:
            return self.reject(chunk.chunk_id, refused)
        lead = chunk.start_time - now
        if lead > self.settings.watchdog_timeout_s:
            return self.reject(
                chunk.chunk_id,
                f'dated {lead:.2f} s ahead of this clock (more than watchdog_timeout_s): made on another clock',
            )
        if self.enabled and self.last_tick_at is not None:
            state_time = self.last_tick_at
            position, velocity, acceleration = self.filter.position, self.filter.velocity, self.filter.acceleration
        elif self.measured is not None:
            state_time, position, velocity, acceleration = now, self.measured, None, None
        else:
            return f'chunk {chunk.chunk_id} refused: no joint state received yet'
        try:
            self.timeline.offer(chunk, now, position, velocity, acceleration, state_time)
        except ChunkRejected as exc:
            return self.reject(chunk.chunk_id, exc)
        return None

    def _check_source(self, source, now: float) -> str:
        """'' when chunks from `source` may change the plan, else why not."""
        if source is None or source == self.source:
            self.source_heard_at = now if source is not None else self.source_heard_at
            return ''
        if self.source is not None and now - self.source_heard_at <= self.settings.watchdog_timeout_s:
            return 'a second chunk source publishes while the first does (two policy nodes?); refused'
        if self.source is not None:
            self.timeline.forget_chunk_id()  # a new source numbers its chunks from its own start
        self.source, self.source_heard_at = source, now
        return ''

    def reject(self, chunk_id: int, reason: Exception | str) -> str:
        """Counts a rejected chunk; the log line."""
        self.rejected_chunks += 1
        return f'chunk {chunk_id} rejected: {reason}'

    def configure(self, **changes) -> None:
        """Run-time changes (interpolation, limits, rate, timeouts) for the next tick or chunk."""
        for key, value in changes.items():
            setattr(self.settings, key, value)
        self.timeline.interpolation = self.settings.interpolation
        self.timeline.max_chunk_delay_s = self.settings.max_chunk_delay_s
        self.timeline.fade_per_lateness = self.settings.chunk_fade_per_lateness
        self.filter.period = 1.0 / self.settings.control_rate_hz

    def set_limits(self, profile: RobotProfile) -> None:
        self.profile = profile
        self.timeline.acceleration_max = profile.acceleration_max
        self.filter.set_limits(
            profile.position_min, profile.position_max, profile.velocity_max, profile.acceleration_max
        )

    # --- enable
    def enable(self, now: float, when_ready: bool = False) -> tuple[bool, str]:
        """Starts commanding from the measured position; with `when_ready`, as soon as a fresh joint
        state is there (now or later). After a braking, from its last command unless the reading is newer:
        a reading taken before the arm came to rest lags that command, which the controller holds, so
        starting from it would be a jump."""
        if self.enabled:
            return True, 'already enabled'
        if self.braking:
            self.enable_pending = True
            return True, 'will enable once the arm has braked to rest'
        if not self._joint_state_fresh(now):
            self.enable_pending = when_ready
            if when_ready:
                return True, 'will enable on the first fresh joint state'
            return False, 'cannot enable: no fresh joint state (the ramp starts from the measured position)'
        self.enable_pending = False
        from_command = self.braked_at is not None and self.measured_at <= self.braked_at
        if not from_command:
            self.filter.reset(self.measured)
        self.enabled, self.enabled_at, self.enabled_from = True, now, self.filter.position.copy()
        return (
            True,
            f'enabled: ramping in from the {"commanded" if from_command else "measured"} position over '
            f'{self.settings.ramp_in_s:.2f} s',
        )

    def disable(self, brake: bool = True) -> None:
        """Stop executing. With `brake` a moving arm first decelerates to rest within the limits (ticks
        report `holding` until then); without it commands stop at once."""
        moving = (
            (self.enabled or self.braking)
            and self.filter.position is not None
            and bool(np.any(self.filter.velocity != 0.0))
        )
        self.braking = brake and moving
        self.enabled = self.enable_pending = False
        self.timeline.clear()

    # --- control
    def _joint_state_fresh(self, now: float) -> bool:
        return self.measured_at is not None and now - self.measured_at <= self.settings.max_joint_state_age_s

    def hold_reason(self, now: float) -> str:
        if not self._joint_state_fresh(now):
            return 'joint states stale or missing'
        if self.timeline.interpolant is None:
            return 'no chunk yet'
        if now - self.timeline.received_at > self.settings.watchdog_timeout_s:
            return 'watchdog: no chunk within watchdog_timeout_s'
        if not self.timeline.covers(now):
            return 'plan exhausted'
        return ''

    def tick(self, now: float) -> Tick:
        back = 0.0 if self.last_tick_at is None else self.last_tick_at - now
        if back > self.filter.period:
            self._restart_clock(now)
        self.last_tick_at = now
        progress = self.timeline.progress(now)
        if self.braking:
            command = self.filter.step(None)
            self.braking = bool(np.any(self.filter.velocity != 0.0))
            self.braked_at = None if self.braking else now
            if not self.braking and self.enable_pending:
                self.enable(now)
            return Tick(command, self.filter.velocity.copy(), 'holding', 'disabled: braking to rest', progress)
        if not self.enabled:
            return Tick(None, None, 'disabled', 'not enabled', progress)
        reason = f'the clock jumped back {back:.2f} s: plan dropped' if back > self.filter.period else ''
        reason = reason or self.hold_reason(now)
        desired = velocity = None
        if not reason:
            desired, velocity = self.timeline.sample(now)
            ramp = (now - self.enabled_at) / self.settings.ramp_in_s if self.settings.ramp_in_s > 0 else 1.0
            if ramp < 1.0:  # smoothstep blend from where the arm was at enable
                w, dw = ramp * ramp * (3.0 - 2.0 * ramp), 6.0 * ramp * (1.0 - ramp) / self.settings.ramp_in_s
                velocity = w * velocity + dw * (desired - self.enabled_from)
                desired = (1.0 - w) * self.enabled_from + w * desired
        command = self.filter.step(desired, velocity)
        return Tick(command, self.filter.velocity.copy(), 'holding' if reason else 'executing', reason, progress)

    def _restart_clock(self, now: float) -> None:
        """The clock went back (a looped bag on sim time, a reset sim): every time kept is in its future. The
        plan is dropped (its steps are dated on the old run of the clock) and the arm holds until a chunk dated
        on the new one arrives; a joint state read before the jump is not fresh; a finished ramp stays finished."""
        self.timeline.clear()
        if self.measured_at is not None and self.measured_at > now:
            self.measured_at = None
        if self.enabled_at is not None:
            self.enabled_at = min(self.enabled_at, now - self.settings.ramp_in_s)
        if self.braked_at is not None:
            self.braked_at = now
        if self.source_heard_at is not None:
            self.source_heard_at = now

    def rollout(self, duration: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the ticks after the last one will command over `duration` seconds if nothing new arrives:
        times (T,) on the control grid, positions and velocities (T, J); for one multi-point trajectory.
        Joint states stay as fresh (or as stale) as they are now. It ends where the commands end (braking
        after a disable reaches rest) or with the first tick that holds at rest: both last until new input."""
        future = copy.deepcopy(self)
        start, period = self.last_tick_at, self.filter.period
        fresh = self._joint_state_fresh(start)
        times = start + period * np.arange(1, max(int(round(duration / period)), 1) + 1)
        ticks = []
        for t in times:
            if fresh:
                future.measured_at = t
            tick = future.tick(t)
            if tick.command is None:
                break
            ticks.append(tick)
            if tick.mode == 'holding' and not np.any(tick.velocity):
                break
        joints = len(self.profile.joint_names)
        return (
            times[: len(ticks)],
            np.array([k.command for k in ticks]).reshape(-1, joints),
            np.array([k.velocity for k in ticks]).reshape(-1, joints),
        )
