"""Checkpoints: a local directory with config.json, model.safetensors and the processor's files.
Nothing is unpickled and no remote code runs; every way a checkpoint can be wrong is a clear error."""

from __future__ import annotations

from pathlib import Path

import torch

from asyncvla_ros.model.compilation import PROMPT_PADDING, compile_generation
from asyncvla_ros.model.configuration_asyncvla import AsyncVLAConfig
from asyncvla_ros.model.interface import CheckpointError
from asyncvla_ros.model.modeling_asyncvla import AsyncVLAPolicy
from asyncvla_ros.model.processing_asyncvla import AsyncVLAProcessor

PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.pkl', '.pickle', '.ckpt')


ATTENTION_KERNELS = ('sdpa', 'eager')


def resolve_device(device: str = 'auto', dtype: str = 'auto', attn_implementation: str = 'auto'):
    """`auto` picks CUDA when present, bfloat16 on CUDA (float32 on CPU), and SDPA. Asking for CUDA without
    one is an error, not a silent fallback. FlashAttention-2 is refused: it takes causal and padding masks
    only, and the action tokens attend to each other both ways over the prefix (a 4D mask); SDPA runs that
    mask with CUDA's memory-efficient kernels."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise CheckpointError('device "cuda" requested but no CUDA GPU is available (use device auto or cpu)')
    if dtype == 'auto':
        dtype = 'bfloat16' if device == 'cuda' else 'float32'
    if attn_implementation == 'auto':
        attn_implementation = 'sdpa'
    if attn_implementation not in ATTENTION_KERNELS:
        raise CheckpointError(
            f'attn_implementation {attn_implementation!r} cannot run this model: use one of '
            f'{ATTENTION_KERNELS} (FlashAttention-2 takes no 4D attention mask, which the action tokens need)'
        )
    return torch.device(device), getattr(torch, dtype), attn_implementation


def refuse_pickles(directory: Path) -> None:
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f'{directory}: refusing to load {pickles}: pickle files can run code; '
            'checkpoints must be safetensors + JSON'
        )


def save_checkpoint(model: AsyncVLAPolicy, processor: AsyncVLAProcessor, directory) -> Path:
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


def load_model(
    directory, device: str = 'auto', dtype: str = 'auto', attn_implementation: str = 'auto'
) -> AsyncVLAPolicy:
    """The model alone from a local checkpoint directory, in eval mode on the chosen device: what `export`
    and fine-tuning an imported model need (an import has no processor statistics yet)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f'checkpoint {directory} does not exist or is not a directory')
    refuse_pickles(directory)
    for name in ('config.json', 'model.safetensors'):
        if not (directory / name).is_file():
            raise CheckpointError(f'{directory}: missing {name}')
    torch_device, torch_dtype, attention = resolve_device(device, dtype, attn_implementation)
    try:
        config = AsyncVLAConfig.from_pretrained(directory, local_files_only=True)
        model, info = AsyncVLAPolicy.from_pretrained(
            directory,
            config=config,
            local_files_only=True,
            use_safetensors=True,
            dtype=torch_dtype,
            attn_implementation=attention,
            output_loading_info=True,
            trust_remote_code=False,
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f'{directory}: cannot load the checkpoint: {exc}') from exc
    problems = {k: v for k, v in info.items() if v and k in ('missing_keys', 'unexpected_keys', 'mismatched_keys')}
    if problems:
        raise CheckpointError(f'{directory}: model.safetensors does not match config.json: {problems}')
    return model.to(torch_device).eval()


def has_statistics(directory) -> bool:
    """Whether a checkpoint carries its processor's statistics (an imported model does not until fine-tuned)."""
    return (Path(directory) / 'normalization.json').is_file()


def load_checkpoint(
    directory, device: str = 'auto', dtype: str = 'auto', attn_implementation: str = 'auto', compile: str = 'eager'
):
    """(model, processor) from a local checkpoint directory, in eval mode on the chosen device; with
    `compile` other than eager, generation is compiled (model/compilation.py) and prompts padded to match."""
    directory = Path(directory)
    if directory.is_dir() and (directory / 'config.json').is_file() and not has_statistics(directory):
        raise CheckpointError(
            f"{directory}: no normalization.json: an imported model must be fine-tuned on your robot's "
            'data first (`asyncvla train --init-from`), which adds its statistics'
        )
    model = load_model(directory, device, dtype, attn_implementation)
    try:
        processor = AsyncVLAProcessor.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f'{directory}: cannot load the processor: {exc}') from exc
    config = model.config
    if (
        processor.action_chunk_size != config.action_chunk_size
        or processor.max_action_dim != config.max_action_dim
        or processor.max_state_dim != config.max_state_dim
        or len(processor.tokenizer) > config.vlm_config.text_config.vocab_size
    ):
        raise CheckpointError(
            f'{directory}: the processor does not match the model (chunk size, action/state dims '
            'or vocabulary size differ)'
        )
    compile_generation(model, compile)
    if compile != 'eager':
        processor.prompt_padding = PROMPT_PADDING
    return model, processor
