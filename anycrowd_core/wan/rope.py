"""3-axis rotary position embedding of Wan 2.1 (frame, row, column).

Each head's channels are split into a time part d - 4*(d//6) and two spatial parts
2*(d//6); every part rotates channel pairs by angle position * theta^(-2i/part_width).
Angles are computed in float64 and applied in float32, as ComfyUI does.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROPE_THETA = 10000.0


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Channel widths of the (t, h, w) rotary parts of one head."""
    sixth = head_dim // 6
    return head_dim - 4 * sixth, 2 * sixth, 2 * sixth


def grid_positions(frames: int, height: int, width: int, device=None) -> Tensor:
    """Integer (t, h, w) position of every token of a frames x height x width token grid.

    Returns `[frames * height * width, 3]` int64, row-major over (t, h, w) like Wan's tokens.
    """
    t, h, w = torch.meshgrid(
        torch.arange(frames, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)


def shifted_reference_positions(reference_frames: int, frames: int, height: int, width: int,
                                device=None) -> Tensor:
    """RealisDance-DiT's spatially shifted RoPE (its Fig. 4) for a latent whose first
    `reference_frames` of `frames` latent frames are references (IILR: identities, then the
    background). Reference frame k takes time 0 with rows and columns shifted by
    (k + 1) * (height, width): beside the video grid, overlapping neither it nor another
    reference. The video frames take times 0 .. frames - reference_frames - 1, so the first
    video frame shares time 0 with the references, as in the paper.

    Returns `[frames * height * width, 3]` int64 (t, h, w), in token order.
    """
    pos = grid_positions(frames, height, width, device=device).clone()
    per = height * width
    for k in range(reference_frames):
        block = pos[k * per : (k + 1) * per]
        block[:, 0] = 0
        block[:, 1] += (k + 1) * height
        block[:, 2] += (k + 1) * width
    pos[reference_frames * per :, 0] -= reference_frames
    return pos


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float = ROPE_THETA) -> tuple[Tensor, Tensor]:
    """Rotation table for token positions `[L, 3]` (may be fractional).

    Returns (cos, sin), each `[L, head_dim // 2]` float32: one angle per channel pair,
    the time pairs first, then row pairs, then column pairs.
    """
    angles = []
    for axis, width in enumerate(rope_axes(head_dim)):
        exponent = torch.linspace(0, (width - 2) / width, steps=width // 2, dtype=torch.float64, device=positions.device)
        inv_freq = 1.0 / (theta**exponent)
        # positions pass through float32 first, as in ComfyUI, so fractional shifts round alike
        pos = positions[:, axis].to(torch.float32).to(torch.float64)
        angles.append(pos[:, None] * inv_freq[None, :])
    angle = torch.cat(angles, dim=1)
    return torch.cos(angle).to(torch.float32), torch.sin(angle).to(torch.float32)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs of `x [B, L, H, D]` by the table `[L, D/2]`; keeps x's dtype."""
    pairs = x.to(torch.float32).unflatten(-1, (-1, 2))  # [B, L, H, D/2, 2]
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    rotated_even = torch.addcmul(cos * even, -sin, odd)
    rotated_odd = torch.addcmul(sin * even, cos, odd)
    return torch.stack([rotated_even, rotated_odd], dim=-1).flatten(-2).type_as(x)
