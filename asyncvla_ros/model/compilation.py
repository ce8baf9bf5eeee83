"""torch.compile for chunk generation: the prefix pass (vision tower included), the denoising loop and the rater.

Shapes are static per checkpoint and camera set-up: the prompt is padded to a multiple of
`PROMPT_PADDING` tokens, the vision tower's grid constants are computed once, and the prefix cache is a
static one (P + L slots) that every step of every chunk reuses. So each part compiles once, at warm-up,
and on CUDA `reduce-overhead` captures CUDA graphs over the cache's fixed buffers. Frames of another size,
or an instruction that crosses a padding boundary, compile again once; torch logs each recompilation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionPatchEmbed,
    Qwen2_5_VLVisionAttention,
    apply_rotary_pos_emb_vision,
)

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
    visual = model.vlm.visual
    visual.patch_embed.__class__ = PatchEmbedAsMatmul
    for block in visual.blocks:
        block.attn.__class__ = BlockDiagonalVisionAttention
    model.prefix_pass = torch.compile(model.prefix_pass, fullgraph=True, **options)
    # the rater's forward on its own: Module.compile compiles Module._call_impl, whose one cache every compiled
    # module shares, so each call would check the guards of the others' graphs first
    model.rater.forward = torch.compile(model.rater.forward, fullgraph=True, **options)


class PatchEmbedAsMatmul(Qwen2_5_VisionPatchEmbed):
    """The vision tower's patch embedding as the matrix product it is (a Conv3d whose kernel is its stride and the
    whole patch): the same weights and result, without a convolution kernel's set-up on every frame."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        return F.linear(hidden_states.to(weight.dtype).reshape(-1, weight[0].numel()), weight.flatten(1))


class BlockDiagonalVisionAttention(Qwen2_5_VLVisionAttention):
    """Windowed vision attention as one SDPA call under a block-diagonal mask from `cu_seqlens`. transformers'
    SDPA path splits the tokens by window lengths read from a tensor, which breaks a compiled graph at every
    layer; the mask keeps the shapes fixed and gives the same result."""

    def forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
        tokens = hidden_states.shape[0]
        q, k, v = self.qkv(hidden_states).reshape(tokens, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, *position_embeddings)
        window = torch.searchsorted(cu_seqlens[1:], torch.arange(tokens, device=cu_seqlens.device), right=True)
        mask = window[:, None] == window[None, :]
        q, k, v = (x.transpose(0, 1)[None] for x in (q, k, v))  # (1, heads, tokens, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        return self.proj(out[0].transpose(0, 1).reshape(tokens, -1))


def graph_breaks() -> list[str]:
    """Why torch.compile split graphs so far in this process: a line per reason, most frequent first."""
    counter = torch._dynamo.utils.counters['graph_break']
    return [f'{count}x {reason.splitlines()[0]}' for reason, count in counter.most_common()]
