"""Training on LeRobot v3.0 data: the reader against the raw parquet values, a tiny run that lowers
the loss, and bad data failing with the file's name."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from asyncvla_ros.model.interface import ChunkRequest
from asyncvla_ros.model.runner import PolicyRunner
from asyncvla_ros.training.demonstrations import CAMERA_KEYS
from asyncvla_ros.training.lerobot_format import (
    EPISODES_PATH,
    DatasetError,
    DatasetSpec,
    LeRobotDataset,
    load_data_config,
)
from asyncvla_ros.training.trainer import TrainConfig, build_policy, collate, split_episodes, train_policy, train_rater

CAMERA_KEY = CAMERA_KEYS['front']


def spec(root):
    return DatasetSpec(root=root, select_video_keys=[CAMERA_KEY])


def test_reader_matches_the_raw_parquet_and_pads_at_episode_ends(dataset_root):
    raw = pq.read_table(dataset_root / 'data/chunk-000/file-000.parquet').to_pydict()
    episodes = pq.read_table(dataset_root / EPISODES_PATH).to_pylist()
    info = json.loads((dataset_root / 'meta/info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['total_episodes'] == 2 and info['fps'] == 10
    ds = LeRobotDataset(spec(dataset_root), chunk_size=8)
    assert len(ds) == len(raw['index']) == sum(e['length'] for e in episodes)
    first, second = episodes
    for i in (0, 5, first['length'] - 3, first['length'] + 2, len(ds) - 1):
        sample = ds[i]
        episode = first if i < first['dataset_to_index'] else second
        end = episode['dataset_to_index']
        expected = [raw['action'][min(j, end - 1)] for j in range(i, i + 8)]
        assert np.allclose(sample['actions'], expected)
        assert np.allclose(sample['state'], raw['observation.state'][i])
        assert list(sample['action_is_pad']) == [j >= end for j in range(i, i + 8)]
        assert sample['images'][0].shape == (64, 64, 3) and sample['episode_index'] == raw['episode_index'][i]
    assert ds[first['length'] - 3]['action_is_pad'].sum() == 5 and not ds[0]['action_is_pad'].any()


def test_a_spec_without_video_keys_takes_every_camera(dataset_root):
    """make-dataset records the front and wrist cameras; a spec naming none (`--dataset`) reads both, in order."""
    ds = LeRobotDataset(DatasetSpec(root=dataset_root), chunk_size=8)
    assert list(ds.spec.select_video_keys) == ['observation.images.front', 'observation.images.wrist']
    front, wrist = ds[10]['images']
    assert front.shape == wrist.shape == (64, 64, 3) and np.abs(front.astype(int) - wrist).mean() > 10


def test_video_frames_follow_the_episodes(dataset_root):
    ds = LeRobotDataset(spec(dataset_root), chunk_size=8)
    first = ds.episodes[0]['length']
    # consecutive frames of one episode are alike; the first frame of the next episode is a new scene
    assert (
        np.abs(ds[1]['images'][0].astype(int) - ds[0]['images'][0]).mean()
        < np.abs(ds[first]['images'][0].astype(int) - ds[first - 1]['images'][0]).mean() + 5
    )


def test_data_yaml_in_the_eo1_schema(dataset_root, tmp_path):
    path = tmp_path / 'data.yaml'
    path.write_text(
        f'lerobot_datasets:\n  - repo_id: local/so101\n    root: {dataset_root}\n'
        f'    select_video_keys: [{CAMERA_KEY}]\n    select_state_keys: [observation.state]\n'
        f'    select_action_keys: [action]\n    weight: 1.0\n'
    )
    specs = load_data_config(path)
    assert specs[0].repo_id == 'local/so101' and list(specs[0].select_video_keys) == [CAMERA_KEY]


@pytest.mark.parametrize('mode', ['absolute', 'delta'])
def test_action_modes_round_trip_and_delta_statistics(dataset_root, mode):
    ds = LeRobotDataset(spec(dataset_root), chunk_size=8)
    _, processor = build_policy(
        TrainConfig(preset='tiny', image_size=56, action_mode=mode), ds, sorted(ds.tasks.values())
    )
    samples = [ds.chunk_at(i) for i in range(len(ds))]
    states, actions = np.stack([s['state'] for s in samples]), np.stack([s['actions'] for s in samples])
    normalised = processor.normalize_actions(actions, states)
    assert normalised.shape == (len(ds), 8, processor.max_action_dim)
    np.testing.assert_allclose(processor.unnormalize_actions(normalised, states), actions, atol=1e-4)
    used = normalised[..., : processor.action_dim].reshape(-1, processor.action_dim)
    if mode == 'delta':  # statistics of action[t+k] - state[t]: the normalised deltas are standardised
        np.testing.assert_allclose(used.mean(0), 0, atol=1e-3)
        np.testing.assert_allclose(used.std(0), 1, atol=1e-3)
        held = processor.unnormalize_actions(
            processor.normalize_actions(np.repeat(states[:, None], 8, 1), states), states + 1.0
        )
        np.testing.assert_allclose(
            held, np.repeat(states[:, None] + 1.0, 8, 1), atol=1e-4
        )  # relative to the given state


def test_tiny_training_run_lowers_the_loss(dataset_root, tmp_path):
    config = TrainConfig(
        preset='tiny',
        steps=250,
        batch_size=8,
        lr=1e-3,
        vision_lr=1e-3,
        image_size=56,
        weight_decay=0.0,
        validate_every=0,
        save_every=0,
        seed=0,
    )
    train_episodes, _ = split_episodes(spec(dataset_root), config.held_out_fraction)
    ds = LeRobotDataset(spec(dataset_root), 8, episodes=train_episodes)
    model, processor = build_policy(config, ds, sorted(ds.tasks.values()))  # what train_policy starts from
    batch = collate([ds[i] for i in range(0, len(ds), max(1, len(ds) // 8))][:8], processor)
    fixed = {
        'flow_mask': torch.ones(batch['actions'].shape[:2], dtype=torch.bool),
        'tau': torch.linspace(0.1, 0.9, len(batch['actions'])),
        'noise': torch.randn(batch['actions'].shape, generator=torch.Generator().manual_seed(0)),
    }

    def fixed_loss(model):
        with torch.no_grad():
            return model.eval()(**batch, **fixed).loss.item()

    from asyncvla_ros.model import load_checkpoint

    result = train_policy([spec(dataset_root)], tmp_path / 'run', config)
    trained, trained_processor = load_checkpoint(result['output'], device='cpu')
    assert trained_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    before, after = fixed_loss(model), fixed_loss(trained)
    print(f'fixed-batch loss {before:.4f} -> {after:.4f} in {result["seconds"]} s')
    assert after < 0.85 * before
    assert (tmp_path / 'run/train_log.csv').read_text().count('\n') == 251


def test_resumed_training_continues_the_step_count_and_the_schedule(dataset_root, tmp_path):
    config = TrainConfig(
        preset='tiny', steps=6, batch_size=2, image_size=56, validate_every=0, save_every=3, warmup_ratio=0.0
    )
    train_policy([spec(dataset_root)], tmp_path / 'run', config)
    resumed = train_policy([spec(dataset_root)], tmp_path / 'resumed', config, resume=tmp_path / 'run/checkpoint-3')
    rows = (tmp_path / 'resumed/train_log.csv').read_text().splitlines()[1:]
    first = (tmp_path / 'run/train_log.csv').read_text().splitlines()[1:]
    assert [r.split(',')[0] for r in rows] == ['4', '5', '6'] and resumed['steps'] == 6
    assert [r.split(',')[2] for r in rows] == [r.split(',')[2] for r in first[3:]]  # same learning rates


def test_fine_tuning_starts_from_the_checkpoint_with_a_fresh_schedule(dataset_root, tmp_path):
    from safetensors.torch import load_file

    config = TrainConfig(preset='tiny', steps=3, batch_size=2, image_size=56, validate_every=0, save_every=0)
    train_policy([spec(dataset_root)], tmp_path / 'run', config)
    frozen = dataclasses.replace(
        config,
        lr=0.0,
        vision_lr=0.0,  # no update: the weights must be the checkpoint's
        afm_prefix_prob=0.9,
    )  # a training setting of the fine-tune, saved with it
    tuned = train_policy([spec(dataset_root)], tmp_path / 'tuned', frozen, init_from=tmp_path / 'run')
    saved = json.loads((tmp_path / 'tuned/config.json').read_text())['afm_prefix_prob']
    assert saved == 0.9 != json.loads((tmp_path / 'run/config.json').read_text())['afm_prefix_prob']
    rows = (tmp_path / 'tuned/train_log.csv').read_text().splitlines()[1:]
    assert [r.split(',')[0] for r in rows] == ['1', '2', '3'] and tuned['steps'] == 3
    source, result = load_file(tmp_path / 'run/model.safetensors'), load_file(tmp_path / 'tuned/model.safetensors')
    assert source.keys() == result.keys()
    assert all(torch.equal(source[k], result[k]) for k in source)
    assert (tmp_path / 'run/normalization.json').read_text() == (tmp_path / 'tuned/normalization.json').read_text()


def test_fine_tuning_to_longer_chunks_keeps_the_weights_and_asks_for_a_new_rater(dataset_root, tmp_path):
    """--chunk-size on a fine-tune: the same backbone and statistics generate 12-step chunks; the rater keeps its
    8 step rows and needs train-rater before it may steer self-correction."""
    from safetensors.torch import load_file

    from asyncvla_ros.model import load_checkpoint

    config = TrainConfig(preset='tiny', steps=3, batch_size=2, image_size=56, validate_every=0, save_every=0)
    train_policy([spec(dataset_root)], tmp_path / 'run', config)
    rated = train_rater(tmp_path / 'run', [spec(dataset_root)], tmp_path / 'rated', 2, 2, 1e-3, validation_samples=2)
    longer = dataclasses.replace(config, lr=0.0, vision_lr=0.0, chunk_size=12)
    train_policy([spec(dataset_root)], tmp_path / 'long', longer, init_from=rated['output'])
    source, result = load_file(tmp_path / 'rated/model.safetensors'), load_file(tmp_path / 'long/model.safetensors')
    rows = 'rater.step_embedding.weight'
    assert torch.equal(result[rows][:8], source[rows]) and torch.equal(result[rows][8:], source[rows][[7] * 4])
    assert all(torch.equal(source[k], result[k]) for k in source if k != rows)
    assert (tmp_path / 'rated/normalization.json').read_text() == (tmp_path / 'long/normalization.json').read_text()
    model, processor = load_checkpoint(tmp_path / 'long', device='cpu')
    assert model.config.action_chunk_size == processor.action_chunk_size == 12 and not model.config.rater_trained
    fresh = train_policy([spec(dataset_root)], tmp_path / 'fresh', longer)  # a new model is built that long
    rows_fresh = load_file(tmp_path / 'fresh/model.safetensors')[rows]
    assert rows_fresh.shape[0] == 12 and not torch.equal(rows_fresh[8], rows_fresh[11]), fresh
    runner = PolicyRunner(tmp_path / 'long', device='cpu')
    images = [np.zeros((56, 56, 3), np.uint8)] * len(runner.camera_keys)
    prediction = runner.predict(ChunkRequest(images, np.zeros(runner.num_joints), 'pick'))
    assert prediction.positions.shape == (12, runner.num_joints) and not prediction.refined.any()


def test_rater_training_reports_calibration_and_keeps_the_policy(dataset_root, tmp_path):
    from asyncvla_ros.model import load_checkpoint

    run = train_policy(
        [spec(dataset_root)],
        tmp_path / 'run',
        TrainConfig(preset='tiny', steps=5, batch_size=4, image_size=56, validate_every=0, save_every=0),
    )
    # a random tiny policy's step errors differ by their position and little else: chunk-wide labels are learnable
    config = Path(run['output']) / 'config.json'
    config.write_text(json.dumps({**json.loads(config.read_text()), 'rater_label_per_position': False}))
    result = train_rater(
        run['output'], [spec(dataset_root)], tmp_path / 'rated', steps=20, batch_size=4, lr=1e-3, validation_samples=8
    )
    assert np.isfinite(result['action_error_ratio']) and -1.0 <= result['rater_spearman'] <= 1.0
    assert result['last_loss'] < result['first_loss']
    before, _ = load_checkpoint(run['output'], device='cpu')
    after, _ = load_checkpoint(tmp_path / 'rated', device='cpu')
    assert not before.config.rater_trained and after.config.rater_trained  # a fresh rater never steers an arm
    policy_same = all(
        torch.equal(v, after.state_dict()[k]) for k, v in before.state_dict().items() if not k.startswith('rater.')
    )
    rater_changed = not torch.equal(before.rater.head.weight, after.rater.head.weight)
    assert policy_same and rater_changed


def _copy(root, tmp_path):
    target = tmp_path / 'copy'
    shutil.copytree(root, target)
    return target


@pytest.mark.parametrize(
    'damage, file',
    [
        ('missing_key', 'info.json'),
        ('wrong_dims', 'stats.json'),
        ('corrupt_video', 'file-000.mp4'),
        ('empty_episode', 'file-000.parquet'),
        ('missing_column', 'data'),
    ],
)
def test_bad_data_fails_with_the_file_name(dataset_root, tmp_path, damage, file):
    root = _copy(dataset_root, tmp_path)
    selected = spec(root)
    if damage == 'missing_key':
        selected = DatasetSpec(root=root, select_video_keys=['observation.images.side'])
    elif damage == 'wrong_dims':
        stats = json.loads((root / 'meta/stats.json').read_text())
        del stats['action']
        (root / 'meta/stats.json').write_text(json.dumps(stats))
    elif damage == 'corrupt_video':
        video = root / f'videos/{CAMERA_KEY}/chunk-000/file-000.mp4'
        video.write_bytes(video.read_bytes()[:2000])
    elif damage == 'empty_episode':
        table = pq.read_table(root / EPISODES_PATH).to_pylist()
        table[1]['length'] = 0
        pq.write_table(pa.Table.from_pylist(table), root / EPISODES_PATH)
    elif damage == 'missing_column':
        data = root / 'data/chunk-000/file-000.parquet'
        pq.write_table(pq.read_table(data).drop(['action']), data)
    with pytest.raises(DatasetError, match=file.replace('.', r'\.')):
        LeRobotDataset(selected, 8)


def test_training_commands_report_a_bad_checkpoint_without_a_traceback(dataset_root, tmp_path, capsys):
    from asyncvla_ros.tools.cli import main

    missing = tmp_path / 'no_checkpoint'
    train = [
        'train',
        '--dataset',
        str(dataset_root),
        '--preset',
        'tiny',
        '--steps',
        '1',
        '--output',
        str(tmp_path / 'run'),
    ]
    for command in (
        [*train, '--resume', str(missing)],
        [*train, '--init-from', str(missing)],
        ['export', '--checkpoint', str(missing), '--output', str(tmp_path / 'out')],
        ['make-dataset', '--episodes', '1', '--output', str(tmp_path / 'data'), '--recovery-policy', str(missing)],
    ):
        assert main(command) == 2, command
    err = capsys.readouterr().err
    assert err.count(str(missing)) == 4 and 'Traceback' not in err


def test_the_within_position_spearman_sees_only_what_a_rater_knows_beyond_the_step_position():
    from asyncvla_ros.training.metrics import chunk_bootstrap, rater_spearman, rater_spearman_within_position

    rng = np.random.default_rng(0)
    chunks, length = 80, 8
    position = np.tile(np.arange(length), chunks)
    chunk = np.repeat(np.arange(chunks), length)
    error = 0.1 * position + 0.05 * rng.random(position.size)  # later steps are worse, and each step its own
    by_position = 1.0 - position / length + 1e-3 * rng.random(position.size)  # a rater that knows the position only
    informed = 1.0 - error  # one that knows each step's error
    assert rater_spearman(by_position, error) > 0.9  # overall, both look good
    assert abs(rater_spearman_within_position(by_position, error, position)) < 0.15
    assert rater_spearman_within_position(informed, error, position) > 0.99
    low, high = chunk_bootstrap(rater_spearman_within_position, chunk, by_position, error, position, resamples=200)
    assert low < 0.0 < high
    low, high = chunk_bootstrap(rater_spearman_within_position, chunk, informed, error, position, resamples=200)
    assert low > 0.99
