"""`asyncvla evaluate --closed-loop`: the policy drives the simulated SO-101 through the executor's core,
without ROS, in simulated time. The loop is the graph's: the executor ticks at its control rate, policy_node's
own request loop (control/request_loop.py) decides when a chunk is asked for and what it keeps, and the chunk
reaches the executor after a latency: the inference's own wall time (`latency_s=None`) or a fixed one.
It separates what the policy can do from what the machine's speed costs, and it says how far each failed
episode got (reached the block, carried it, placed it): the failures to fix first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asyncvla_ros.control.executor import ExecutorCore, ExecutorSettings
from asyncvla_ros.control.observation import JointHistory, jpeg_round_trip
from asyncvla_ros.control.profile import load_profile
from asyncvla_ros.control.request_loop import ExecutorProgress, RequestLoop, RequestSettings
from asyncvla_ros.control.seams import SeamRecorder, seam_summary, splice_jump
from asyncvla_ros.model.interface import ChunkPrediction, Policy
from asyncvla_ros.nodes.params import EXECUTOR_NODE, POLICY_NODE, SIM_ARM_NODE
from asyncvla_ros.sim.so101 import JOINT_NAMES, SO101Plant, phase_counts
from asyncvla_ros.tools.video import VIDEO_CAMERA, EpisodeFrames, outcome_text, write_contact_sheet, write_video
from asyncvla_ros.training.metrics import success_summary

VIDEO_RATE_HZ = SIM_ARM_NODE.defaults()['camera_rate_hz']  # the videos as sim_arm_node's camera films them


def node_request_settings(**changes) -> RequestSettings:
    """policy_node's request settings as it runs by default, with `changes`."""
    return RequestSettings.from_params({**POLICY_NODE.defaults(), **changes})


@dataclass
class LoopSettings:
    instruction: str
    request: RequestSettings = field(default_factory=node_request_settings)
    episode_seconds: float = 30.0
    latency_s: float | None = None  # None: each inference's wall time
    control_rate_hz: float = EXECUTOR_NODE.defaults()['control_rate_hz']
    camera_rate_hz: float | None = None  # None: images rendered at each request; else frames at this rate
    chunk_fade_per_lateness: float = EXECUTOR_NODE.defaults()['chunk_fade_per_lateness']
    interpolation: str = EXECUTOR_NODE.defaults()['interpolation']
    jpeg_quality: int | None = None  # frames through a JPEG round trip, as a compressed camera topic delivers them
    perturb: str | None = None  # PERTURBATIONS: one disturbance an episode, drawn from its scene seed


PERTURBATIONS = ('block', 'arm')
NUDGE_WITHIN_M = 0.08  # the block is nudged once the gripper comes this close, before it has reached it


@dataclass(frozen=True)
class Perturbation:
    """A disturbance where errors cascade: `block`, the block moved 1-3 cm in any direction while the gripper
    closes in on it (once within NUDGE_WITHIN_M, not yet reached); `arm`, the shoulder and elbow pushed
    0.05-0.15 rad off their path at a moment between 1 and 4 s. Drawn from the scene seed, so every run
    of a comparison meets the same one."""

    kind: str
    at_s: float
    offset: tuple

    @classmethod
    def draw(cls, kind: str, seed: int) -> Perturbation:
        rng = np.random.default_rng([seed, PERTURBATIONS.index(kind)])
        if kind == 'block':
            angle, size = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.01, 0.03)
            return cls(kind, 0.0, (size * np.cos(angle), size * np.sin(angle)))
        offset = np.zeros(len(JOINT_NAMES))
        offset[:3] = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.05, 0.15, 3)
        return cls(kind, float(rng.uniform(1.0, 4.0)), tuple(offset))

    def due(self, plant: SO101Plant, now: float) -> bool:
        if self.kind == 'arm':
            return now >= self.at_s
        return plant.phase() == 'none' and plant.gripper_block_distance() < NUDGE_WITHIN_M

    def apply(self, plant: SO101Plant) -> None:
        (plant.nudge_block if self.kind == 'block' else plant.push_arm)(self.offset)


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    phase: str  # how far it got (PHASES)
    seconds: float  # simulated
    min_block_distance_m: float
    starved_s: float  # simulated seconds the executor held because its plan ran out before the next chunk
    seams: dict = field(default_factory=dict)  # control/seams.py: jumps, jerk, holds, time to success
    chunk_ms: list = field(default_factory=list)
    refined_fraction: list = field(default_factory=list)
    perturbed_at_s: float | None = None  # when the episode's perturbation struck (None: none, or it never came)
    executed_steps: int = 0  # chunk steps the arm was driven through (each chunk's step counted once)
    executed_regenerated: int = 0  # of those, steps AFM had regenerated


class PolicyDrive:
    """The graph without ROS on the simulated arm: the executor's core ticking at its control rate, fed the
    arm's joints, and the request loop asking `runner` for chunks from the sim's cameras, each reaching the
    executor after its latency."""

    def __init__(
        self,
        plant: SO101Plant,
        runner: Policy,
        settings: LoopSettings,
        self_correction: bool,
        video: EpisodeFrames | None = None,
    ):
        self.plant, self.runner, self.settings, self.video = plant, runner, settings, video
        self.perturbation = Perturbation.draw(settings.perturb, plant.episode_seed) if settings.perturb else None
        self.perturbed_at: float | None = None
        self.video_ticks = max(int(round(settings.control_rate_hz / video.fps)), 1) if video else 0
        self.request_settings = replace(
            settings.request, sampling=replace(settings.request.sampling, self_correction=self_correction)
        )
        self.core = ExecutorCore(
            load_profile('so101'),
            ExecutorSettings.from_params(
                EXECUTOR_NODE.defaults(),
                control_rate_hz=settings.control_rate_hz,
                chunk_fade_per_lateness=settings.chunk_fade_per_lateness,
                interpolation=settings.interpolation,
            ),
        )
        self.loop = RequestLoop(JOINT_NAMES, runner.dt, runner.chunk_size)
        self.cameras = [key.removeprefix('observation.images.') for key in runner.camera_keys]
        self.period = 1.0 / settings.control_rate_hz
        self.frame_ticks = (
            None
            if settings.camera_rate_hz is None
            else max(int(round(settings.control_rate_hz / settings.camera_rate_hz)), 1)
        )
        self.history, self.frame = JointHistory(), None  # frame: (stamp, images), as policy_node pairs them
        self.pending = None  # (due, request, prediction)
        self.executing, self.ticks = False, 0
        self.seams = SeamRecorder(self.period, window_s=runner.dt)
        self.chunk_ms: list[float] = []
        self.refined: list[float] = []
        self.executed: dict[tuple[int, int], bool] = {}  # (chunk id, step) reached while executing: regenerated?
        self.core.on_joint_state(JOINT_NAMES, plant.joint_positions, 0.0)
        self.core.enable(0.0)

    @property
    def now(self) -> float:
        return self.ticks * self.period

    def run(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        for _ in range(int(round(seconds * self.settings.control_rate_hz))):
            self.step()
            if until():
                return

    def _capture(self, now: float) -> None:
        self.plant.capture(self.cameras)
        frames = [self.plant.draw(c) for c in self.cameras]
        if self.settings.jpeg_quality is not None:
            frames = [jpeg_round_trip(frame, self.settings.jpeg_quality) for frame in frames]
        self.frame = (now, frames)

    def step(self) -> None:
        """One control period: joints in, maybe a request or a chunk delivered, a tick, the arm moves."""
        now, plant = self.now, self.plant
        self.core.on_joint_state(JOINT_NAMES, plant.joint_positions, now)
        self.history.add(now, plant.joint_positions)
        if self.frame_ticks is not None and self.ticks % self.frame_ticks == 0:
            self._capture(now)
        if self.video is not None and self.ticks % self.video_ticks == 0:
            plant.capture([VIDEO_CAMERA])
            self.video.add(plant.draw(VIDEO_CAMERA), plant.phase())
        progress = self.core.timeline.progress(now)
        executor = ExecutorProgress(progress.chunk_id, progress.step, progress.steps_remaining, self.executing)
        if self.pending is None and self.loop.due(now, self.request_settings, executor):
            if self.frame_ticks is None:
                self._capture(now)
            pending = self.loop.request(
                now,
                self.request_settings,
                self.frame[0],
                self.frame[1],
                self.history.at(self.frame[0]),
                self.settings.instruction,
                executor,
            )
            began = time.perf_counter()
            prediction: ChunkPrediction = self.runner.predict(pending.request)
            wall = time.perf_counter() - began
            self.chunk_ms.append(wall * 1e3)
            self.refined.append(float(np.mean(prediction.refined)))
            latency = wall if self.settings.latency_s is None else self.settings.latency_s
            self.pending = (now + latency, pending, prediction)
        if self.pending is not None and now >= self.pending[0] - 1e-9:
            _, pending, prediction = self.pending
            self.pending = None
            if not self.loop.stale(pending, now, self.request_settings):  # as policy_node drops it
                chunk = self.loop.complete(pending, prediction, now, executor)
                jump = splice_jump(self.core.timeline, chunk, now)
                if self.core.on_chunk(chunk, now) is None:
                    self.seams.on_splice(now, jump)
        if self.perturbation and self.perturbed_at is None and self.perturbation.due(plant, now):
            self.perturbation.apply(plant)
            self.perturbed_at = now
        tick = self.core.tick(now)
        self.executing = tick.mode == 'executing'
        self._count_executed(now)
        self.seams.on_tick(now, tick)
        if tick.command is not None:
            plant.set_targets(tick.command)
        plant.advance(self.period)
        self.ticks += 1

    def _count_executed(self, now: float) -> None:
        chunk = self.core.timeline.chunk
        if self.executing and chunk is not None and len(chunk.refined):
            step = self.core.timeline.progress(now).step
            self.executed[(chunk.chunk_id, step)] = bool(chunk.refined[step])


def run_episode(
    plant: SO101Plant,
    runner: Policy,
    settings: LoopSettings,
    seed: int,
    self_correction: bool,
    video: EpisodeFrames | None = None,
) -> EpisodeResult:
    """One scene; with `video`, the front camera's frames at its rate go into it."""
    plant.reset(seed)
    drive = PolicyDrive(plant, runner, settings, self_correction, video)
    drive.run(settings.episode_seconds, until=plant.success)
    seconds = drive.now - drive.period
    return EpisodeResult(
        seed,
        plant.success(),
        plant.phase(),
        round(seconds, 2),
        round(plant.closest_block_distance, 4),
        round(drive.seams.held_s, 2),
        drive.seams.summary(seconds if plant.success() else None),
        drive.chunk_ms,
        drive.refined,
        drive.perturbed_at,
        len(drive.executed),
        sum(drive.executed.values()),
    )


def execution_modes() -> dict[str, dict]:
    """How a new chunk meets the running plan, as policy_node and executor_node settings: `switch` replaces the
    plan at once, `fade` fades a late chunk in (executor_node's chunk_fade_per_lateness, the run's own when it
    sets one), `committed` keeps the steps that run during inference as the model's committed tokens (delay
    compensation) and splices the rest at once (the chunk continues the running plan by construction),
    `committed_fade` fades that in as well. The `_quintic` variants interpolate with quintic splines, which start
    from the commanded acceleration too; the others use executor_node's interpolation."""
    modes = {
        'switch': {'fade': False, 'delay_compensation': False},
        'fade': {'fade': True, 'delay_compensation': False},
        'committed': {'fade': False, 'delay_compensation': True},
        'committed_fade': {'fade': True, 'delay_compensation': True},
    }
    return {**modes, **{f'{name}_quintic': {**mode, 'interpolation': 'quintic'} for name, mode in modes.items()}}


def sweep_runs(base: LoopSettings, latencies_ms: list[float], modes: list[str]) -> dict[str, LoopSettings]:
    """One run per (delay, mode), named `mode@<delay>ms`."""
    known = execution_modes()
    runs = {}
    for latency in latencies_ms:
        for mode in modes:
            change = known[mode]
            runs[sweep_name(mode, latency)] = replace(
                base,
                latency_s=latency / 1e3,
                chunk_fade_per_lateness=base.chunk_fade_per_lateness if change['fade'] else 0.0,
                interpolation=change.get('interpolation', base.interpolation),
                request=replace(base.request, delay_compensation=change['delay_compensation']),
            )
    return runs


def sweep_name(mode: str, latency_ms: float) -> str:
    return f'{mode}@{latency_ms:g}ms'


def evaluate_closed_loop(
    runner: Policy,
    runs: dict[str, tuple[LoopSettings, bool]],
    episodes: int,
    seed: int,
    video_dir: Path | None = None,
) -> dict[str, list[EpisodeResult]]:
    """`episodes` scenes (seeds seed, seed + 1, ...) per run ({name: (settings, self_correction)}): every run on
    the same scenes, so runs compare pairwise. With `video_dir`, an MP4 per episode and a contact sheet there."""
    plant = SO101Plant(seed)
    results, sheet = {}, []
    try:
        for name, (settings, self_correction) in runs.items():
            results[name] = []
            with tqdm(range(episodes), desc=f'closed loop ({name})', unit='episode') as bar:
                for i in bar:
                    video = EpisodeFrames(f'scene {seed + i}, {name}', VIDEO_RATE_HZ) if video_dir else None
                    result = run_episode(plant, runner, settings, seed + i, self_correction, video)
                    results[name].append(result)
                    bar.set_postfix(success=f'{np.mean([r.success for r in results[name]]):.2f}')
                    if video is not None:
                        outcome = outcome_text(result.success, result.phase)
                        write_video(video_dir / f'{name}_{seed + i}.mp4', video, outcome)
                        sheet.append((video.key_only(), outcome))
    finally:
        plant.close()
    if video_dir is not None:
        write_contact_sheet(video_dir / 'contact_sheet.png', sheet)
    return results


def summarize(results: dict[str, list[EpisodeResult]]) -> dict:
    summary = success_summary({mode: [e.success for e in episodes] for mode, episodes in results.items()})
    for mode, episodes in results.items():
        latencies = [ms for e in episodes for ms in e.chunk_ms]
        summary[f'phases_{mode}'] = phase_counts([e.phase for e in episodes])
        summary[f'p50_chunk_ms_{mode}'] = float(np.median(latencies)) if latencies else None
        summary[f'starved_s_{mode}'] = round(float(sum(e.starved_s for e in episodes)), 2)
        executed = sum(e.executed_steps for e in episodes)
        summary[f'executed_regenerated_share_{mode}'] = (
            round(sum(e.executed_regenerated for e in episodes) / executed, 4) if executed else None
        )
        summary[f'seams_{mode}'] = seam_summary([e.seams for e in episodes])
    summary['episodes'] = len(next(iter(results.values()), []))
    return summary


def sweep_table(results: dict[str, list[EpisodeResult]], latencies_ms: list[float], modes: list[str]) -> list[dict]:
    """One row per (delay, mode): success with its 95 % Wilson interval, the paired McNemar test against `switch`
    at the same delay (when it ran), and the seam figures."""
    rows = []
    for latency in latencies_ms:
        for mode in modes:
            name = sweep_name(mode, latency)
            row = {'latency_ms': latency, 'mode': mode}
            pair = {name: [e.success for e in results[name]]}
            baseline = sweep_name('switch', latency)
            if mode != 'switch' and baseline in results:
                pair[baseline] = [e.success for e in results[baseline]]
            stats = success_summary(pair)
            row.update(
                success=stats[f'success_rate_{name}'],
                ci95=stats[f'success_ci95_{name}'],
                placed=sum(pair[name]),
                episodes=len(pair[name]),
            )
            if 'mcnemar_p' in stats:
                row.update(
                    only_mode=stats[f'only_{name}'],
                    only_switch=stats[f'only_{baseline}'],
                    mcnemar_p_vs_switch=stats['mcnemar_p'],
                )
            row.update(seam_summary([e.seams for e in results[name]]))
            rows.append(row)
    return rows


def write_sweep(output: Path, rows: list[dict], command: str) -> tuple[Path, Path]:
    """sweep.md (the table and the command that made it) and sweep.png (success against delay, a curve per mode
    with its Wilson interval)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    lines = [
        f'`{command}`',
        '',
        '| delay (ms) | mode | placed | success (95 % CI) | vs switch: only mode / only switch, McNemar p '
        '| jerk RMS at seams / inside (rad/s^3) | largest splice jump (rad) | s between splices '
        '| episodes with holds |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        versus = (
            f'{r["only_mode"]} / {r["only_switch"]}, p {r["mcnemar_p_vs_switch"]:.3f}'
            if 'mcnemar_p_vs_switch' in r
            else '-'
        )
        lines.append(
            f'| {r["latency_ms"]:g} | {r["mode"]} | {r["placed"]}/{r["episodes"]} | {r["success"]:.2f} '
            f'({r["ci95"][0]:.2f}-{r["ci95"][1]:.2f}) | {versus} | {r["jerk_rms_seam"]} / {r["jerk_rms_inside"]} '
            f'| {r["splice_jump_max_rad"]} | {r["splice_interval_s"]} | {r["episodes_with_holds"]} |'
        )
    table = output / 'sweep.md'
    table.write_text('\n'.join(lines) + '\n')
    figure, axes = plt.subplots(figsize=(6, 4))
    for mode in dict.fromkeys(r['mode'] for r in rows):
        mine = [r for r in rows if r['mode'] == mode]
        x = [r['latency_ms'] for r in mine]
        y = np.array([r['success'] for r in mine])
        low, high = np.array([r['ci95'][0] for r in mine]), np.array([r['ci95'][1] for r in mine])
        axes.errorbar(x, y, yerr=[y - low, high - y], marker='o', capsize=3, label=mode)
    axes.set(
        xlabel='inference delay a chunk (ms)',
        ylabel='block placed (95 % Wilson interval)',
        ylim=(0, 1.05),
        title=f'closed loop, {rows[0]["episodes"]} scenes per point',
    )
    axes.legend()
    figure.tight_layout()
    plot = output / 'sweep.png'
    figure.savefig(plot, dpi=100)
    plt.close(figure)
    return table, plot


def write_results(output: Path, results: dict[str, list[EpisodeResult]], summary: dict, description: dict) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    path = output / 'closed_loop.json'
    episodes = {
        mode: [{k: v for k, v in asdict(e).items() if k not in ('chunk_ms', 'refined_fraction')} for e in es]
        for mode, es in results.items()
    }
    path.write_text(json.dumps({**description, **summary, 'episodes_by_mode': episodes}, indent=1))
    return path
