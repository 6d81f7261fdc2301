"""Wan 2.1 latent normalisation: raw VAE latent space <-> the DiT's model space.

Numerically identical to ComfyUI's `comfy.latent_formats.Wan21` (per-channel mean/std of
the Wan 2.1 VAE latents, scale factor 1.0). ComfyUI applies `process_in` to the (empty)
latent inside the sampler and to every 16-channel chunk of `vace_frames` in
`model_base.WAN21_Vace.extra_conds`; the headless path does the same here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import AnyCrowdError

# Facts about the Wan 2.1 VAE (comfy/latent_formats.py, class Wan21).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
WAN21_SCALE_FACTOR = 1.0


def _stats(latent: Tensor) -> tuple[Tensor, Tensor]:
    """Mean/std shaped to broadcast over `[16, T, h, w]` or `[B, 16, T, h, w]`."""
    if latent.ndim == 4:
        channel_dim = 0
    elif latent.ndim == 5:
        channel_dim = 1
    else:
        raise AnyCrowdError(
            f"A Wan latent must be [16, T, h, w] or [B, 16, T, h, w], got shape {tuple(latent.shape)}."
        )
    if latent.shape[channel_dim] != 16:
        raise AnyCrowdError(
            f"Wan 2.1 latents have 16 channels, got {latent.shape[channel_dim]} "
            f"(shape {tuple(latent.shape)}). Normalise each 16-channel chunk separately."
        )
    shape = [1] * latent.ndim
    shape[channel_dim] = 16
    mean = torch.tensor(WAN21_LATENTS_MEAN, dtype=latent.dtype, device=latent.device).view(shape)
    std = torch.tensor(WAN21_LATENTS_STD, dtype=latent.dtype, device=latent.device).view(shape)
    return mean, std


def process_in(latent: Tensor) -> Tensor:
    """Raw VAE latent -> model space: (z - mean) * scale / std (ComfyUI `Wan21.process_in`)."""
    mean, std = _stats(latent)
    return (latent - mean) * WAN21_SCALE_FACTOR / std


def process_out(latent: Tensor) -> Tensor:
    """Model space -> raw VAE latent: z * std / scale + mean (ComfyUI `Wan21.process_out`)."""
    mean, std = _stats(latent)
    return latent * std / WAN21_SCALE_FACTOR + mean
