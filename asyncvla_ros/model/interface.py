"""What a caller sends a policy and gets back, in robot units, and the error a checkpoint raises. No torch:
policy_node imports only this when the model runs in its child process (`inference_process`), so the node
starts in a second rather than importing torch and transformers it never uses."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np

COMPILE_MODES = ('eager', 'default', 'reduce-overhead', 'max-autotune')  # torch.compile modes (model/compilation.py)


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class Sampling:
    """How one chunk is sampled, under policy_node's parameter names (nodes/params.py documents them). None
    takes the checkpoint's own setting; for self_correction that is on exactly when its rater is trained."""

    self_correction: bool | None = None
    confidence_threshold: float | None = None
    num_correction_rounds: int | None = None
    num_denoise_steps: int | None = None
    num_denoise_steps_afm: int | None = None

    @classmethod
    def from_params(cls, params: dict) -> Sampling:
        return cls(**{f.name: params[f.name] for f in fields(cls)})


@dataclass
class ChunkRequest:
    images: list  # one (H, W, 3) uint8 RGB array per camera key, in the processor's order
    state: np.ndarray  # (J,) joint positions, robot units
    instruction: str
    committed: np.ndarray | None = None  # (d, J) steps kept unchanged (delay compensation), robot units
    sampling: Sampling = field(default_factory=Sampling)


@dataclass
class ChunkPrediction:
    positions: np.ndarray  # (L, J) robot units
    confidence: np.ndarray  # (L,), empty when no rater ran
    refined: np.ndarray  # (L,) bool
    sfm_positions: np.ndarray  # (L, J) the chunk before self-correction (what SFM alone gives)
    timings_ms: dict = field(default_factory=dict)


class Policy(Protocol):
    """The contract every policy keeps (PolicyRunner in this process, InferenceProcess in a child, the tests'
    scripted policies): one chunk for one request, and the shapes a caller must feed it."""

    camera_keys: list[str]  # the checkpoint's cameras, in the order `ChunkRequest.images` takes them
    num_joints: int
    chunk_size: int
    dt: float  # seconds between chunk steps

    def predict(self, request: ChunkRequest) -> ChunkPrediction: ...
