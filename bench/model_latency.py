"""Latency of one AsyncVLA chunk, stage by stage, eager and compiled, measured in one run.

For each model (the demo checkpoint, and random-weight presets): prefix (images + prompt) encoding, one
denoising step, an SFM-only chunk, a full self-correction chunk (SFM -> rater -> AFM, threshold set so
that about a quarter of the steps are regenerated), and eagerly also the SFM chunk without the prefix KV
cache (a full pass per step). Then the same model compiled (model/compilation.py, prompt padded as the
node pads it) on the same images: the same figures, the first chunk's compile time, the graph breaks and
the largest difference from eager's chunk. Ratios: cache_speedup = uncached / cached SFM chunk,
self_correction_overhead = full / SFM-only, compile_speedup = eager / compiled full chunk (prefix
included). p50 and p95; on CUDA, peak memory. Last line: JSON.

    python bench/model_latency.py                       # demo, tiny and small on CPU
    python bench/model_latency.py --preset qwen2.5-vl-3b --device cuda --compile reduce-overhead
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm import tqdm
from transformers import Qwen2VLImageProcessorPil

from asyncvla_ros.model import AsyncVLAConfig, AsyncVLAPolicy, AsyncVLAProcessor, load_checkpoint
from asyncvla_ros.model.checkpoint import resolve_device
from asyncvla_ros.model.compilation import PROMPT_PADDING, compile_generation, graph_breaks
from asyncvla_ros.model.interface import COMPILE_MODES, Sampling
from asyncvla_ros.model.runner import demo_checkpoint
from asyncvla_ros.model.tokenizer import build_qwen_tokenizer, build_small_tokenizer, prompt_token_ids

TURN = 5  # calls in a row of one variant
INSTRUCTION = 'pick up the purple block and place it on the green target'


def build(preset: str, device: str, dtype: str, cameras: int, size: int, compile_mode: str = 'eager'):
    """(model, processor, images); `demo` is the checkpoint shipped with the package, with its own cameras.
    The same arguments give the same weights, compiled (and prompts padded) unless compile_mode is eager."""
    if preset == 'demo':
        model, processor = load_checkpoint(demo_checkpoint(), device, dtype, compile=compile_mode)
        cameras = len(processor.camera_keys)
    else:
        torch_device, torch_dtype, attention = resolve_device(device, dtype, 'auto')
        full_vocab = AsyncVLAConfig.from_preset(preset).vlm_config.text_config.vocab_size > 100_000
        tokenizer = build_qwen_tokenizer() if full_vocab else build_small_tokenizer([INSTRUCTION], 400)
        config = AsyncVLAConfig.from_preset(preset, **prompt_token_ids(tokenizer))
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
        compile_generation(model, compile_mode)
        processor.prompt_padding = PROMPT_PADDING if compile_mode != 'eager' else 0
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(cameras)]]
    state = np.zeros((1, processor.state_dim))
    inputs = {k: v.to(model.device) for k, v in processor(images, state, [INSTRUCTION]).items()}
    inputs['pixel_values'] = inputs['pixel_values'].to(model.dtype)
    return model, inputs


def timed(fn, device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def stage_runs(model, inputs, steps: int, full_sampling: Sampling, full_results: list, eager: bool) -> dict:
    """What each stage figure times, on `model`; the self-correcting chunks' results go to full_results."""
    length, device = model.config.action_chunk_size, model.device
    noise = torch.randn(1, length, model.config.max_action_dim, generator=torch.Generator().manual_seed(0))
    noise = noise.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    tau = torch.full((1, length), 0.5, device=device)

    def uncached_sfm():
        x = noise.clone()
        for k in range(steps):
            hidden = model.full_sequence_hidden(
                **inputs, x=x, tau=torch.full((1, length), 1.0 - k / steps, device=device)
            )
            x = x - model.action_out_proj(hidden[:, -length:].float()) / steps

    prefix = model.encode_prefix(**inputs)  # every run below encodes these same inputs into the model's cache
    runs = {
        'prefix_ms': lambda: model.encode_prefix(**inputs),
        'sfm_only_ms': lambda: model.generate_chunk(
            **inputs, noise=noise, sampling=Sampling(False, num_denoise_steps=steps)
        ),
        'full_ms': lambda: full_results.append(
            model.generate_chunk(**inputs, noise=noise, generator=generator, sampling=full_sampling)
        ),
    }
    if eager:  # eager only: the compiled model compiles the whole loop, not a step or the uncached pass
        runs['step_ms'] = lambda: model.velocity(prefix, noise, tau)
        runs['uncached_sfm_ms'] = uncached_sfm
    return runs


def time_stages(variants: dict, repeats: int, steps: int, afm_steps: int, threshold: float) -> dict:
    """p50 / p95 of each stage for each variant (name: (model, inputs)), and the stage split of the
    self-correcting chunk. Every figure of every variant takes turns of TURN calls, so that a noisy machine slows
    them alike (compile_speedup and self_correction_overhead compare figures measured side by side) while each
    runs on caches warm with its own weights, as a node's one model does."""
    full_sampling = Sampling(True, threshold, None, steps, afm_steps)
    stages = {name: [] for name in variants}
    runs = {
        name: stage_runs(model, inputs, steps, full_sampling, stages[name], eager=name == 'eager')
        for name, (model, inputs) in variants.items()
    }
    results = {name: {} for name in variants}
    pairs = [(run, name) for run in runs['eager'] for name in variants if run in runs[name]]
    times = {pair: [] for pair in pairs}
    for run, name in pairs:
        runs[name][run]()  # warm-up
    for stage_results in stages.values():
        stage_results.clear()
    for block in range(0, repeats, TURN):  # every figure in every block, so ratios between them are paired too
        for run, name in pairs:
            for _ in range(min(TURN, repeats - block)):
                times[run, name].append(timed(runs[name][run], variants[name][0].device))
    for (run, name), measured in times.items():
        results[name][run] = float(np.median(measured))
        results[name][run.replace('_ms', '_p95_ms')] = float(np.percentile(measured, 95))
    for name, r in results.items():
        for stage in ('prefix_ms', 'sfm_ms', 'rater_ms', 'afm_ms'):
            r[f'full_{stage}'] = float(np.median([s.timings_ms[stage] for s in stages[name]]))
        r['refined_fraction'] = float(np.mean([s.refined.float().mean().item() for s in stages[name]]))
        r['self_correction_overhead'] = r['full_ms'] / r['sfm_only_ms']
    return results


@torch.inference_mode()
def measure(
    preset: str,
    device: str,
    dtype: str,
    repeats: int,
    cameras: int,
    size: int,
    steps: int,
    afm_steps: int,
    compile_mode: str,
) -> dict:
    """Eager and (unless compile_mode is eager) a compiled copy of the same weights, on the same images."""
    model, inputs = build(preset, device, dtype, cameras, size)
    length, dims = model.config.action_chunk_size, model.config.max_action_dim
    noise = torch.randn(1, length, dims, generator=torch.Generator().manual_seed(2)).to(model.device)
    warm = model.generate_chunk(**inputs, noise=noise, sampling=Sampling(True, 0.0, None, steps))
    confidence = model.rate(model.encode_prefix(**inputs), warm.actions)
    threshold = float(torch.quantile(confidence.float(), 0.25)) + 1e-6  # about a quarter regenerated
    variants = {'eager': (model, inputs)}
    results = {'attn_implementation': model.config._attn_implementation}
    if compile_mode != 'eager':
        every_step = Sampling(True, 2.0, None, steps, afm_steps)  # the rater and AFM on every step run too

        def chunk(model, inputs):
            generator = torch.Generator(device=model.device).manual_seed(1)
            return model.generate_chunk(**inputs, noise=noise, sampling=every_step, generator=generator)

        compiled, compiled_inputs = build(preset, device, dtype, cameras, size, compile_mode)
        start = time.perf_counter()
        first = chunk(compiled, compiled_inputs)
        results['compile_s'] = time.perf_counter() - start
        results['compiled_max_abs_diff'] = float((first.actions - chunk(model, inputs).actions).abs().max())
        results['graph_breaks'] = graph_breaks()
        variants['compiled'] = (compiled, compiled_inputs)
    if model.device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    results.update(time_stages(variants, repeats, steps, afm_steps, threshold))
    if model.device.type == 'cuda':
        results['peak_mem_gb'] = torch.cuda.max_memory_allocated() / 2**30
    eager = results['eager']
    eager['cache_speedup'] = eager['uncached_sfm_ms'] / eager['sfm_only_ms']
    if compile_mode != 'eager':
        results['compile_speedup'] = eager['full_ms'] / results['compiled']['full_ms']
        results['compile_speedup_sfm_only'] = eager['sfm_only_ms'] / results['compiled']['sfm_only_ms']
    return results


def describe(name: str, r: dict) -> str:
    return (
        f'{name}: prefix {r["prefix_ms"]:.1f} ms, '
        + (f'step {r["step_ms"]:.2f} ms, ' if 'step_ms' in r else '')
        + f'SFM-only chunk {r["sfm_only_ms"]:.1f} ms '
        f'(p95 {r["sfm_only_p95_ms"]:.1f}), full self-correction chunk {r["full_ms"]:.1f} ms (p95 '
        f'{r["full_p95_ms"]:.1f}; prefix {r["full_prefix_ms"]:.1f} / SFM {r["full_sfm_ms"]:.1f} / rater '
        f'{r["full_rater_ms"]:.1f} / AFM {r["full_afm_ms"]:.1f}), refined {100 * r["refined_fraction"]:.0f} %, '
        f'self_correction_overhead {r["self_correction_overhead"]:.2f}'
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--preset',
        action='append',
        choices=['demo', 'tiny', 'small', 'qwen2.5-vl-3b'],
        help='demo: the checkpoint shipped with the package (its cameras); the others: random weights',
    )
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
    parser.add_argument(
        '--compile', default='default', choices=COMPILE_MODES, help='the compiled run beside eager; eager: eager only'
    )
    parser.add_argument('--threads', type=int, default=0, help="torch CPU threads; 0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.preset or ['demo', 'tiny', 'small']
    summary = {}
    for preset in tqdm(presets, desc='presets', leave=False):
        r = measure(
            preset,
            args.device,
            args.dtype,
            args.repeats,
            args.cameras,
            args.image_size,
            args.steps,
            args.afm_steps,
            args.compile,
        )
        print(describe(f'{preset} eager', r['eager']) + f', cache_speedup {r["eager"]["cache_speedup"]:.2f}')
        if 'compiled' in r:
            print(
                describe(f'{preset} compiled ({args.compile})', r['compiled'])
                + f'; compile_speedup {r["compile_speedup"]:.2f} (SFM only {r["compile_speedup_sfm_only"]:.2f}), '
                f'first chunk {r["compile_s"]:.1f} s, max |compiled - eager| {r["compiled_max_abs_diff"]:.1e}, '
                f'graph breaks: {"; ".join(r["graph_breaks"]) or "none"}',
                flush=True,
            )
        summary[preset] = {'steps': args.steps, 'afm_steps': args.afm_steps, **_rounded(r)}
    if len(presets) == 1:
        r = summary[presets[0]]
        best = r.get('compiled', r['eager'])
        summary = {'preset': presets[0], 'device': args.device, 'total_ms_p50': best['full_ms'], **r}
    print(json.dumps(summary))


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


if __name__ == '__main__':
    main()
