"""`asyncvla evaluate`: the policy open loop over a LeRobot dataset or a rosbag2 (no DDS, as fast as the
model runs). Each query is one recorded observation; its chunk is compared with what was recorded over
the next L steps: the dataset's actions, or the bag's commands (its joint states if it has none).
Queries are `stride` steps apart (default L: each recorded step is predicted once, as a policy that
is asked once per chunk would)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asyncvla_ros.control.profile import RobotProfile
from asyncvla_ros.model.interface import ChunkRequest, Policy, Sampling
from asyncvla_ros.nodes.conversions import image_to_rgb
from asyncvla_ros.tools.bags import BagError, bag_topics, open_bag, require_topics
from asyncvla_ros.training.lerobot_format import DatasetError, DatasetSpec, LeRobotDataset
from asyncvla_ros.training.metrics import (
    chunk_bootstrap,
    rater_spearman,
    rater_spearman_within_position,
    reliability_bins,
)

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
COMMAND_TYPES = ('trajectory_msgs/msg/JointTrajectory', 'std_msgs/msg/Float64MultiArray')


@dataclass
class Query:
    images: list  # one (H, W, 3) uint8 RGB per camera, in the checkpoint's order
    state: np.ndarray  # (J,)
    instruction: str
    truth: np.ndarray  # (L, J) what was recorded over the chunk's horizon
    valid: np.ndarray  # (L,) bool: False past the end of the recording


@dataclass
class Source:
    description: str
    queries: list[Query]
    seconds: float  # recorded time the queries cover
    mean_action: np.ndarray | None = None  # (J,) the dataset's mean action: the baseline of action_error_ratio


def dataset_source(root: Path, runner: Policy, stride: int) -> Source:
    dataset = LeRobotDataset(
        DatasetSpec(root=Path(root), select_video_keys=list(runner.camera_keys)), runner.chunk_size
    )
    if abs(dataset.fps * runner.dt - 1.0) > 1e-6:
        raise DatasetError(f'{root}: recorded at {dataset.fps} fps but the checkpoint predicts steps of {runner.dt} s')
    queries = []
    for i, (row, episode) in enumerate(dataset.index):
        if (row - episode['dataset_from_index']) % stride == 0:
            sample = dataset[i]
            queries.append(
                Query(sample['images'], sample['state'], sample['task'], sample['actions'], ~sample['action_is_pad'])
            )
    return Source(
        f'LeRobot dataset {root} ({len(dataset.episodes)} episodes, {len(dataset)} frames)',
        queries,
        len(dataset) / dataset.fps,
        np.asarray(dataset.stats['action']['mean']),
    )


class _Series:
    """Timestamped values from a bag (receive time, seconds) with 'latest at or before t' lookup."""

    def __init__(self):
        self.times, self.values = [], []

    def add(self, stamp: float, value) -> None:
        self.times.append(stamp)
        self.values.append(value)

    def latest(self, t: float):
        i = int(np.searchsorted(self.times, t, side='right')) - 1
        return (self.times[i], self.values[i]) if i >= 0 else (None, None)


def _absolute(topic: str) -> str:
    """Bags store full names; the parameters' relative names are in the root namespace here."""
    return topic if topic.startswith('/') else f'/{topic}'


def _check_type(topics: dict, topic: str, allowed: tuple, path) -> None:
    if topics[topic].msgtype not in allowed:
        raise BagError(f'{path}: {topic} holds {topics[topic].msgtype}, expected {" or ".join(allowed)}')


def _command_points(msg, msgtype: str, stamp: float, joints: list[str]):
    """(time, positions in `joints` order) of a command message; trajectory points are placed at their
    offsets from the first point."""
    if msgtype.endswith('Float64MultiArray'):
        data = np.asarray(msg.data, float)
        return [(stamp, data)] if len(data) == len(joints) else []
    order = [list(msg.joint_names).index(j) for j in joints] if set(joints) <= set(msg.joint_names) else None
    if order is None or not msg.points:
        return []
    first = msg.points[0].time_from_start
    offset = lambda d: (d.sec - first.sec) + (d.nanosec - first.nanosec) * 1e-9  # noqa: E731
    return [(stamp + offset(p.time_from_start), np.asarray(p.positions, float)[order]) for p in msg.points]


def bag_source(
    path: Path,
    runner: Policy,
    stride: int,
    camera_topics: list[str],
    joint_names: list[str],
    joint_topic: str,
    command_topic: str,
    instruction_topic: str,
    instruction: str,
    profile: RobotProfile,
) -> Source:
    """Queries from a recorded session. Joint states and commands are in robot units in a bag; `profile` maps
    them into the policy's units, as policy_node maps what it receives, so states and truth are the policy's."""
    camera_topics, joint_topic, command_topic, instruction_topic = (
        [_absolute(t) for t in camera_topics],
        _absolute(joint_topic),
        _absolute(command_topic),
        _absolute(instruction_topic),
    )
    if len(camera_topics) != len(runner.camera_keys):
        raise BagError(
            f'{len(camera_topics)} camera topic(s) for a checkpoint with {len(runner.camera_keys)} camera(s)'
        )
    images = {t: _Series() for t in camera_topics}
    states, commands, instructions = _Series(), [], _Series()
    with open_bag(path) as reader:
        require_topics(reader, [*camera_topics, joint_topic], path)
        topics = bag_topics(reader)
        for topic in camera_topics:
            _check_type(topics, topic, IMAGE_TYPES, path)
        _check_type(topics, joint_topic, ('sensor_msgs/msg/JointState',), path)
        truth_topic = command_topic if command_topic in topics else joint_topic
        if truth_topic == command_topic:
            _check_type(topics, command_topic, COMMAND_TYPES, path)
        wanted = {*camera_topics, joint_topic, truth_topic, instruction_topic}
        skipped = 0
        for connection, stamp_ns, raw in reader.messages([c for c in reader.connections if c.topic in wanted]):
            stamp, msg = stamp_ns * 1e-9, reader.deserialize(raw, connection.msgtype)
            if connection.topic in images:
                try:
                    images[connection.topic].add(stamp, image_to_rgb(msg))
                except ValueError:
                    skipped += 1
            if connection.topic == joint_topic:
                if not set(joint_names) <= set(msg.name):
                    continue
                positions = np.asarray(msg.position, float)[[list(msg.name).index(j) for j in joint_names]]
                if np.all(np.isfinite(positions)):
                    states.add(stamp, positions)
                    if truth_topic == joint_topic:
                        commands.append((stamp, positions))
            elif connection.topic == truth_topic:
                commands.extend(_command_points(msg, connection.msgtype, stamp, joint_names))
            if connection.topic == instruction_topic:
                instructions.add(stamp, msg.data)
    if skipped:
        print(f'evaluate: skipped {skipped} image(s) that do not decode')
    if not states.times or not commands:
        raise BagError(
            f'{path}: no joint states with all of {joint_names} on {joint_topic}, or nothing on {truth_topic}'
        )
    commands.sort(key=lambda c: c[0])
    command_times = np.array([c[0] for c in commands])
    command_values = profile.to_policy(np.array([c[1] for c in commands]), joint_names)
    step = stride * runner.dt
    first = max(s.times[0] for s in images.values() if s.times) if all(s.times for s in images.values()) else None
    if first is None:
        raise BagError(f'{path}: no decodable image on {", ".join(t for t, s in images.items() if not s.times)}')
    queries = []
    horizon = np.arange(runner.chunk_size) * runner.dt
    for t in np.arange(max(first, states.times[0]), command_times[-1], step):
        when = t + horizon
        valid = (when >= command_times[0]) & (when <= command_times[-1])
        if not valid.any():
            continue
        truth = np.stack(
            [np.interp(when, command_times, command_values[:, j]) for j in range(len(joint_names))], axis=1
        )
        text = instructions.latest(t)[1] or instruction
        state = profile.to_policy(states.latest(t)[1], joint_names)
        queries.append(Query([images[c].latest(t)[1] for c in camera_topics], state, text, truth, valid))
    return Source(f'rosbag2 {path} (truth: {truth_topic}, {len(commands)} points)', queries, len(queries) * step)


def evaluate(runner: Policy, source: Source, sampling: Sampling) -> dict:
    """Runs every query once with self-correction (the SFM chunk before it comes with it) and aggregates."""
    if not source.queries:
        raise BagError(f'{source.description}: nothing to evaluate (no query has recorded steps after it)')
    L, J = runner.chunk_size, runner.num_joints
    error_sum, sfm_sum, count = np.zeros((L, J)), np.zeros((L, J)), np.zeros((L, 1))
    confidences, step_errors, refined, latency, baseline_sum = [], [], [], [], 0.0
    positions, chunk_of_step, afm_before, afm_after = [], [], [], []  # rated steps; regenerated steps
    started = time.perf_counter()
    for index, query in enumerate(tqdm(source.queries, desc='evaluate', unit='chunk')):
        began = time.perf_counter()
        prediction = runner.predict(
            ChunkRequest(query.images, query.state, query.instruction, sampling=replace(sampling, self_correction=True))
        )
        latency.append((time.perf_counter() - began) * 1e3)
        valid = query.valid[:, None]
        error_sum += np.abs(prediction.positions - query.truth) * valid
        sfm_error = np.abs(prediction.sfm_positions - query.truth)
        sfm_sum += sfm_error * valid
        count += valid
        if source.mean_action is not None:
            baseline_sum += float((np.abs(source.mean_action - query.truth) * valid).sum())
        refined.extend(prediction.refined[query.valid].tolist())
        if prediction.confidence.size:
            confidences.extend(prediction.confidence[query.valid].tolist())
            step_errors.extend(sfm_error.mean(axis=1)[query.valid].tolist())
            positions.extend(np.flatnonzero(query.valid).tolist())
            chunk_of_step.extend([index] * int(query.valid.sum()))
        regenerated = prediction.refined & query.valid
        afm_before.extend(sfm_error.mean(axis=1)[regenerated].tolist())
        afm_after.extend(np.abs(prediction.positions - query.truth).mean(axis=1)[regenerated].tolist())
    seconds = time.perf_counter() - started
    horizon = error_sum / np.maximum(count, 1)
    horizon_sfm = sfm_sum / np.maximum(count, 1)
    weights = count[:, 0] / count.sum()
    action_error = float((horizon.mean(axis=1) * weights).sum())
    ratio = (
        {} if source.mean_action is None else {'action_error_ratio': action_error / (baseline_sum / (count.sum() * J))}
    )
    return {
        **ratio,
        'action_error': action_error,
        'action_error_sfm': float((horizon_sfm.mean(axis=1) * weights).sum()),
        'rater_spearman': rater_spearman(confidences, step_errors),
        'rater_spearman_ci95': chunk_bootstrap(rater_spearman, chunk_of_step, confidences, step_errors),
        'rater_spearman_within_position': rater_spearman_within_position(confidences, step_errors, positions),
        'rater_spearman_within_position_ci95': chunk_bootstrap(
            rater_spearman_within_position, chunk_of_step, confidences, step_errors, positions
        ),
        # the steps AFM regenerated, their error (mean over joints) in the SFM chunk and after AFM, paired
        'regenerated_steps': len(afm_before),
        'afm_error_before': float(np.mean(afm_before)) if afm_before else float('nan'),
        'afm_error_after': float(np.mean(afm_after)) if afm_after else float('nan'),
        'refined_fraction': float(np.mean(refined)) if refined else 0.0,
        'latency_ms_p50': float(np.percentile(latency, 50)),
        'latency_ms_p95': float(np.percentile(latency, 95)),
        'realtime_factor': source.seconds / seconds,
        'queries': len(source.queries),
        'recorded_seconds': source.seconds,
        'horizon_error': horizon.tolist(),
        'horizon_error_sfm': horizon_sfm.tolist(),
        'confidence': confidences,
        'step_error_sfm': step_errors,
    }


SUMMARY_KEYS = (
    'action_error',
    'action_error_sfm',
    'rater_spearman',
    'rater_spearman_within_position',
    'afm_error_before',
    'afm_error_after',
    'realtime_factor',
)


def summary_keys(metrics: dict) -> tuple:
    """The last JSON line's keys: with a dataset, also the error relative to always predicting its mean action."""
    return SUMMARY_KEYS + (('action_error_ratio',) if 'action_error_ratio' in metrics else ())


def write_report(output: Path, metrics: dict, source: Source, checkpoint: str, joint_names: list[str]) -> Path:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    horizon, horizon_sfm = np.asarray(metrics['horizon_error']), np.asarray(metrics['horizon_error_sfm'])
    fig, ax = plt.subplots(figsize=(8, 4))
    for j, name in enumerate(joint_names):
        ax.plot(horizon[:, j], label=name)
    ax.plot(horizon.mean(axis=1), 'k-', lw=2, label='mean (self-correction)')
    ax.plot(horizon_sfm.mean(axis=1), 'k--', lw=2, label='mean (SFM only)')
    ax.set(xlabel='step of the chunk', ylabel='mean |predicted - recorded| (rad)', title='Error over the horizon')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(output / 'horizon_error.png', dpi=100)
    plt.close(fig)
    bins = reliability_bins(metrics['confidence'], metrics['step_error_sfm'])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(bins['centers'], np.nan_to_num(bins['mean_error']), width=0.09)
    for x, y, n in zip(bins['centers'], np.nan_to_num(bins['mean_error']), bins['counts']):
        if n:
            ax.annotate(str(n), (x, y), ha='center', va='bottom', fontsize=7)
    ax.set(
        xlabel='rater confidence',
        ylabel='mean SFM step error (rad)',
        xlim=(0, 1),
        title=f'Reliability (Spearman {metrics["rater_spearman"]:.3f}; counts on bars)',
    )
    fig.tight_layout()
    fig.savefig(output / 'reliability.png', dpi=100)
    plt.close(fig)
    summary = {
        k: metrics[k]
        for k in (
            *summary_keys(metrics),
            'rater_spearman_ci95',
            'rater_spearman_within_position_ci95',
            'regenerated_steps',
            'refined_fraction',
            'latency_ms_p50',
            'latency_ms_p95',
            'queries',
            'recorded_seconds',
        )
    }
    (output / 'metrics.json').write_text(
        json.dumps(
            {**summary, 'horizon_error': metrics['horizon_error'], 'horizon_error_sfm': metrics['horizon_error_sfm']},
            indent=1,
        )
    )
    rows = '\n'.join(f'| {k} | {v:.4g} |' if isinstance(v, float) else f'| {k} | {v} |' for k, v in summary.items())
    report = output / 'report.md'
    report.write_text(f"""# Offline evaluation

- source: {source.description}
- checkpoint: {checkpoint}
- open loop: each query's chunk against the recorded next {horizon.shape[0]} steps; errors in rad

| metric | value |
|---|---|
{rows}

![error over the horizon](horizon_error.png)

![reliability](reliability.png)
""")
    return report
