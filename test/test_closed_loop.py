"""The ROS-free closed loop (`asyncvla evaluate --closed-loop`): the real sim and executor core, driven by the
expert's own plan (it must place the block) and by a tiny random policy through the command line."""

import dataclasses
import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from asyncvla_ros.model.runner import ChunkPrediction
from asyncvla_ros.sim.so101 import SO101Plant
from asyncvla_ros.tools.closed_loop import LoopSettings, node_request_settings, run_episode, sweep_runs
from asyncvla_ros.tools.processes import cli_command
from asyncvla_ros.training.demonstrations import FPS, INSTRUCTIONS, record_episode

pytestmark = pytest.mark.sim

SOURCE_ROOT = Path(__file__).resolve().parents[1]


class ExpertPlan:
    """A policy that answers each request with the expert's recorded targets at the chunk's own step times, as
    a time-continuous expert would: the target recorded at frame k is due at (k + 1/2) / FPS, the middle of the
    period it was held (where request_timing puts step 0 after an observation), and a request between frames
    gets the targets interpolated in between, so consecutive chunks agree where they overlap."""

    chunk_size, dt = 8, 1.0 / FPS
    camera_keys, num_joints = ['observation.images.front'], 6

    def __init__(self, plant: SO101Plant, targets: np.ndarray):
        self.plant, self.targets = plant, targets

    def predict(self, request) -> ChunkPrediction:
        assert request.committed is None  # delay compensation is off
        frames = self.plant.time / self.dt + np.arange(self.chunk_size)
        recorded = np.arange(len(self.targets))
        steps = np.stack([np.interp(frames, recorded, joint) for joint in self.targets.T], axis=1).astype(np.float32)
        return ChunkPrediction(steps, np.zeros(0, np.float32), np.zeros(self.chunk_size, bool), steps)


def expert_plan_episode(perturb=None):
    """Scene 7's expert recording, then its plan through the closed loop (20 ms a chunk): (recording, result)."""
    plant = SO101Plant(0, 64, 64)
    try:
        episode = record_episode(plant, seed=7)
        settings = LoopSettings(
            INSTRUCTIONS[0],
            node_request_settings(delay_compensation=False),
            episode_seconds=len(episode['action']) / FPS + 3.0,
            latency_s=0.02,
            perturb=perturb,
        )
        return episode, run_episode(plant, ExpertPlan(plant, episode['action']), settings, 7, self_correction=False)
    finally:
        plant.close()


def test_the_experts_plan_through_the_executor_places_the_block():
    episode, result = expert_plan_episode()
    assert episode['success'] and result.success and result.phase == 'placed', result
    assert result.min_block_distance_m < 0.03
    assert len(result.chunk_ms) >= len(episode['action']) // 8  # chunks kept coming until the block was placed


def test_a_slow_policy_is_asked_sooner_so_the_arm_never_waits_for_a_plan():
    """300 ms a chunk with `refill_threshold` 0: requests start the measured delay plus one step early."""
    plant = SO101Plant(0, 64, 64)
    try:
        episode = record_episode(plant, seed=7)
        settings = LoopSettings(
            INSTRUCTIONS[0],
            node_request_settings(refill_threshold=0, delay_compensation=False),
            episode_seconds=4.0,
            latency_s=0.3,
        )
        result = run_episode(plant, ExpertPlan(plant, episode['action']), settings, seed=7, self_correction=False)
    finally:
        plant.close()
    assert result.starved_s <= 0.1, result  # one period while the delay estimate settles (1.4 s without)


class AlternatingPolicy:
    """A scripted policy that disagrees with itself: each chunk holds the start pose shifted by +0.1 or -0.1 rad on
    the first joint, in turn, so every splice asks for a 0.2 rad jump."""

    chunk_size, dt = 8, 0.1
    camera_keys, num_joints = ['observation.images.front'], 6

    def __init__(self, start: np.ndarray):
        self.start, self.sign = start, 1.0

    def predict(self, request) -> ChunkPrediction:
        self.sign = -self.sign
        steps = np.tile(self.start + np.array([0.1 * self.sign, 0, 0, 0, 0, 0]), (self.chunk_size, 1))
        return ChunkPrediction(steps, np.zeros(0, np.float32), np.zeros(self.chunk_size, bool), steps)


@pytest.mark.parametrize('latency_s, starved', [(0.2, False), (0.6, True)])
def test_seam_metrics_see_the_jumps_a_policy_asks_for_and_the_holds_a_slow_one_causes(latency_s, starved):
    """Switching at once (fade 0), each splice asks for the 0.2 rad the policy changed its mind by: command jerk at the
    seams far above the jerk inside chunks. A policy slower than a chunk lasts leaves the executor without a plan."""
    plant = SO101Plant(0, 32, 32)
    try:
        plant.reset(3)
        policy = AlternatingPolicy(plant.joint_positions)
        base = LoopSettings(INSTRUCTIONS[0], node_request_settings(refill_threshold=0), episode_seconds=6.0)
        (settings,) = sweep_runs(base, [latency_s * 1e3], ['switch']).values()
        result = run_episode(plant, policy, settings, seed=3, self_correction=False)
    finally:
        plant.close()
    seams = result.seams
    assert 0.15 <= seams['splice_jump_max_rad'] <= 0.25 and seams['splice_jump_mean_rad'] >= 0.1, seams
    # the filter's catching up spills past a step; a starved executor's braking adds jerk inside too
    assert starved or seams['jerk_rms_seam'] > 3 * seams['jerk_rms_inside'], seams
    assert (seams['holds'] > 0) == starved and (seams['held_s'] > 0.1) == starved, seams
    assert seams['time_to_success_s'] is None and not result.success


@pytest.mark.parametrize('rate_hz', [2.5, 5.0])
def test_splice_interval_is_how_long_each_chunk_drives_the_arm(rate_hz):
    """At a fixed inference rate (policy_node's rate_hz) a new chunk replaces the plan once a period: the time
    between splices is that period, to the control tick."""
    plant = SO101Plant(0, 32, 32)
    try:
        plant.reset(3)
        settings = LoopSettings(
            INSTRUCTIONS[0], node_request_settings(rate_hz=rate_hz), episode_seconds=4.0, latency_s=0.02
        )
        result = run_episode(plant, AlternatingPolicy(plant.joint_positions), settings, seed=3, self_correction=False)
    finally:
        plant.close()
    assert result.seams['splice_interval_s'] == pytest.approx(1.0 / rate_hz, abs=0.011), result.seams


def asyncvla(*args, timeout=300) -> subprocess.CompletedProcess:
    """The `asyncvla` command line in a process of its own, from the source tree."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, cwd=SOURCE_ROOT)


def closed_loop_of_two_short_episodes(checkpoint, output, *options):
    """`asyncvla evaluate --closed-loop 2` of 1.5 s episodes with a 10 Hz camera; the finished process."""
    result = asyncvla(
        'evaluate',
        '--closed-loop',
        2,
        '--checkpoint',
        checkpoint,
        '--episode-seconds',
        1.5,
        '--camera-rate-hz',
        10,
        *options,
        '--output',
        output,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_a_sweep_runs_every_delay_and_mode_on_the_same_scenes_and_writes_a_table_and_a_plot(tiny_checkpoint, tmp_path):
    closed_loop_of_two_short_episodes(
        tiny_checkpoint, tmp_path / 'sweep', '--latency-ms', '0,200', '--modes', 'switch,committed'
    )
    report = json.loads((tmp_path / 'sweep' / 'closed_loop.json').read_text())
    rows = report['sweep']
    assert [(r['latency_ms'], r['mode']) for r in rows] == [
        (0, 'switch'),
        (0, 'committed'),
        (200, 'switch'),
        (200, 'committed'),
    ]
    assert all(r['episodes'] == 2 and len(r['ci95']) == 2 for r in rows)
    assert all('mcnemar_p_vs_switch' in r for r in rows if r['mode'] == 'committed')
    assert all('jerk_rms_seam' in r and 'episodes_with_holds' in r and 'splice_interval_s' in r for r in rows)
    by_run = report['episodes_by_mode']
    assert set(by_run) == {'switch@0ms', 'committed@0ms', 'switch@200ms', 'committed@200ms'}
    assert all([e['seed'] for e in episodes] == [1000, 1001] for episodes in by_run.values())  # paired scenes
    assert all('jerk_rms_seam' in e['seams'] for episodes in by_run.values() for e in episodes)
    table = (tmp_path / 'sweep' / 'sweep.md').read_text()
    assert table.startswith('`asyncvla evaluate --closed-loop 2 ') and table.count('\n| ') == 5
    assert (tmp_path / 'sweep' / 'sweep.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('fade', [None, 2.5])
def test_each_mode_sets_what_it_names_and_leaves_the_rest_as_the_run_sets_it(fade):
    base = LoopSettings(INSTRUCTIONS[0])
    if fade is not None:  # --chunk-fade-per-lateness: the fading modes take it
        base = dataclasses.replace(base, chunk_fade_per_lateness=fade)
    runs = sweep_runs(base, [100], ['switch', 'fade_quintic', 'committed_quintic'])
    switch, fade, committed = runs['switch@100ms'], runs['fade_quintic@100ms'], runs['committed_quintic@100ms']
    assert switch.chunk_fade_per_lateness == 0.0 and switch.interpolation == base.interpolation
    assert fade.chunk_fade_per_lateness == base.chunk_fade_per_lateness > 0 and fade.interpolation == 'quintic'
    assert committed.request.delay_compensation and not fade.request.delay_compensation
    assert all(
        run.latency_s == 0.1 and run.request.refill_threshold == base.request.refill_threshold for run in runs.values()
    )


def test_closed_loop_command_reports_success_and_phases(tiny_checkpoint, tmp_path):
    result = closed_loop_of_two_short_episodes(
        tiny_checkpoint,
        tmp_path / 'loop',
        '--latency-ms',
        '150',
        '--self-correction',
        'on',
        '--video',
        '--perturb',
        'arm',
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary['episodes'] == 2 and summary['success_rate_self_correction'] == 0.0  # a random policy
    report = json.loads((tmp_path / 'loop' / 'closed_loop.json').read_text())
    episodes = report['episodes_by_mode']['self_correction']
    assert report['settings']['camera_rate_hz'] == 10 and 'camera at 10 Hz' in result.stdout
    assert report['settings']['perturb'] == 'arm' and 'perturbed (arm)' in result.stdout
    # the push comes 1-4 s in, drawn per scene: within these 1.5 s episodes, or not at all
    assert all(e['perturbed_at_s'] is None or 1.0 <= e['perturbed_at_s'] <= 1.5 for e in episodes)
    assert [e['seed'] for e in episodes] == [1000, 1001] and sum(report['phases_self_correction'].values()) == 2
    assert all(e['seconds'] == pytest.approx(1.49, abs=0.011) for e in episodes)
    # each chunk step the arm went through, once: about one per 0.1 s, plus the step a new chunk starts in
    executed = sum(e['executed_steps'] for e in episodes)
    assert 2 * 10 <= executed <= 2 * 30 and all(0 <= e['executed_regenerated'] <= e['executed_steps'] for e in episodes)
    regenerated = sum(e['executed_regenerated'] for e in episodes)
    assert summary['executed_regenerated_share_self_correction'] == round(regenerated / executed, 4)
    videos = tmp_path / 'loop' / 'videos'
    for seed in (1000, 1001):  # 1.5 s filmed at the sim camera's 10 Hz, twice the size
        with av.open(str(videos / f'self_correction_{seed}.mp4')) as container:
            frames = list(container.decode(video=0))
        assert len(frames) == 15 and (frames[0].height, frames[0].width) == (448, 448)
    assert (videos / 'contact_sheet.png').stat().st_size > 1000


@pytest.mark.parametrize(
    'bad',
    [
        ['--closed-loop', '0'],
        ['--closed-loop', '1', '--latency-ms', '-5'],
        ['--closed-loop', '1', '--refill-threshold', '-1'],
        ['--closed-loop', '1', '--camera-rate-hz', '0'],
        ['--closed-loop', '1', '--latency-ms', '100,-1'],
    ],
)
def test_closed_loop_refuses_bad_arguments(bad, tmp_path):
    result = subprocess.run(
        cli_command('evaluate', *bad, '--output', tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SOURCE_ROOT,
    )
    assert result.returncode == 2 and 'is below' in result.stderr and 'Traceback' not in result.stderr


def test_closed_loop_reports_a_missing_checkpoint_in_one_line(tmp_path):
    result = asyncvla(
        'evaluate', '--closed-loop', 1, '--checkpoint', tmp_path / 'none', '--output', tmp_path / 'loop', timeout=120
    )
    assert result.returncode == 2 and str(tmp_path / 'none') in result.stderr and 'Traceback' not in result.stderr


def test_demo_report_states_rates_latency_per_stage_and_seams(tmp_path):
    from asyncvla_ros.tools.demo import LATENCY_STAGES, demo_summary, write_report
    from asyncvla_ros.tools.video import EpisodeFrames

    frames = EpisodeFrames('scene 1, sfm', 10.0)
    for phase in ('none', 'reached', 'placed'):
        frames.add(np.zeros((32, 32, 3), np.uint8), phase)

    def episode(success, total_ms, phase='placed'):
        return {
            'success': success,
            'phase': phase,
            'seconds': 5.0,
            'chunk_ms': total_ms,
            'observation_age_ms': [40.0] * len(total_ms),
            'stages_ms': {
                stage: [i + 1.0 if stage != 'total' else ms for ms in total_ms]
                for i, stage in enumerate(LATENCY_STAGES)
            },
            'refined_fraction': [0.5],
            'confidence': [[0.9] * 8],
            'joints': [(0.0, [0.0] * 6), (0.1, [0.1] * 6)],
            'video': tmp_path / 'videos' / f'{phase}.mp4',
            'key_frames': (frames.key_only(), phase),
            'seams': {
                'jerk_rms_seam': 30.0 if success else 50.0,
                'jerk_rms_inside': 10.0,
                'splice_jump_max_rad': 0.2,
                'holds': 0 if success else 2,
                'time_to_success_s': 5.0 if success else None,
            },
        }

    results = {
        'self_correction': [episode(True, [100.0, 300.0]), episode(False, [200.0], 'carried')],
        'sfm': [episode(False, [50.0], 'reached'), episode(False, [70.0], 'reached')],
    }
    summary = demo_summary(results, real_time_factor=1.0)
    assert summary['phases_sfm'] == {'none': 0, 'reached': 2, 'carried': 0, 'placed': 0}
    assert summary['p50_chunk_ms'] == 200.0 and summary['episodes'] == 2
    report = write_report(tmp_path, results, summary).read_text()
    assert '| self_correction | 2 | 0.50 | 0.095-0.905 | none 0, reached 0, carried 1, placed 1 |' in report
    assert '| sfm | 2 | 0.00 | 0.000-0.658 | none 0, reached 2, carried 0, placed 0 |' in report
    assert '| self_correction | 1 | 2 | 3 | 4 | 200 | 40 |' in report and '| sfm | 1 | 2 | 3 | 4 | 60 | 40 |' in report
    assert (
        '| self_correction | 40.0 / 10.0 | 0.2 | 1 | 5.0 |' in report
        and '| sfm | 50.0 / 10.0 | 0.2 | 2 | None |' in report
    )
    assert all(
        (tmp_path / name).stat().st_size > 1000
        for name in ('joints.png', 'confidence.png', 'latency.png', 'contact_sheet.png')
    )
    assert '![key frames of every episode](contact_sheet.png)' in report
    assert '- [self_correction 2](videos/carried.mp4): carried' in report and '- [sfm 1](videos/reached.mp4)' in report
    # a demo stopped with Ctrl-C during the SFM-only episodes reports what it ran, unpaired
    partial = {'self_correction': results['self_correction'], 'sfm': results['sfm'][:1]}
    summary = demo_summary(partial, real_time_factor=0.25)
    assert 'mcnemar_p' not in summary and summary['success_rate_sfm'] == 0.0 and summary['real_time_factor'] == 0.25
    assert '| sfm | 1 | 0.00 |' in write_report(tmp_path / 'partial', partial, summary).read_text()


def test_demo_paces_the_sim_by_where_the_policy_runs(tmp_path):
    import torch

    from asyncvla_ros.tools.cli import build_parser
    from asyncvla_ros.tools.demo import CPU_REAL_TIME_FACTOR, auto_real_time_factor

    parse = build_parser().parse_args
    assert (
        parse(['demo']).real_time_factor == 'auto'
        and parse(['demo', '--real-time-factor', '1']).real_time_factor == 1.0
    )
    assert auto_real_time_factor('cpu') == CPU_REAL_TIME_FACTOR < 1.0  # a GPU present or not
    assert auto_real_time_factor('auto') == (1.0 if torch.cuda.is_available() else CPU_REAL_TIME_FACTOR)
    result = subprocess.run(
        cli_command('demo', '--real-time-factor', 'fast', '--output', tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SOURCE_ROOT,
    )
    assert result.returncode == 2 and "'fast' is neither auto nor a number" in result.stderr


def test_success_summary_gives_wilson_intervals_and_the_paired_difference():
    from asyncvla_ros.training.metrics import success_summary

    on = [True] * 16 + [False] * 8
    off = [True] * 12 + [False] * 4 + [True] * 2 + [False] * 6  # same scenes: 4 only on, 2 only off
    summary = success_summary({'self_correction': on, 'sfm': off})
    assert summary['success_rate_self_correction'] == pytest.approx(16 / 24)
    assert summary['success_ci95_self_correction'] == [0.467, 0.82]  # Wilson score interval
    assert (summary['only_self_correction'], summary['only_sfm']) == (4, 2)
    assert summary['mcnemar_p'] == pytest.approx(0.6875)  # exact two-sided binomial on 6 discordant scenes
    assert json.loads(json.dumps(summary)) == summary  # plain numbers for the JSON line
    assert all(type(v) is float for v in [*summary['success_ci95_sfm'], summary['mcnemar_p']])
    assert success_summary({'sfm': [False] * 5})['success_ci95_sfm'][0] == 0.0
    assert 'mcnemar_p' not in success_summary({'a': [True], 'b': [True, False]})  # not paired


def test_perturbations_move_the_block_or_the_arm_as_drawn_from_the_scene_seed():
    from asyncvla_ros.tools.closed_loop import Perturbation

    assert Perturbation.draw('arm', 6100) == Perturbation.draw('arm', 6100) != Perturbation.draw('arm', 6101)
    block, arm = Perturbation.draw('block', 6100), Perturbation.draw('arm', 6100)
    assert 0.01 <= np.hypot(*block.offset) <= 0.03 and 1.0 <= arm.at_s <= 4.0
    assert all(0.05 <= abs(o) <= 0.15 for o in arm.offset[:3]) and not any(arm.offset[3:])
    plant = SO101Plant(0, 64, 64, render=False)
    try:
        plant.set_targets(plant.joint_positions)
        before = plant.block_position
        block.apply(plant)
        plant.advance(0.2)  # it stays where it was put
        assert np.allclose(plant.block_position[:2] - before[:2], block.offset, atol=0.002)
        joints = plant.joint_positions
        arm.apply(plant)
        assert np.allclose(plant.joint_positions - joints, arm.offset, atol=1e-9)
        plant.advance(1.0)  # and the servos pull the arm back to its targets
        assert np.max(np.abs(plant.joint_positions - joints)[:3]) < 0.5 * np.max(np.abs(arm.offset))
    finally:
        plant.close()


def test_a_perturbed_expert_meets_its_disturbance_during_the_reach():
    episode, result = expert_plan_episode(perturb='block')
    assert result.perturbed_at_s is not None and 0.0 < result.perturbed_at_s < len(episode['action']) / FPS
