"""One chunk from one observation, in robot units: what policy_node (and offline evaluation) call.
Holds the model and processor on their device and keeps the robot-side shapes honest."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from asyncvla_ros.model.checkpoint import load_checkpoint
from asyncvla_ros.model.compilation import graph_breaks
from asyncvla_ros.model.interface import CheckpointError, ChunkPrediction, ChunkRequest
from asyncvla_ros.paths import share_dir

log = logging.getLogger(__name__)


def demo_checkpoint() -> Path:
    """The demo checkpoint shipped with the package (checkpoints/demo)."""
    return share_dir() / 'checkpoints' / 'demo'


class PolicyRunner:
    def __init__(
        self,
        checkpoint: str | Path = '',
        device: str = 'auto',
        dtype: str = 'auto',
        attn_implementation: str = 'auto',
        seed: int = 0,
        num_threads: int = 0,
        compile: str = 'eager',
    ):
        """num_threads > 0 sets torch's CPU thread pool, which is per process. compile: a
        model/compilation.py mode; the first chunk then compiles (and logs how long, and the graph breaks)."""
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        path = Path(checkpoint) if checkpoint else demo_checkpoint()
        if not checkpoint and not path.is_dir():
            raise CheckpointError(
                f'no checkpoint given and the demo checkpoint ({path}) is not there: set `checkpoint`'
            )
        self.model, self.processor = load_checkpoint(path, device, dtype, attn_implementation, compile)
        self.compile, self._compile_pending = compile, compile != 'eager'
        self.device = next(self.model.parameters()).device
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed >= 0 else torch.seed())
        if self.processor.state_dim != self.processor.action_dim:
            raise CheckpointError(
                f'{path}: joint-space policies need state dim == action dim, got '
                f'{self.processor.state_dim} and {self.processor.action_dim}'
            )

    @property
    def num_joints(self) -> int:
        return self.processor.action_dim

    @property
    def chunk_size(self) -> int:
        return self.model.config.action_chunk_size

    @property
    def dt(self) -> float:
        return self.processor.action_dt

    @property
    def camera_keys(self) -> list[str]:
        return self.processor.camera_keys

    def close(self) -> None:
        """Drops the model, and gives its GPU memory back."""
        del self.model
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()

    def predict(self, request: ChunkRequest) -> ChunkPrediction:
        start = time.perf_counter()
        prediction = self._predict(request)
        if self._compile_pending:
            self._compile_pending = False
            breaks = '; '.join(graph_breaks()) or 'none'
            log.info(
                f'generation compiled ({self.compile}) in {time.perf_counter() - start:.1f} s; graph breaks: {breaks}'
            )
        return prediction

    def _predict(self, request: ChunkRequest) -> ChunkPrediction:
        inputs = self.processor([request.images], np.asarray(request.state)[None], [request.instruction])
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs['pixel_values'] = inputs['pixel_values'].to(self.model.dtype)
        committed = None
        num_committed = 0 if request.committed is None else len(request.committed)
        if num_committed:
            committed = torch.from_numpy(self.processor.normalize_actions(request.committed, request.state))[None].to(
                self.device
            )
        result = self.model.generate_chunk(
            **inputs,
            committed=committed,
            num_committed=num_committed,
            sampling=request.sampling,
            generator=self.generator,
        )
        positions = self.processor.unnormalize_actions(result.actions[0], request.state)
        sfm_positions = self.processor.unnormalize_actions(result.sfm_actions[0], request.state)
        if num_committed:  # exactly what was committed, not a normalise/unnormalise round trip
            positions[:num_committed] = sfm_positions[:num_committed] = request.committed
        confidence = (
            np.zeros(0, np.float32) if result.confidence is None else result.confidence[0].float().cpu().numpy()
        )
        return ChunkPrediction(positions, confidence, result.refined[0].cpu().numpy(), sfm_positions, result.timings_ms)
