"""Unified SFM/AFM training of the policy and training of the confidence rater, with accelerate
(one CPU process here; `accelerate launch` for many GPUs, bf16 there)."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import ConcatDataset, DataLoader, WeightedRandomSampler
from tqdm import tqdm
from transformers import Qwen2Tokenizer, Qwen2VLImageProcessorPil, get_cosine_schedule_with_warmup

from asyncvla_ros.model import AsyncVLAConfig, AsyncVLAPolicy, AsyncVLAProcessor, load_checkpoint, save_checkpoint
from asyncvla_ros.model.checkpoint import has_statistics, load_model
from asyncvla_ros.model.interface import CheckpointError
from asyncvla_ros.model.processing_asyncvla import QWEN_SYSTEM_PROMPT, SYSTEM_PROMPT
from asyncvla_ros.model.tokenizer import build_qwen_tokenizer, build_small_tokenizer, prompt_token_ids
from asyncvla_ros.training.lerobot_format import DatasetSpec, LeRobotDataset
from asyncvla_ros.training.metrics import rater_spearman


@dataclass
class TrainConfig:
    preset: str = 'small'
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-4
    vision_lr: float = 2e-5
    weight_decay: float = 0.1
    warmup_ratio: float = 0.03
    image_size: int = 112
    seed: int = 0
    save_every: int = 500
    validate_every: int = 500
    validation_samples: int = 32
    gradient_checkpointing: bool = False
    held_out_fraction: float = 0.1
    action_mode: str = 'delta'
    afm_prefix_prob: float | None = None  # share of AFM samples with a committed prefix; None keeps the model's
    chunk_size: int | None = None  # action steps a chunk; None keeps the checkpoint's (or the preset's)


def split_episodes(spec: DatasetSpec, fraction: float) -> tuple[list[int], list[int]]:
    """Training and held-out episode indices (the last `fraction` of the episodes, at least one)."""
    import pyarrow.parquet as pq

    from asyncvla_ros.training.lerobot_format import EPISODES_PATH

    indices = sorted(pq.read_table(Path(spec.root) / EPISODES_PATH, columns=['episode_index']).column(0).to_pylist())
    held = max(1, int(round(len(indices) * fraction))) if len(indices) > 1 else 0
    return indices[: len(indices) - held], indices[len(indices) - held :]


def build_processor(
    config: TrainConfig,
    dataset: LeRobotDataset,
    tokenizer,
    model_config: AsyncVLAConfig,
    image_processor=None,
    system_prompt: str = SYSTEM_PROMPT,
) -> AsyncVLAProcessor:
    """The processor for `dataset`: its statistics, cameras and frame period, images at `config.image_size`
    unless an image processor is given."""
    pixels = config.image_size * config.image_size
    stats = (
        dataset.stats if config.action_mode == 'absolute' else {**dataset.stats, 'action': delta_action_stats(dataset)}
    )
    return AsyncVLAProcessor(
        tokenizer,
        image_processor or Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels),
        stats,
        list(dataset.spec.select_video_keys),
        model_config.action_chunk_size,
        model_config.max_state_dim,
        model_config.max_action_dim,
        system_prompt=system_prompt,
        action_dt=1.0 / dataset.fps,
        action_mode=config.action_mode,
    )


def _small_tokenizer(texts: list[str], vocab_size: int):
    return build_small_tokenizer(texts + [f'{SYSTEM_PROMPT} system user assistant'], vocab_size // 2)


def build_policy(
    config: TrainConfig, dataset: LeRobotDataset, texts: list[str]
) -> tuple[AsyncVLAPolicy, AsyncVLAProcessor]:
    """A fresh policy for the dataset: small presets get a small tokenizer trained on the instructions."""
    preset = AsyncVLAConfig.from_preset(config.preset)
    vocab_size = preset.vlm_config.text_config.vocab_size
    tokenizer = build_qwen_tokenizer() if vocab_size > 100_000 else _small_tokenizer(texts, vocab_size)
    torch.manual_seed(config.seed)
    # its rater starts from random weights: self-correction is refused until train-rater has run
    length = {'action_chunk_size': config.chunk_size} if config.chunk_size else {}
    model = AsyncVLAPolicy(
        AsyncVLAConfig.from_preset(config.preset, rater_trained=False, **length, **prompt_token_ids(tokenizer))
    )
    return model, build_processor(config, dataset, tokenizer, model.config)


def load_for_finetuning(
    directory: Path, config: TrainConfig, dataset: LeRobotDataset, texts: list[str]
) -> tuple[AsyncVLAPolicy, AsyncVLAProcessor]:
    """A checkpoint to fine-tune, float32 on the CPU. An imported model (no statistics yet) gets a processor
    for `dataset` with the import's tokenizer and image processor; an import without a tokenizer gets a small
    one trained on the instructions, and the model takes its special token ids (they carry no text then)."""
    if has_statistics(directory):
        return load_checkpoint(directory, device='cpu', dtype='float32')
    model = load_model(directory, device='cpu', dtype='float32')
    directory = Path(directory)
    if (directory / 'tokenizer.json').is_file():
        tokenizer = Qwen2Tokenizer.from_pretrained(directory, local_files_only=True)
    else:
        tokenizer = _small_tokenizer(texts, model.config.vlm_config.text_config.vocab_size)
        for name, value in prompt_token_ids(tokenizer).items():
            setattr(model.config, name, value)
    image_processor = (
        Qwen2VLImageProcessorPil.from_pretrained(directory, local_files_only=True)
        if (directory / 'preprocessor_config.json').is_file()
        else None
    )
    system_prompt = QWEN_SYSTEM_PROMPT if model.config.eo1_config else SYSTEM_PROMPT
    return model, build_processor(config, dataset, tokenizer, model.config, image_processor, system_prompt)


def delta_action_stats(dataset: LeRobotDataset) -> dict:
    """Mean/std of action[t + k] - state[t] over every frame t and chunk step k (padding repeats the
    episode's last action, as the samples do)."""
    deltas = np.concatenate([s['actions'] - s['state'] for s in (dataset.chunk_at(i) for i in range(len(dataset)))])
    return {'mean': deltas.mean(0).tolist(), 'std': deltas.std(0).tolist()}


def collate(samples: list[dict], processor: AsyncVLAProcessor) -> dict:
    batch = processor(
        [s['images'] for s in samples], np.stack([s['state'] for s in samples]), [s['task'] for s in samples]
    )
    batch['actions'] = torch.from_numpy(
        processor.normalize_actions(np.stack([s['actions'] for s in samples]), np.stack([s['state'] for s in samples]))
    )
    batch['action_is_pad'] = torch.from_numpy(np.stack([s['action_is_pad'] for s in samples]))
    return batch


def _loader(datasets: list[LeRobotDataset], processor, batch_size: int, seed: int) -> DataLoader:
    combined = ConcatDataset(datasets)
    weights = np.concatenate([np.full(len(d), d.spec.weight / len(d)) for d in datasets])
    sampler = WeightedRandomSampler(weights, num_samples=len(combined), generator=torch.Generator().manual_seed(seed))
    return DataLoader(combined, batch_size=batch_size, sampler=sampler, collate_fn=lambda s: collate(s, processor))


def _param_groups(model: AsyncVLAPolicy, config: TrainConfig) -> list[dict]:
    vision = [p for n, p in model.named_parameters() if n.startswith('vlm.visual.') and p.requires_grad]
    others = [
        p
        for n, p in model.named_parameters()
        if not n.startswith('vlm.visual.') and not n.startswith('rater.') and p.requires_grad
    ]
    return [{'params': vision, 'lr': config.vision_lr}, {'params': others, 'lr': config.lr}]


@torch.no_grad()
def open_loop_validation(
    model: AsyncVLAPolicy, processor: AsyncVLAProcessor, dataset: LeRobotDataset, samples: int, seed: int = 0
) -> dict:
    """Action error of generated chunks (self-correction on and off) against the recorded actions on
    held-out frames, relative to always predicting the dataset's mean action; rater calibration."""
    model.eval()
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(samples, len(dataset)), replace=False)
    mean_action = np.asarray(dataset.stats['action']['mean'])  # stats.json: the whole dataset's
    errors, sfm_errors, baseline, confidences, step_errors = [], [], [], [], []
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for i in picks:
        sample = dataset[int(i)]
        inputs = {
            k: v.to(next(model.parameters()).device)
            for k, v in processor([sample['images']], sample['state'][None], [sample['task']]).items()
        }
        result = model.generate_chunk(**inputs, generator=generator)  # self-correction when the rater is trained
        valid = ~sample['action_is_pad']
        predicted = processor.unnormalize_actions(result.actions[0], sample['state'])[valid]
        sfm = processor.unnormalize_actions(result.sfm_actions[0], sample['state'])[valid]
        truth = sample['actions'][valid]
        errors.append(np.abs(predicted - truth).mean())
        sfm_errors.append(np.abs(sfm - truth).mean())
        baseline.append(np.abs(mean_action - truth).mean())
        if result.confidence is not None:
            confidences.extend(result.confidence[0][torch.from_numpy(valid)].cpu().tolist())
            step_errors.extend(np.abs(sfm - truth).mean(-1).tolist())
    spearman = rater_spearman(confidences, step_errors)
    return {
        'action_error': float(np.mean(errors)),
        'action_error_sfm': float(np.mean(sfm_errors)),
        'baseline_error': float(np.mean(baseline)),
        'action_error_ratio': float(np.mean(errors) / np.mean(baseline)),
        'rater_spearman': spearman,
    }


class _Log:
    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        new = not path.exists()
        self.file = open(path, 'a', newline='')  # noqa: SIM115 (appended to for the whole run)
        self.writer = csv.DictWriter(self.file, fieldnames=fields)
        if new:
            self.writer.writeheader()

    def write(self, **row):
        self.writer.writerow({k: row.get(k, '') for k in self.fields})
        self.file.flush()


def resize_action_chunk(model: AsyncVLAPolicy, processor: AsyncVLAProcessor, size: int) -> None:
    """A checkpoint fine-tuned to chunks of `size` steps. The action tokens' positions continue the prompt's, so the
    backbone takes any length; the statistics stay (the steps beyond the old length start from its scale) and the
    rater's step embedding keeps its rows, new steps starting from the last one. The rater's confidence is then
    untrained for the new steps, so self-correction is refused until train-rater has run."""
    old = model.rater.step_embedding.weight.data
    rows = old[torch.arange(size).clamp(max=old.shape[0] - 1)]
    model.rater.step_embedding = torch.nn.Embedding.from_pretrained(rows.clone(), freeze=False)
    model.config.action_chunk_size = processor.action_chunk_size = size
    model.config.rater_trained = False


def _chunk_size(checkpoint: Path | None, preset: str) -> int:
    if checkpoint is None:
        return AsyncVLAConfig.from_preset(preset).action_chunk_size
    if not (Path(checkpoint) / 'config.json').is_file():
        raise CheckpointError(f'{checkpoint}: no config.json (not a checkpoint directory)')
    return AsyncVLAConfig.from_pretrained(checkpoint, local_files_only=True).action_chunk_size


def train_policy(
    specs: list[DatasetSpec],
    output: Path,
    config: TrainConfig,
    resume: Path | None = None,
    init_from: Path | None = None,
) -> dict:
    """Trains the unified SFM/AFM policy; writes checkpoints, train_log.csv and the final checkpoint to `output`.
    `resume` continues a run (its step and schedule); `init_from` fine-tunes a checkpoint's weights, processor
    and normalisation with a fresh schedule of `config.steps`."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision='bf16' if torch.cuda.is_available() else 'no'
    )
    chunk = config.chunk_size or _chunk_size(resume or init_from, config.preset)
    splits = [split_episodes(s, config.held_out_fraction) for s in specs]
    train_sets = [LeRobotDataset(s, chunk, episodes=tr) for s, (tr, _) in zip(specs, splits)]
    val_set = LeRobotDataset(specs[0], chunk, episodes=splits[0][1] or splits[0][0])
    texts = sorted({t for d in train_sets for t in d.tasks.values()})
    if resume is not None:
        model, processor = load_checkpoint(resume, device='cpu')
        start_step = json.loads((Path(resume) / 'trainer_state.json').read_text())['step']
    elif init_from is not None:
        model, processor = load_for_finetuning(init_from, config, train_sets[0], texts)
        start_step = 0
    else:
        model, processor = build_policy(config, train_sets[0], texts)
        start_step = 0
    if model.config.action_chunk_size != chunk:
        resize_action_chunk(model, processor, chunk)
    if config.afm_prefix_prob is not None:  # saved with the checkpoint's config
        model.config.afm_prefix_prob = config.afm_prefix_prob
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.rater.requires_grad_(False)
    optimizer = torch.optim.AdamW(_param_groups(model, config), weight_decay=config.weight_decay)
    for group in optimizer.param_groups:  # a resumed schedule starts mid-way and needs each group's peak rate
        group.setdefault('initial_lr', group['lr'])
    scheduler = get_cosine_schedule_with_warmup(
        optimizer,
        max(1, int(config.warmup_ratio * config.steps)),
        config.steps,
        last_epoch=start_step - 1 if start_step else -1,
    )
    loader = _loader(train_sets, processor, config.batch_size, config.seed)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    log = _Log(output / 'train_log.csv', ['step', 'loss', 'lr', 'seconds', 'action_error_ratio', 'rater_spearman'])
    generator = torch.Generator().manual_seed(config.seed)
    started, step, losses = time.time(), start_step, []
    model.train()
    for step, batch in _steps(loader, start_step, config.steps, 'train', losses):
        loss = model(**batch, generator=generator).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        row = {
            'step': step,
            'loss': f'{loss.item():.5f}',
            'lr': f'{scheduler.get_last_lr()[-1]:.3g}',
            'seconds': f'{time.time() - started:.1f}',
        }
        if config.validate_every and step % config.validate_every == 0:
            metrics = open_loop_validation(
                accelerator.unwrap_model(model), processor, val_set, config.validation_samples
            )
            row.update({k: f'{metrics[k]:.4f}' for k in ('action_error_ratio', 'rater_spearman')})
            model.train()
        log.write(**row)
        if config.save_every and step % config.save_every == 0 and step < config.steps:
            _save(accelerator.unwrap_model(model), processor, output / f'checkpoint-{step}', step)
    final = _save(accelerator.unwrap_model(model), processor, output, step)
    return {
        'output': str(final),
        'steps': step,
        'first_loss': float(np.mean(losses[:10])) if losses else None,
        'last_loss': float(np.mean(losses[-10:])) if losses else None,
        'seconds': round(time.time() - started, 1),
    }


def _steps(loader, start: int, total: int, desc: str, losses: list):
    """(step, batch) for steps start+1..total, cycling through the loader, with a progress bar that
    shows the mean of the last losses the caller appended."""
    step = start
    with tqdm(total=total, initial=start, desc=desc, unit='step') as progress:
        while step < total:
            for batch in loader:
                step += 1
                yield step, batch
                progress.update(1)
                progress.set_postfix(loss=f'{np.mean(losses[-20:]):.4f}' if losses else '-')
                if step >= total:
                    return


def _save(model, processor, directory: Path, step: int) -> Path:
    save_checkpoint(model, processor, directory)
    # optimizer moments are not saved: torch would pickle them; a resumed run restarts them
    (directory / 'trainer_state.json').write_text(json.dumps({'step': step}))
    return directory


def train_rater(
    checkpoint: Path,
    specs: list[DatasetSpec],
    output: Path | None,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-4,
    seed: int = 0,
    held_out_fraction: float = 0.1,
    validation_samples: int = 32,
) -> dict:
    """Trains only the rater (the policy frozen) and reports its calibration on held-out episodes."""
    model, processor = load_checkpoint(checkpoint, device='auto')
    device = next(model.parameters()).device
    chunk = model.config.action_chunk_size
    splits = [split_episodes(s, held_out_fraction) for s in specs]
    train_sets = [LeRobotDataset(s, chunk, episodes=tr) for s, (tr, _) in zip(specs, splits)]
    val_set = LeRobotDataset(specs[0], chunk, episodes=splits[0][1] or splits[0][0])
    model.requires_grad_(False)
    model.rater.requires_grad_(True)
    model.config.rater_trained = True  # from here on its confidence is a trained one (validated below)
    optimizer = torch.optim.AdamW(model.rater.parameters(), lr=lr)
    loader = _loader(train_sets, processor, batch_size, seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    dims = processor.action_dim
    step, losses = 0, []
    model.rater.train()
    for step, batch in _steps(loader, 0, steps, 'train-rater', losses):  # noqa: B007 (the last step is reported)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model.rater_loss(**batch, action_dims=dims, generator=generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    metrics = open_loop_validation(model, processor, val_set, validation_samples, seed)
    destination = Path(output or checkpoint)
    _save(
        model,
        processor,
        destination,
        json.loads((Path(checkpoint) / 'trainer_state.json').read_text()).get('step', 0)
        if (Path(checkpoint) / 'trainer_state.json').exists()
        else 0,
    )
    return {
        'output': str(destination),
        'steps': step,
        'first_loss': float(np.mean(losses[:10])),
        'last_loss': float(np.mean(losses[-10:])),
        **metrics,
    }
