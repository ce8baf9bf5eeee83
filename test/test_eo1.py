"""EO-1 checkpoints in and out, proven against what EO-1's own code computed (test/fixtures/eo1_tiny, a copy
of ../shared/fixtures/eo1_tiny: a tiny EO-1 checkpoint and EO-1's `sample_actions` with it)."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from asyncvla_ros.model.eo1 import asyncvla_to_eo1_key, config_from_eo1, import_eo1, map_eo1_tensors
from asyncvla_ros.model.interface import CheckpointError, Sampling
from asyncvla_ros.model.modeling_asyncvla import UNTRAINED_RATER, AsyncVLAPolicy
from asyncvla_ros.tools.cli import main

FIXTURE = Path(__file__).parent / 'fixtures' / 'eo1_tiny'
SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'fixtures' / 'eo1_tiny'
CHUNK_AND_END = 9  # EO-1's prompt ends with the chunk's 8 action tokens and <action_end>; ours ends before them


def cli(*args) -> subprocess.CompletedProcess:
    """`asyncvla ARGS` in this process (the entry point's main): its exit code and what it printed."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope='module')
def reference():
    return load_file(FIXTURE / 'reference.safetensors')


@pytest.fixture(scope='module')
def imported():
    return import_eo1(FIXTURE / 'checkpoint')


@pytest.mark.skipif(not SHARED.is_dir(), reason='../shared is not beside this checkout')
def test_the_committed_fixture_is_the_shared_one():
    for path in SHARED.rglob('*'):
        if path.is_file():
            assert (FIXTURE / path.relative_to(SHARED)).read_bytes() == path.read_bytes(), path


@pytest.mark.parametrize('steps', [1, 10])
def test_sfm_matches_eo1_sample_actions(imported, reference, steps):
    """Our generate_chunk on EO-1's prompt without its action tokens, EO-1's initial noise, no self-correction."""
    result = imported.generate_chunk(
        reference['input_ids'][:, :-CHUNK_AND_END],
        reference['attention_mask'][:, :-CHUNK_AND_END],
        reference['pixel_values'],
        reference['image_grid_thw'],
        reference['states'],
        noise=reference['noise'],
        sampling=Sampling(self_correction=False, num_denoise_steps=steps),
    )
    error = (result.actions - reference[f'actions_{steps}_steps']).abs().max().item()
    assert error < 1e-4, f'{steps} steps: max abs error {error:.2e}'
    assert imported.config.action_attention == 'causal' and imported.dtype == torch.float32


def test_the_untrained_rater_never_steers(imported, reference):
    inputs = [reference[k] for k in ('input_ids', 'attention_mask')]
    with pytest.raises(ValueError, match='rater is untrained'):
        imported.generate_chunk(
            *[x[:, :-CHUNK_AND_END] for x in inputs],
            reference['pixel_values'],
            reference['image_grid_thw'],
            reference['states'],
            sampling=Sampling(self_correction=True),
        )
    assert 'train-rater' in UNTRAINED_RATER


@pytest.mark.parametrize(
    'damage, message',
    [
        ('missing', r'missing: state_proj\.weight'),
        ('unexpected', r'unexpected: extra_head\.weight'),
        ('shape', r'wrong shape: action_in_proj\.weight \(64, 16\)'),
        ('model_type', "model_type 'qwen2_5_vl'"),
        ('pickle', 'pickle files can run code'),
        ('activation', "action_act 'silu'"),
    ],
)
def test_bad_checkpoints_are_refused_with_one_clear_line(tmp_path, damage, message):
    source = tmp_path / 'eo1'
    shutil.copytree(FIXTURE / 'checkpoint', source)
    tensors = load_file(source / 'model.safetensors')
    config = json.loads((source / 'config.json').read_text())
    if damage == 'missing':
        tensors.pop('state_proj.weight')
    elif damage == 'unexpected':
        tensors['extra_head.weight'] = torch.zeros(2)
    elif damage == 'shape':
        tensors['action_in_proj.weight'] = torch.zeros(64, 16)
    elif damage == 'model_type':
        config['model_type'] = 'qwen2_5_vl'
    elif damage == 'pickle':
        (source / 'pytorch_model.bin').write_bytes(b'\x80\x04not really')
    elif damage == 'activation':
        config['action_act'] = 'silu'
    (source / 'model.safetensors').chmod(0o644)
    (source / 'config.json').chmod(0o644)
    save_file(tensors, source / 'model.safetensors', metadata={'format': 'pt'})
    (source / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        import_eo1(source)
    run = cli('import-eo1', source, '--output', tmp_path / 'out')
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and 'Traceback' not in run.stderr


def test_code_in_a_checkpoint_never_runs(imported):
    """The fixture's configuration_eo1.py raises if executed (shown here), its auto_map names it, and the import
    above ran without it."""
    import runpy

    assert json.loads((FIXTURE / 'checkpoint/config.json').read_text())['auto_map']
    with pytest.raises(RuntimeError, match='never be executed'):
        runpy.run_path(str(FIXTURE / 'checkpoint/configuration_eo1.py'))
    assert 'configuration_eo1' not in sys.modules and imported is not None


def test_import_then_export_round_trips_the_fixture_bit_for_bit(tmp_path):
    run = cli('import-eo1', FIXTURE / 'checkpoint', '--output', tmp_path / 'ours')
    assert run.returncode == 0, run.stderr
    assert 'action_out_proj.2 -> action_out_proj.1' in run.stdout and 'auto_map ignored' in run.stdout
    assert not list((tmp_path / 'ours').glob('*.py'))
    run = cli('export', '--checkpoint', tmp_path / 'ours', '--eo1', tmp_path / 'back')
    assert run.returncode == 0, run.stderr
    source, back = load_file(FIXTURE / 'checkpoint/model.safetensors'), load_file(tmp_path / 'back/model.safetensors')
    assert source.keys() == back.keys()
    assert all(source[k].dtype == back[k].dtype and torch.equal(source[k], back[k]) for k in source)
    assert json.loads((tmp_path / 'back/config.json').read_text()) == json.loads(
        (FIXTURE / 'checkpoint/config.json').read_text()
    )


def _eo1_3b_config() -> dict:
    """EO-1's config.json for the real Qwen2.5-VL-3B backbone."""
    fixture = json.loads((FIXTURE / 'checkpoint/config.json').read_text())
    text = {
        **fixture['text_config'],
        'hidden_size': 2048,
        'num_hidden_layers': 36,
        'num_attention_heads': 16,
        'num_key_value_heads': 2,
        'intermediate_size': 11008,
        'vocab_size': 151936,
        'max_position_embeddings': 128000,
        'layer_types': ['full_attention'] * 36,
        'rope_scaling': {'type': 'mrope', 'mrope_section': [16, 24, 24]},
    }
    vision = {
        **fixture['vision_config'],
        'depth': 32,
        'hidden_size': 1280,
        'num_heads': 16,
        'intermediate_size': 3420,
        'out_hidden_size': 2048,
        'fullatt_block_indexes': [7, 15, 23, 31],
        'window_size': 112,
    }
    ids = {'image_token_id': 151655, 'state_token_id': 151669, 'action_token_id': 151666}
    return {**fixture, **ids, 'text_config': {**text, **ids}, 'vision_config': vision, 'action_chunk_size': 50}


def test_every_eo1_3b_key_maps_both_ways_with_its_shape():
    """The full EO-1 key set, built from transformers' Qwen2.5-VL-3B and EO-1's heads on the meta device."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    eo1 = _eo1_3b_config()
    with torch.device('meta'):
        backbone = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=eo1['text_config'], vision_config=eo1['vision_config'])
        )
        config = config_from_eo1(eo1)
        config.keep_lm_head = True
        ours = AsyncVLAPolicy(config)
    legacy = {
        'model.visual.': 'vlm_backbone.visual.',
        'model.language_model.': 'vlm_backbone.model.',
        'lm_head.': 'vlm_backbone.lm_head.',
    }  # the layout EO-1 saves
    tensors = {
        next(new + k[len(old) :] for old, new in legacy.items() if k.startswith(old)): v
        for k, v in backbone.state_dict().items()
    }
    width, dims = 2048, eo1['max_action_dim']
    for name, shape in {
        'state_proj': (width, dims),
        'action_in_proj': (width, dims),
        'action_time_mlp_in': (width, 2 * width),
        'action_time_mlp_out': (width, width),
        'action_out_proj.0': (width, width),
        'action_out_proj.2': (dims, width),
    }.items():
        tensors[f'{name}.weight'], tensors[f'{name}.bias'] = (
            torch.empty(shape, device='meta'),
            torch.empty(shape[0], device='meta'),
        )
    assert sum(k.startswith('vlm_backbone.model.layers.') for k in tensors) == 36 * 12
    assert sum(k.startswith('vlm_backbone.visual.blocks.') for k in tensors) == 32 * 12
    mapped = map_eo1_tensors(ours, tensors)  # raises on any missing, unexpected or misshapen key
    back = {asyncvla_to_eo1_key(k): tuple(v.shape) for k, v in ours.state_dict().items() if not k.startswith('rater.')}
    assert back == {k: tuple(v.shape) for k, v in tensors.items()} and len(mapped) == len(tensors)


def test_fine_tuning_an_import_then_training_its_rater(dataset_root, tmp_path):
    """`train --init-from` an import (no tokenizer, no statistics: both come from the data) lowers the loss;
    `train-rater` then makes self-correction available."""
    assert cli('import-eo1', FIXTURE / 'checkpoint', '--output', tmp_path / 'ours').returncode == 0
    run = cli(
        'train',
        '--dataset',
        dataset_root,
        '--init-from',
        tmp_path / 'ours',
        '--output',
        tmp_path / 'tuned',
        '--steps',
        30,
        '--batch-size',
        4,
        '--lr',
        3e-3,
        '--image-size',
        56,
        '--save-every',
        0,
        '--validate-every',
        0,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result['last_loss'] < result['first_loss'], result
    from asyncvla_ros.model import load_checkpoint

    model, processor = load_checkpoint(tmp_path / 'tuned', device='cpu')
    assert not model.config.rater_trained and model.config.action_attention == 'causal'
    run = cli(
        'train-rater', '--dataset', dataset_root, '--checkpoint', tmp_path / 'tuned', '--steps', 5, '--batch-size', 2
    )
    assert run.returncode == 0, run.stderr[-2000:]
    model, processor = load_checkpoint(tmp_path / 'tuned', device='cpu')
    assert model.config.rater_trained


def test_an_import_keeps_its_tokenizer_and_refuses_one_that_disagrees_with_the_config(tmp_path):
    """EO-1's prompt tokens must sit at the ids the model was trained with; the tokenizer files travel as they are."""
    from asyncvla_ros.model.tokenizer import build_small_tokenizer, prompt_token_ids

    source = tmp_path / 'eo1'
    shutil.copytree(FIXTURE / 'checkpoint', source)
    for path in source.iterdir():
        path.chmod(0o644)
    tokenizer = build_small_tokenizer(['pick up the purple block'], 300)
    tokenizer.save_pretrained(source)
    assert cli('import-eo1', source, '--output', tmp_path / 'refused').returncode == 2  # the fixture's ids differ
    config = json.loads((source / 'config.json').read_text())
    ids = prompt_token_ids(tokenizer)
    config.update(ids)
    config['text_config'].update(ids)
    (source / 'config.json').write_text(json.dumps(config))
    run = cli('import-eo1', source, '--output', tmp_path / 'ours')
    assert run.returncode == 0, run.stderr
    assert 'tokenizer.json' in run.stdout
    assert (tmp_path / 'ours/tokenizer.json').read_bytes() == (source / 'tokenizer.json').read_bytes()
