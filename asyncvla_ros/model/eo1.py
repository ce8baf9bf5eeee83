"""EO-1 checkpoints in and out (EO-Robotics/EO1 layout): EO-1 is AsyncVLA's starting point, the same
Qwen2.5-VL backbone, action tokens in the same sequence and the same flow-matching head and time code,
with action tokens that attend causally. Only JSON and safetensors are read: a checkpoint's `auto_map`
and Python files are never imported or run.

Key names, EO-1 -> this package (everything else of the backbone keeps its name):
    vlm_backbone.visual.*          -> vlm.visual.*
    vlm_backbone.model.*           -> vlm.language_model.*   (the text decoder)
    vlm_backbone.lm_head.weight    -> lm_head.weight         (kept only for export; actions never use it)
    action_time_mlp_in / _out      -> time_mlp.0 / time_mlp.2
    action_out_proj.{2i}           -> action_out_proj.{i}    (EO-1 puts its identity activation between)
The rater has no EO-1 counterpart: it starts untrained, and self-correction is refused until train-rater.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from asyncvla_ros.model.configuration_asyncvla import AsyncVLAConfig
from asyncvla_ros.model.interface import CheckpointError
from asyncvla_ros.model.modeling_asyncvla import AsyncVLAPolicy

EO1_MODEL_TYPE = 'eo1'
_INDEX = 'model.safetensors.index.json'
_SINGLE = 'model.safetensors'
# (EO-1 prefix, ours) in the layout EO-1 saves, which export writes; import also reads the newer transformers
# layout of the backbone (vlm_backbone.model.visual / .language_model). First match wins.
_EO1_LAYOUT = (
    ('vlm_backbone.visual.', 'vlm.visual.'),
    ('vlm_backbone.model.', 'vlm.language_model.'),
    ('vlm_backbone.lm_head.', 'lm_head.'),
    ('action_time_mlp_in.', 'time_mlp.0.'),
    ('action_time_mlp_out.', 'time_mlp.2.'),
    ('state_proj.', 'state_proj.'),
    ('action_in_proj.', 'action_in_proj.'),
)
_PREFIXES = (
    ('vlm_backbone.model.visual.', 'vlm.visual.'),
    ('vlm_backbone.model.language_model.', 'vlm.language_model.'),
    *_EO1_LAYOUT,
)
_OUT_PROJ = re.compile(r'^action_out_proj\.(\d+)\.(.+)$')


def eo1_to_asyncvla_key(name: str) -> str | None:
    """Our parameter name for an EO-1 tensor name, or None when it has no place in this model."""
    match = _OUT_PROJ.match(name)
    if match:
        index = int(match.group(1))
        return f'action_out_proj.{index // 2}.{match.group(2)}' if index % 2 == 0 else None
    for eo1, ours in _PREFIXES:
        if name.startswith(eo1):
            return ours + name[len(eo1) :]
    return None


def asyncvla_to_eo1_key(name: str) -> str | None:
    """The EO-1 name of one of our parameters, or None for the rater (EO-1 has none)."""
    match = _OUT_PROJ.match(name)
    if match:
        return f'action_out_proj.{2 * int(match.group(1))}.{match.group(2)}'
    for eo1, ours in _EO1_LAYOUT:
        if name.startswith(ours):
            return eo1 + name[len(ours) :]
    return None


def config_from_eo1(eo1: dict) -> AsyncVLAConfig:
    """Our configuration for an EO-1 config.json: causal action attention, EO-1's special token ids, its
    chunk size, action dims (EO-1 projects states padded to max_action_dim) and steps; rater untrained."""
    if eo1.get('model_type') != EO1_MODEL_TYPE:
        raise CheckpointError(
            f'config.json has model_type {eo1.get("model_type")!r}, not {EO1_MODEL_TYPE!r}: not an EO-1 checkpoint'
        )
    if eo1.get('action_act', 'linear') != 'linear':
        raise CheckpointError(
            f"EO-1 action_act {eo1['action_act']!r} is not supported: this package's velocity head "
            'is a stack of linear layers (EO-1\'s "linear")'
        )
    for section in ('text_config', 'vision_config'):
        if not isinstance(eo1.get(section), dict):
            raise CheckpointError(f'config.json has no {section}')
    eo1 = copy.deepcopy(eo1)  # the backbone's config edits nested dicts (rope) in place; export writes this back
    text = {
        k: copy.deepcopy(v) for k, v in eo1['text_config'].items() if k not in ('model_type', 'transformers_version')
    }
    text.setdefault('bos_token_id', None)
    text.setdefault('eos_token_id', None)
    vision = {
        k: copy.deepcopy(v) for k, v in eo1['vision_config'].items() if k not in ('model_type', 'transformers_version')
    }

    def token(name):
        value = eo1.get(name, eo1['text_config'].get(name))
        if value is None:
            raise CheckpointError(f'config.json has no {name}')
        return int(value)

    dims = int(eo1.get('max_action_dim', 32))
    return AsyncVLAConfig(
        vlm_config={'text_config': text, 'vision_config': vision},
        action_chunk_size=int(eo1.get('action_chunk_size', 50)),
        max_action_dim=dims,
        max_state_dim=dims,
        num_denoise_steps=int(eo1.get('num_denoise_steps', 10)),
        num_action_layers=int(eo1.get('num_action_layers', 2)),
        action_attention='causal',
        image_token_id=token('image_token_id'),
        state_token_id=token('state_token_id'),
        action_token_id=token('action_token_id'),
        rater_trained=False,
        eo1_config=eo1,
    )


def _tensor_files(directory: Path) -> list[Path]:
    if (directory / _INDEX).is_file():
        shards = sorted(set(json.loads((directory / _INDEX).read_text())['weight_map'].values()))
        return [directory / shard for shard in shards]
    if (directory / _SINGLE).is_file():
        return [directory / _SINGLE]
    raise CheckpointError(f'{directory}: no {_SINGLE} or {_INDEX}')


def read_eo1(directory) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) of an EO-1 checkpoint directory, refusing pickles; no code in it is run."""
    from asyncvla_ros.model.checkpoint import refuse_pickles

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f'EO-1 checkpoint {directory} does not exist or is not a directory')
    refuse_pickles(directory)
    if not (directory / 'config.json').is_file():
        raise CheckpointError(f'{directory}: missing config.json')
    config = json.loads((directory / 'config.json').read_text())
    tensors = {}
    for path in _tensor_files(directory):
        with safe_open(path, framework='pt') as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})  # noqa: SIM118 (a safetensors handle, not a dict)
    return config, tensors


def map_eo1_tensors(model: AsyncVLAPolicy, tensors: dict) -> dict[str, torch.Tensor]:
    """EO-1 tensors -> our state dict (without the rater), checking names and shapes against `model`.
    Any missing, unexpected or misshapen tensor is one CheckpointError that lists them."""
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items() if not name.startswith('rater.')}
    mapped, unexpected = {}, []
    for name, tensor in tensors.items():
        ours = eo1_to_asyncvla_key(name)
        if ours is None or ours not in expected:
            unexpected.append(name)
        else:
            mapped[ours] = tensor
    missing = sorted(asyncvla_to_eo1_key(name) for name in expected if name not in mapped)
    misshapen = sorted(
        f'{asyncvla_to_eo1_key(n)} {tuple(t.shape)} (expected {expected[n]})'
        for n, t in mapped.items()
        if tuple(t.shape) != expected[n]
    )
    problems = [
        f'{label}: {", ".join(items[:12])}{" ..." if len(items) > 12 else ""} ({len(items)})'
        for label, items in (('missing', missing), ('unexpected', sorted(unexpected)), ('wrong shape', misshapen))
        if items
    ]
    if problems:
        raise CheckpointError('the EO-1 tensors do not fit its config.json: ' + '; '.join(problems))
    return mapped


def import_eo1(directory, dtype: torch.dtype = torch.float32) -> AsyncVLAPolicy:
    """An AsyncVLAPolicy that computes what EO-1 computes with this checkpoint (SFM with causal action
    tokens), its rater untrained. dtype: the backbone's; the heads stay float32 as in our checkpoints."""
    eo1, tensors = read_eo1(directory)
    config = config_from_eo1(eo1)
    config.keep_lm_head = any(name.startswith('vlm_backbone.lm_head.') for name in tensors)
    model = AsyncVLAPolicy(config)
    mapped = map_eo1_tensors(model, tensors)
    model.load_state_dict({**model.state_dict(), **{k: v.float() for k, v in mapped.items()}}, strict=True)
    if dtype != torch.float32:
        model.to(dtype)
        for name in model._keep_in_fp32_modules_strict:
            getattr(model, name).float()
    return model.eval()


def eo1_config(config: AsyncVLAConfig) -> dict:
    """EO-1's config.json for one of our models: the imported one with our chunk settings, or one built
    from our backbone for a model that never came from EO-1."""
    if config.action_attention != 'causal':
        raise CheckpointError("only causal-action models run under EO-1's code; this one attends bidirectionally")
    vlm = config.vlm_config
    base = (
        dict(config.eo1_config)
        if config.eo1_config
        else {
            'model_type': EO1_MODEL_TYPE,
            'action_act': 'linear',
            'text_config': {
                **vlm.text_config.to_dict(),
                'state_token_id': config.state_token_id,
                'action_token_id': config.action_token_id,
                'image_token_id': config.image_token_id,
            },
            'vision_config': vlm.vision_config.to_dict(),
        }
    )
    return {
        **base,
        'action_chunk_size': config.action_chunk_size,
        'max_action_dim': config.max_action_dim,
        'num_denoise_steps': config.num_denoise_steps,
        'num_action_layers': config.num_action_layers,
        'image_token_id': config.image_token_id,
        'state_token_id': config.state_token_id,
        'action_token_id': config.action_token_id,
    }


def export_eo1(model: AsyncVLAPolicy, directory) -> Path:
    """Writes `model` in EO-1's layout (config.json and model.safetensors, no rater), tensors unchanged."""
    if model.config.max_state_dim != model.config.max_action_dim:
        raise CheckpointError('EO-1 projects states padded to max_action_dim: max_state_dim must equal max_action_dim')
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        asyncvla_to_eo1_key(name): tensor.contiguous()
        for name, tensor in model.state_dict().items()
        if asyncvla_to_eo1_key(name) is not None
    }
    save_file(tensors, directory / _SINGLE, metadata={'format': 'pt'})
    (directory / 'config.json').write_text(json.dumps(eo1_config(model.config), indent=2, sort_keys=True) + '\n')
    return directory


# The processor files of a Qwen2.5-VL checkpoint, copied verbatim both ways (EO-1's added tokens and chat template).
PROCESSOR_FILES = (
    'tokenizer.json',
    'tokenizer_config.json',
    'special_tokens_map.json',
    'added_tokens.json',
    'vocab.json',
    'merges.txt',
    'chat_template.jinja',
    'chat_template.json',
    'preprocessor_config.json',
)


def _copy_processor_files(source: Path, destination: Path) -> list[str]:
    copied = [name for name in PROCESSOR_FILES if (source / name).is_file()]
    for name in copied:
        (destination / name).write_bytes((source / name).read_bytes())
    return copied


def _check_tokenizer(directory: Path, config: AsyncVLAConfig) -> None:
    """An import's tokenizer must name the prompt tokens at the ids the model was trained with."""
    from transformers import Qwen2Tokenizer

    from asyncvla_ros.model.tokenizer import prompt_token_ids

    ids = prompt_token_ids(Qwen2Tokenizer.from_pretrained(directory, local_files_only=True))
    wrong = {name: (value, getattr(config, name)) for name, value in ids.items() if value != getattr(config, name)}
    if wrong:
        raise CheckpointError(
            f'{directory}: the tokenizer and config.json disagree on the prompt tokens '
            f'(tokenizer id, config id): {wrong}'
        )


def import_eo1_checkpoint(source, output, dtype: torch.dtype = torch.float32) -> list[str]:
    """`asyncvla import-eo1`: writes our checkpoint directory (config.json, model.safetensors and the source's
    tokenizer and image processor files) and returns what was mapped, one line each."""
    source, output = Path(source), Path(output)
    model = import_eo1(source, dtype)
    if (source / 'tokenizer.json').is_file():
        _check_tokenizer(source, model.config)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output, safe_serialization=True)
    copied = _copy_processor_files(source, output)
    config = model.config
    groups = {}
    for name in model.state_dict():
        eo1 = asyncvla_to_eo1_key(name)
        if eo1 is not None:
            head = '.'.join(eo1.split('.')[:2]) if eo1.startswith('vlm_backbone.') else eo1.rsplit('.', 1)[0]
            target = '.'.join(name.split('.')[:2]) if name.startswith('vlm.') else name.rsplit('.', 1)[0]
            groups.setdefault(f'{head} -> {target}', 0)
            groups[f'{head} -> {target}'] += 1
    lines = [f'{key}: {count} tensors' for key, count in groups.items()]
    lines += [
        f'rater: new and untrained ({sum(p.numel() for p in model.rater.parameters())} parameters); '
        'self-correction is refused until `asyncvla train-rater`',
        f'action attention causal, chunk {config.action_chunk_size}, {config.num_denoise_steps} steps, '
        f'max action dim {config.max_action_dim}; token ids image {config.image_token_id}, '
        f'state {config.state_token_id}, action {config.action_token_id}',
        f'processor files: {", ".join(copied) if copied else "none (fine-tuning trains a small tokenizer)"}; '
        'no statistics yet: fine-tune with `asyncvla train --init-from`',
    ]
    if model.config.eo1_config.get('auto_map'):
        lines.append('auto_map ignored: code in a checkpoint is never run')
    return lines


def export_eo1_checkpoint(checkpoint, output) -> Path:
    """`asyncvla export --eo1`: one of our checkpoints in EO-1's layout, with its processor files."""
    from asyncvla_ros.model.checkpoint import load_model

    model = load_model(checkpoint, device='cpu', dtype='float32')
    output = export_eo1(model, output)
    _copy_processor_files(Path(checkpoint), output)
    return output
