"""The confidence rater (method §3, §11.4): a small transformer with full attention over the policy's
prefix hidden states and the embedded SFM chunk, giving one confidence in (0, 1) per action step."""

from __future__ import annotations

import torch
from torch import nn


class ConfidenceRater(nn.Module):
    def __init__(self, config):
        super().__init__()
        width = config.rater_hidden_size
        self.prefix_proj = nn.Linear(config.hidden_size, width)
        self.action_proj = nn.Linear(config.max_action_dim, width)
        self.step_embedding = nn.Embedding(config.action_chunk_size, width)
        layer = nn.TransformerEncoderLayer(
            width, config.rater_num_heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.rater_num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)

    def forward(self, prefix_hidden: torch.Tensor, prefix_mask: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """prefix_hidden (B, P, H), prefix_mask (B, P) True for real tokens, actions (B, L, A) normalised
        -> confidence (B, L)."""
        steps = torch.arange(actions.shape[1], device=actions.device)
        tokens = torch.cat(
            [self.prefix_proj(prefix_hidden.float()), self.action_proj(actions.float()) + self.step_embedding(steps)],
            dim=1,
        )
        padding = torch.cat(
            [~prefix_mask.bool(), torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)], 1
        )
        hidden = self.encoder(tokens, src_key_padding_mask=padding)
        return torch.sigmoid(self.head(self.norm(hidden[:, -actions.shape[1] :])).squeeze(-1))


def rater_labels(
    predicted: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    action_dims: int,
    alpha: float,
    beta: float,
    eps: float,
    per_position: bool = False,
) -> torch.Tensor:
    """Confidence labels (B, L) from the per-step SFM error over the real action dims, min-max
    normalised over the valid (non-padded) steps of each chunk and mapped to [alpha, beta]:
    the lowest error gets beta, the highest alpha. `per_position`: the error is first divided by the
    batch's mean error at the step's position, so the labels rank steps against their position's typical
    error, which the position alone does not tell."""
    error = (predicted[..., :action_dims] - target[..., :action_dims]).pow(2).mean(-1)
    if per_position:
        typical = (error * valid).sum(0) / valid.sum(0).clamp(min=1)  # (L,)
        error = error / (typical + eps)
    inf = torch.full_like(error, float('inf'))
    low = torch.where(valid, error, inf).min(-1, keepdim=True).values
    high = torch.where(valid, error, -inf).max(-1, keepdim=True).values
    normalised = ((error - low) / (high - low + eps)).clamp(0.0, 1.0)
    return beta - (beta - alpha) * normalised
