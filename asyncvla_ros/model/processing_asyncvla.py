"""AsyncVLAProcessor: camera images, joint state and instruction -> model inputs; normalised model
actions -> robot actions. Images go through Qwen2-VL's PIL image processor (no torchvision); state and
action statistics (mean/std per dimension) travel with the checkpoint as normalization.json.

Actions are `absolute` joint targets or, with `action_mode='delta'`, targets relative to the state the
chunk starts from (the model then learns motion, not where the arm already is; the statistics are those
of the deltas)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen2Tokenizer, Qwen2VLImageProcessorPil

SYSTEM_PROMPT = 'You are a helpful physical assistant.'
QWEN_SYSTEM_PROMPT = 'You are a helpful assistant.'  # what Qwen2.5-VL's chat template, and so EO-1, puts first
_EPS = 1e-6
ACTION_MODES = ('absolute', 'delta')


class AsyncVLAProcessor:
    def __init__(
        self,
        tokenizer,
        image_processor: Qwen2VLImageProcessorPil,
        normalization: dict,
        camera_keys: Sequence[str],
        action_chunk_size: int,
        max_state_dim: int,
        max_action_dim: int,
        system_prompt: str = SYSTEM_PROMPT,
        action_dt: float = 0.1,
        action_mode: str = 'absolute',
    ):
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = 'left'
        self.image_processor = image_processor
        self.camera_keys = list(camera_keys)
        self.action_chunk_size = action_chunk_size
        self.max_state_dim, self.max_action_dim = max_state_dim, max_action_dim
        self.system_prompt = system_prompt
        self.action_dt = float(action_dt)  # seconds between chunk steps (the training data's frame period)
        self.normalization = {
            k: {s: np.asarray(v, dtype=np.float32) for s, v in stats.items()} for k, stats in normalization.items()
        }
        self.state_dim = len(self.normalization['state']['mean'])
        self.action_dim = len(self.normalization['action']['mean'])
        if action_mode not in ACTION_MODES:
            raise ValueError(f'action_mode must be one of {ACTION_MODES}, got {action_mode!r}')
        if action_mode == 'delta' and self.state_dim != self.action_dim:
            raise ValueError(f'delta actions need state dim == action dim, got {self.state_dim} and {self.action_dim}')
        self.action_mode = action_mode
        self.prompt_padding = 0  # > 0: prompts left-padded to a multiple of this many tokens (static shapes)
        if self.state_dim > max_state_dim or self.action_dim > max_action_dim:
            raise ValueError(
                f'state/action dims {self.state_dim}/{self.action_dim} exceed the model maximum '
                f'{max_state_dim}/{max_action_dim}'
            )

    # --------------------------------------------------------------- prompt
    def prompt(self, instruction: str, image_tokens: Sequence[int]) -> str:
        images = ''.join(f'<|vision_start|>{"<|image_pad|>" * n}<|vision_end|>' for n in image_tokens)
        return (
            f'<|im_start|>system\n{self.system_prompt}<|im_end|>\n<|im_start|>user\n{images}'
            f'<|state_start|><|state_pad|><|state_end|>{instruction}<|vla|><|im_end|>\n'
            f'<|im_start|>assistant\n<|action_start|>'
        )

    def __call__(self, images: Sequence[Sequence[np.ndarray]], states: np.ndarray, instructions: Sequence[str]) -> dict:
        """images: per sample, one (H, W, 3) uint8 RGB array per camera key; states (B, S) in robot
        units; one instruction per sample. Returns the prefix inputs (left-padded) for the model."""
        if not (len(images) == len(states) == len(instructions)):
            raise ValueError('images, states and instructions need one entry per sample')
        flat = []
        for sample in images:
            if len(sample) != len(self.camera_keys):
                raise ValueError(
                    f'expected {len(self.camera_keys)} camera images ({self.camera_keys}), got {len(sample)}'
                )
            for image in sample:
                image = np.asarray(image)
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise ValueError(f'images must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}')
                flat.append(image)
        vision = self.image_processor(images=flat, return_tensors='pt')
        merge = self.image_processor.merge_size**2
        tokens = (vision['image_grid_thw'].prod(-1) // merge).tolist()
        per_sample = len(self.camera_keys)
        texts = [
            self.prompt(text, tokens[i * per_sample : (i + 1) * per_sample]) for i, text in enumerate(instructions)
        ]
        encoded = self.tokenizer(
            texts, padding=True, pad_to_multiple_of=self.prompt_padding or None, return_tensors='pt'
        )
        return {
            'input_ids': encoded['input_ids'],
            'attention_mask': encoded['attention_mask'],
            'pixel_values': vision['pixel_values'],
            'image_grid_thw': vision['image_grid_thw'],
            'state': torch.from_numpy(self.normalize('state', np.asarray(states, dtype=np.float32))),
        }

    # --------------------------------------------------------------- normalisation
    def normalize(self, key: str, values: np.ndarray) -> np.ndarray:
        """Robot units (..., D) -> normalised and zero-padded to the model's maximum dim."""
        stats = self.normalization[key]
        values = np.asarray(values, dtype=np.float32)
        if values.shape[-1] != len(stats['mean']):
            raise ValueError(f'{key} has {values.shape[-1]} dims, the checkpoint expects {len(stats["mean"])}')
        if not np.all(np.isfinite(values)):
            raise ValueError(f'{key} contains NaN or inf')
        normalised = (values - stats['mean']) / (stats['std'] + _EPS)
        width = self.max_state_dim if key == 'state' else self.max_action_dim
        return np.concatenate([normalised, np.zeros((*values.shape[:-1], width - values.shape[-1]), np.float32)], -1)

    def normalize_actions(self, actions: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Robot actions (..., L, A) and the states (..., S) their chunks start from -> model actions
        (..., L, max_action_dim)."""
        actions = np.asarray(actions, dtype=np.float32)
        if self.action_mode == 'delta':
            actions = actions - np.expand_dims(np.asarray(states, dtype=np.float32), -2)
        return self.normalize('action', actions)

    def unnormalize_actions(self, actions, states: np.ndarray) -> np.ndarray:
        """Model actions (..., L, max_action_dim) and the states (..., S) -> robot units (..., L, action_dim)."""
        actions = actions.detach().float().cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
        stats = self.normalization['action']
        robot = actions[..., : self.action_dim] * (stats['std'] + _EPS) + stats['mean']
        if self.action_mode == 'delta':
            robot = robot + np.expand_dims(np.asarray(states, dtype=np.float32), -2)
        return robot

    # --------------------------------------------------------------- persistence (local directories only)
    def save_pretrained(self, directory) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        (directory / 'normalization.json').write_text(
            json.dumps(
                {k: {s: v.tolist() for s, v in stats.items()} for k, stats in self.normalization.items()}, indent=1
            )
        )
        (directory / 'asyncvla_processor.json').write_text(
            json.dumps(
                {
                    'camera_keys': self.camera_keys,
                    'action_chunk_size': self.action_chunk_size,
                    'max_state_dim': self.max_state_dim,
                    'max_action_dim': self.max_action_dim,
                    'system_prompt': self.system_prompt,
                    'action_dt': self.action_dt,
                    'action_mode': self.action_mode,
                },
                indent=1,
            )
        )

    @classmethod
    def from_pretrained(cls, directory) -> AsyncVLAProcessor:
        directory = Path(directory)
        for name in ('asyncvla_processor.json', 'normalization.json', 'tokenizer.json', 'preprocessor_config.json'):
            if not (directory / name).is_file():
                raise FileNotFoundError(f'{directory}: missing {name} (not an asyncvla_ros checkpoint?)')
        settings = json.loads((directory / 'asyncvla_processor.json').read_text())
        tokenizer = Qwen2Tokenizer.from_pretrained(directory, local_files_only=True)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(directory, local_files_only=True)
        return cls(tokenizer, image_processor, json.loads((directory / 'normalization.json').read_text()), **settings)
