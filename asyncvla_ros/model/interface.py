"""What a caller sends a policy and gets back, in robot units, and the error a checkpoint raises. No torch:
policy_node imports only this when the model runs in its child process (`inference_process`), so the node
starts in a second rather than importing torch and transformers it never uses."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class CheckpointError(ValueError):
    pass


@dataclass
class ChunkRequest:
    images: list            # one (H, W, 3) uint8 RGB array per camera key, in the processor's order
    state: np.ndarray       # (J,) joint positions, robot units
    instruction: str
    committed: np.ndarray | None = None   # (d, J) steps kept unchanged (delay compensation), robot units
    self_correction: bool = True
    # Sampling settings; None: the checkpoint's own configuration.
    confidence_threshold: float | None = None
    num_correction_rounds: int | None = None
    num_steps: int | None = None
    num_afm_steps: int | None = None


@dataclass
class ChunkPrediction:
    positions: np.ndarray             # (L, J) robot units
    confidence: np.ndarray            # (L,), empty when no rater ran
    refined: np.ndarray               # (L,) bool
    sfm_positions: np.ndarray         # (L, J) the chunk before self-correction (what SFM alone gives)
    timings_ms: dict = field(default_factory=dict)
