"""torch.compile for chunk generation: the vision tower, the prefix pass, the denoising loop and the rater.

Shapes are static per checkpoint and camera set-up: the prompt is padded to a multiple of
`PROMPT_PADDING` tokens, the vision tower's grid constants are computed once, and the prefix cache is a
static one (P + L slots) that every step of every chunk reuses. So each part compiles once, at warm-up,
and on CUDA `reduce-overhead` captures CUDA graphs over the cache's fixed buffers. Frames of another size,
or an instruction that crosses a padding boundary, compile again once; torch logs each recompilation.
"""

from __future__ import annotations

import torch

from asyncvla_ros.model.interface import COMPILE_MODES

PROMPT_PADDING = 16  # tokens: instructions of similar length share one compiled shape, at little extra prefix


def compile_generation(model, mode: str) -> None:
    """Compiles `model` (an AsyncVLAPolicy, in place, for inference only) so that generate_chunk runs
    compiled code; `eager` leaves it as it is. Nothing compiles until the first chunk."""
    if mode not in COMPILE_MODES:
        raise ValueError(f'compile must be one of {COMPILE_MODES}, got {mode!r}')
    if mode == 'eager':
        return
    options = {'mode': mode, 'dynamic': False}
    torch._logging.set_logs(recompiles=True)
    # the whole Euler loop, unrolled: one graph per number of steps (SFM's and AFM's), no Python between steps
    model.denoise = torch.compile(model.denoise, fullgraph=True, **options)
    model.rater.compile(fullgraph=True, **options)
    model.vlm.language_model.compile(fullgraph=True, **options)
    model.vlm.visual.compile(**options)  # its SDPA path splits attention by window lengths: graph breaks


def graph_breaks() -> list[str]:
    """Why torch.compile split graphs so far in this process: a line per reason, most frequent first."""
    counter = torch._dynamo.utils.counters['graph_break']
    return [f'{count}x {reason.splitlines()[0]}' for reason, count in counter.most_common()]
