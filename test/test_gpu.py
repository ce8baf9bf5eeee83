"""The model on a CUDA GPU: bfloat16 kernels, the compiled path, CUDA graph capture. Skipped without a GPU;
bench/gpu_check.sh runs them on a lent one (with --noconftest: no ROS needed)."""

import numpy as np
import pytest
import torch
from tiny_model import tiny_policy

from asyncvla_ros.model.compilation import PROMPT_PADDING, compile_generation
from asyncvla_ros.model.interface import Sampling

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
]

EVERY_STEP = Sampling(self_correction=True, confidence_threshold=2.0, num_denoise_steps=4, num_denoise_steps_afm=2)


def _policy(dtype=torch.float32, compile_mode='eager'):
    model, processor = tiny_policy()
    model = model.to('cuda', dtype)
    compile_generation(model, compile_mode)
    processor.prompt_padding = PROMPT_PADDING if compile_mode != 'eager' else 0
    inputs = processor([[np.full((56, 56, 3), 90, np.uint8)]], np.zeros((1, 6)), ['pick up the red block'])
    inputs = {k: v.to('cuda') for k, v in inputs.items()}
    inputs['pixel_values'] = inputs['pixel_values'].to(dtype)
    return model, inputs


def _chunk(model, inputs):
    noise = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0)).to('cuda')
    generator = torch.Generator(device='cuda').manual_seed(1)
    return model.generate_chunk(**inputs, noise=noise, generator=generator, sampling=EVERY_STEP)


def test_bfloat16_chunk_is_close_to_float32_and_keeps_fp32_heads():
    full, full_inputs = _policy()
    half, half_inputs = _policy(torch.bfloat16)
    assert half.vlm.dtype == torch.bfloat16 and half.action_out_proj[-1].weight.dtype == torch.float32
    expected, result = _chunk(full, full_inputs), _chunk(half, half_inputs)
    assert result.actions.dtype == torch.float32 and torch.isfinite(result.actions).all()
    assert (result.actions - expected.actions).abs().max() < 0.1


@pytest.mark.parametrize('mode', ['default', 'reduce-overhead'])
def test_compiled_chunks_equal_eager_on_cuda(mode):
    """reduce-overhead replays CUDA graphs over the static prefix cache: three chunks, the same answer."""
    eager, eager_inputs = _policy()
    compiled, compiled_inputs = _policy(compile_mode=mode)
    expected = _chunk(eager, eager_inputs)
    for _ in range(3):
        result = _chunk(compiled, compiled_inputs)
        assert torch.allclose(result.actions, expected.actions, atol=1e-4), (
            (result.actions - expected.actions).abs().max()
        )
