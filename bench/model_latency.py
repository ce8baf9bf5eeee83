"""Latency of one AsyncVLA chunk, stage by stage, measured in one run (random weights).

For each preset: prefix (images + prompt) encoding, one denoising step, an SFM-only chunk, a full
self-correction chunk (SFM -> rater -> AFM, threshold set so that about a quarter of the steps are
regenerated), and the same SFM chunk without the prefix KV cache (a full pass per step).
Ratios: cache_speedup = uncached / cached SFM chunk, self_correction_overhead = full / SFM-only.
On CUDA it also reports p95s, peak memory and the bf16-versus-fp32 chunk difference.
Last line: JSON.

    python bench/model_latency.py                       # tiny and small on CPU
    python bench/model_latency.py --preset qwen2.5-vl-3b --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm import tqdm
from transformers import Qwen2VLImageProcessorPil

from asyncvla_ros.model import AsyncVLAConfig, AsyncVLAPolicy, AsyncVLAProcessor
from asyncvla_ros.model.checkpoint import resolve_device
from asyncvla_ros.model.interface import Sampling
from asyncvla_ros.model.tokenizer import build_qwen_tokenizer, build_small_tokenizer, prompt_token_ids

INSTRUCTION = 'pick up the purple block and place it on the green target'


def build(preset: str, device: str, dtype: str, cameras: int, size: int):
    torch_device, torch_dtype, attention = resolve_device(device, dtype, 'auto')
    full_vocab = AsyncVLAConfig.from_preset(preset).vlm_config.text_config.vocab_size > 100_000
    tokenizer = build_qwen_tokenizer() if full_vocab else build_small_tokenizer([INSTRUCTION], 400)
    ids = prompt_token_ids(tokenizer)
    config = AsyncVLAConfig.from_preset(preset, **ids)
    config._attn_implementation = attention
    torch.manual_seed(0)
    with torch.device(torch_device):
        model = AsyncVLAPolicy(config).to(torch_dtype).eval()
    stats = {'mean': [0.0] * 6, 'std': [1.0] * 6}
    processor = AsyncVLAProcessor(
        tokenizer,
        Qwen2VLImageProcessorPil(min_pixels=size * size, max_pixels=size * size),
        {'state': stats, 'action': stats},
        [f'camera{i}' for i in range(cameras)],
        config.action_chunk_size,
        config.max_state_dim,
        config.max_action_dim,
    )
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(cameras)]]
    inputs = {k: v.to(torch_device) for k, v in processor(images, np.zeros((1, 6)), [INSTRUCTION]).items()}
    inputs['pixel_values'] = inputs['pixel_values'].to(torch_dtype)
    return model, inputs, torch_device, attention


def timed(fn, repeats: int, device) -> np.ndarray:
    out = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        out.append((time.perf_counter() - start) * 1e3)
    return np.array(out)


@torch.inference_mode()
def measure(
    preset: str, device: str, dtype: str, repeats: int, cameras: int, size: int, steps: int, afm_steps: int
) -> dict:
    model, inputs, torch_device, attention = build(preset, device, dtype, cameras, size)
    cfg = model.config
    length = cfg.action_chunk_size
    noise = torch.randn(1, length, cfg.max_action_dim, device=torch_device)
    generator = torch.Generator(device=torch_device).manual_seed(0)
    warm = model.generate_chunk(**inputs, noise=noise, sampling=Sampling(True, 0.0, None, steps))
    confidence = model.rate(model.encode_prefix(**inputs), warm.actions)
    threshold = float(torch.quantile(confidence.float(), 0.25)) + 1e-6  # about a quarter regenerated

    def uncached_sfm():
        x = noise.clone()
        for k in range(steps):
            hidden = model.full_sequence_hidden(
                **inputs, x=x, tau=torch.full((1, length), 1.0 - k / steps, device=torch_device)
            )
            x = x - model.action_out_proj(hidden[:, -length:].float()) / steps

    prefix = model.encode_prefix(**inputs)
    tau = torch.full((1, length), 0.5, device=torch_device)
    results, stages = {}, []
    runs = {
        'prefix_ms': lambda: model.encode_prefix(**inputs),
        'step_ms': lambda: model.velocity(prefix, noise, tau),
        'sfm_only_ms': lambda: model.generate_chunk(
            **inputs, noise=noise, sampling=Sampling(False, num_denoise_steps=steps)
        ),
        'full_ms': lambda: stages.append(
            model.generate_chunk(
                **inputs, noise=noise, generator=generator, sampling=Sampling(True, threshold, None, steps, afm_steps)
            )
        ),
        'uncached_sfm_ms': uncached_sfm,
    }
    if torch_device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    for name, fn in tqdm(runs.items(), desc=f'{preset} on {torch_device.type}', leave=False):
        fn()  # warm-up
        stages.clear()
        times = timed(fn, repeats, torch_device)
        results[name] = float(np.median(times))
        results[name.replace('_ms', '_p95_ms')] = float(np.percentile(times, 95))
        if name == 'full_ms':
            full_stages = list(stages)
    for stage in ('prefix_ms', 'sfm_ms', 'rater_ms', 'afm_ms'):
        results[f'full_{stage}'] = float(np.median([s.timings_ms[stage] for s in full_stages]))
    results['refined_fraction'] = float(np.mean([s.refined.float().mean().item() for s in full_stages]))
    results['cache_speedup'] = results['uncached_sfm_ms'] / results['sfm_only_ms']
    results['self_correction_overhead'] = results['full_ms'] / results['sfm_only_ms']
    results['attn_implementation'] = attention
    if torch_device.type == 'cuda':
        results['peak_mem_gb'] = torch.cuda.max_memory_allocated() / 2**30
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', action='append', choices=['tiny', 'small', 'qwen2.5-vl-3b'])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda', 'auto'])
    parser.add_argument('--dtype', default='auto', choices=['auto', 'float32', 'bfloat16'])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--cameras', type=int, default=2)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--steps', type=int, default=10, help='denoising steps for SFM')
    parser.add_argument(
        '--afm-steps',
        type=int,
        default=AsyncVLAConfig.num_denoise_steps_afm,
        help="denoising steps for AFM (default: the config's num_denoise_steps_afm)",
    )
    args = parser.parse_args()
    presets = args.preset or ['tiny', 'small']
    summary = {}
    for preset in presets:
        r = measure(
            preset, args.device, args.dtype, args.repeats, args.cameras, args.image_size, args.steps, args.afm_steps
        )
        print(
            f'{preset}: prefix {r["prefix_ms"]:.1f} ms, step {r["step_ms"]:.2f} ms, SFM-only chunk '
            f'{r["sfm_only_ms"]:.1f} ms '
            f'(p95 {r["sfm_only_p95_ms"]:.1f}), full self-correction chunk {r["full_ms"]:.1f} ms (p95 '
            f'{r["full_p95_ms"]:.1f}; '
            f'prefix {r["full_prefix_ms"]:.1f} / SFM {r["full_sfm_ms"]:.1f} / rater {r["full_rater_ms"]:.1f} / '
            f'AFM {r["full_afm_ms"]:.1f}), refined {100 * r["refined_fraction"]:.0f} %, uncached SFM '
            f'{r["uncached_sfm_ms"]:.1f} ms; '
            f'cache_speedup {r["cache_speedup"]:.2f}, self_correction_overhead {r["self_correction_overhead"]:.2f}',
            flush=True,
        )
        summary[preset] = {
            'steps': args.steps,
            'afm_steps': args.afm_steps,
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()},
        }
    if len(presets) == 1:
        r = summary[presets[0]]
        summary = {
            'preset': presets[0],
            'device': args.device,
            'total_ms_p50': r['full_ms'],
            'sfm_only_ms_p50': r['sfm_only_ms'],
            **r,
        }
    print(json.dumps(summary))


if __name__ == '__main__':
    main()
