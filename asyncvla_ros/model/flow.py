"""Flow-matching pieces shared by SFM and AFM: tau = 1 is noise and tau = 0 is data,
x_tau = tau * noise + (1 - tau) * action, velocity target = noise - action, Euler from 1 to 0."""

from __future__ import annotations

import math

import torch


def time_embedding(tau: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sinusoidal code of per-token times: (B, L) -> (B, L, dim), half sine and half cosine with
    periods spaced geometrically from min_period to max_period (angle = 2 pi tau / period). Computed in
    float32 in EO-1's order of operations: its fastest angles reach ~1600 rad, where another rounding of
    the scale moves the code by 1e-4 and an imported EO-1 model's actions with it."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=tau.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi) * tau.float()[..., None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def sample_flow_time(batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(B,) tau ~ 0.001 + 0.999 * Beta(1.5, 1): biased towards the noisy end (method §1.5).
    Beta(1.5, 1) has CDF u^1.5, so it is sampled by inversion."""
    u = torch.rand(batch, generator=generator, device=device)
    return 0.001 + 0.999 * u.pow(1.0 / 1.5)


def training_masks(
    is_pad: torch.Tensor, afm_prob: float, prefix_prob: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, L) bool: which tokens are noised and supervised (method §11.3).

    SFM samples mask every token. AFM samples (probability `afm_prob`) use, with probability
    `prefix_prob`, a committed prefix of random length 1..L/2 (delay compensation), otherwise a
    Bernoulli mask with a rate drawn from U(0, 1) (self-correction); each keeps at least one
    masked and one clean token.
    """
    batch, length = is_pad.shape
    device = is_pad.device
    u = lambda *shape: torch.rand(*shape, generator=generator, device=device)  # noqa: E731
    is_afm = u(batch) < afm_prob
    use_prefix = u(batch) < prefix_prob
    rate = u(batch, 1)
    bernoulli = u(batch, length) < rate
    prefix_len = 1 + (u(batch) * max(length // 2, 1)).long().clamp(max=max(length // 2, 1) - 1)
    committed = torch.arange(length, device=device)[None] < prefix_len[:, None]
    afm = torch.where(use_prefix[:, None], ~committed, bernoulli)
    # at least one masked and one clean token
    first = torch.zeros(batch, length, dtype=torch.bool, device=device)
    pick = (u(batch) * length).long().clamp(max=length - 1)
    first[torch.arange(batch), pick] = True
    afm = torch.where(afm.any(-1, keepdim=True), afm, first)
    afm = torch.where((~afm).any(-1, keepdim=True), afm, afm & ~first.roll(1, dims=-1))
    return torch.where(is_afm[:, None], afm, torch.ones_like(afm))
