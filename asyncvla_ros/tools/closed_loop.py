"""`asyncvla evaluate --closed-loop`: the policy drives the simulated SO-101 through the executor's core,
without ROS, in simulated time. The loop is the graph's: the executor ticks at its control rate, a chunk is
requested when `refill_threshold` steps (or the measured delay) are left (with policy_node's timing and delay compensation), and it
reaches the executor after a latency: the inference's own wall time (`latency_s=None`) or a fixed one.
It separates what the policy can do from what the machine's speed costs, and it says how far each failed
episode got (reached the block, carried it, placed it): the failures to fix first.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asyncvla_ros.control.chunk import Chunk
from asyncvla_ros.control.delay import DelayEstimator, refill_steps, request_timing
from asyncvla_ros.control.executor import ExecutorCore, ExecutorSettings
from asyncvla_ros.control.observation import JointHistory
from asyncvla_ros.control.profile import load_profile
from asyncvla_ros.model.runner import ChunkRequest, PolicyRunner
from asyncvla_ros.sim.so101 import JOINT_NAMES, SO101Plant, phase_counts
from asyncvla_ros.training.metrics import success_summary


@dataclass
class LoopSettings:
    instruction: str
    episode_seconds: float = 30.0
    latency_s: float | None = None      # None: each inference's wall time
    refill_threshold: int = 4
    delay_compensation: bool = True
    confidence_threshold: float | None = None
    num_correction_rounds: int | None = None
    num_denoise_steps: int | None = None
    num_denoise_steps_afm: int | None = None
    control_rate_hz: float = 100.0
    camera_rate_hz: float | None = None  # None: images rendered at each request; else frames at this rate
    chunk_fade_per_lateness: float = ExecutorSettings.chunk_fade_per_lateness


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    phase: str                  # how far it got (PHASES)
    seconds: float              # simulated
    min_block_distance_m: float
    starved_s: float            # simulated seconds the executor held because its plan ran out before the next chunk
    chunk_ms: list = field(default_factory=list)
    refined_fraction: list = field(default_factory=list)


def run_episode(plant: SO101Plant, runner: PolicyRunner, settings: LoopSettings, seed: int, self_correction: bool) -> EpisodeResult:
    plant.reset(seed)
    core = ExecutorCore(load_profile('so101'), ExecutorSettings(control_rate_hz=settings.control_rate_hz,
                                                                      chunk_fade_per_lateness=settings.chunk_fade_per_lateness))
    cameras = [key.removeprefix('observation.images.') for key in runner.processor.camera_keys]
    delay, period = DelayEstimator(), 1.0 / settings.control_rate_hz
    frame_ticks = None if settings.camera_rate_hz is None else max(int(round(settings.control_rate_hz / settings.camera_rate_hz)), 1)
    history, frame = JointHistory(), None  # frame: (stamp, images), as policy_node pairs them
    running = pending = None
    chunk_id, starved, chunk_ms, refined = 0, 0.0, [], []
    core.on_joint_state(JOINT_NAMES, plant.joint_positions, 0.0)
    core.enable(0.0)
    now = 0.0
    for tick in range(int(round(settings.episode_seconds * settings.control_rate_hz))):
        now = tick * period
        core.on_joint_state(JOINT_NAMES, plant.joint_positions, now)
        history.add(now, plant.joint_positions)
        if frame_ticks is not None and tick % frame_ticks == 0:
            plant.capture(cameras)
            frame = (now, [plant.draw(c) for c in cameras])
        progress = core.timeline.progress(now)
        if pending is None and (running is None or progress.steps_remaining <= refill_steps(settings.refill_threshold, delay.delay)):
            if frame_ticks is None:
                plant.capture(cameras)
                frame = (now, [plant.draw(c) for c in cameras])
            executor_step = progress.step if settings.delay_compensation and running is not None else None
            start, committed = request_timing(frame[0], runner.dt, delay.delay, runner.chunk_size, running, executor_step)
            request = ChunkRequest(frame[1], history.at(frame[0]), settings.instruction,
                                   committed, self_correction, settings.confidence_threshold,
                                   settings.num_correction_rounds, settings.num_denoise_steps, settings.num_denoise_steps_afm)
            began = time.perf_counter()
            prediction = runner.predict(request)
            wall = time.perf_counter() - began
            latency = wall if settings.latency_s is None else settings.latency_s
            delay.observe_seconds(latency, runner.dt)
            chunk_id += 1
            chunk_ms.append(wall * 1e3)
            refined.append(float(np.mean(prediction.refined)))
            pending = (now + latency, Chunk(chunk_id, start, runner.dt, list(JOINT_NAMES), prediction.positions,
                                            0 if committed is None else len(committed), prediction.confidence,
                                            prediction.refined))
        if pending is not None and now >= pending[0] - 1e-9:
            if core.on_chunk(pending[1], now) is None:
                running = pending[1]
            pending = None
        tick_result = core.tick(now)
        starved += period if tick_result.reason == 'plan exhausted' else 0.0
        command = tick_result.command
        if command is not None:
            plant.set_targets(command)
        plant.advance(period)
        if plant.success():
            break
    return EpisodeResult(seed, plant.success(), plant.phase(), round(now, 2), round(plant.closest_block_distance, 4),
                         round(starved, 2), chunk_ms, refined)


def evaluate_closed_loop(runner: PolicyRunner, settings: LoopSettings, episodes: int, seed: int,
                         modes: dict[str, bool]) -> dict[str, list[EpisodeResult]]:
    """`episodes` scenes (seeds seed, seed + 1, ...) per mode ({name: self_correction})."""
    plant = SO101Plant(seed)
    results = {}
    try:
        for mode, self_correction in modes.items():
            results[mode] = []
            with tqdm(range(episodes), desc=f'closed loop ({mode})', unit='episode') as bar:
                for i in bar:
                    results[mode].append(run_episode(plant, runner, settings, seed + i, self_correction))
                    bar.set_postfix(success=f'{np.mean([r.success for r in results[mode]]):.2f}')
    finally:
        plant.close()
    return results


def summarize(results: dict[str, list[EpisodeResult]]) -> dict:
    summary = success_summary({mode: [e.success for e in episodes] for mode, episodes in results.items()})
    for mode, episodes in results.items():
        latencies = [ms for e in episodes for ms in e.chunk_ms]
        summary[f'phases_{mode}'] = phase_counts([e.phase for e in episodes])
        summary[f'p50_chunk_ms_{mode}'] = float(np.median(latencies)) if latencies else None
        summary[f'starved_s_{mode}'] = round(float(sum(e.starved_s for e in episodes)), 2)
    summary['episodes'] = len(next(iter(results.values()), []))
    return summary


def write_results(output: Path, results: dict[str, list[EpisodeResult]], summary: dict, description: dict) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    path = output / 'closed_loop.json'
    episodes = {mode: [{k: v for k, v in asdict(e).items() if k not in ('chunk_ms', 'refined_fraction')} for e in es]
                for mode, es in results.items()}
    path.write_text(json.dumps({**description, **summary, 'episodes_by_mode': episodes}, indent=1))
    return path
