"""Encode one multi-character clip into what training needs: Instance Decoupler, IILR VACE
context, clip latents and the token layout with AGF soft labels. The one path shared by
the cache builder (`training.sample_builder`, real clips) and the in-memory scenes
(`training.scene_samples`), so both encode a clip the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from anycrowd_core.codec import VideoCodec
from anycrowd_core.decoupler import decouple_instances
from anycrowd_core.iilr import IILRConditioning, encode_iilr
from anycrowd_core.latent_format import process_in
from anycrowd_core.layout import TokenLayout, build_token_layout


@dataclass
class ClipTensors:
    """A clip at training size (H, W px, F frames, N identities); identity k is track k.

    reference_image: float `[H, W, 3]` 0..1; reference_masks: bool `[N, H, W]`;
    video: float `[F, H, W, 3]` 0..1; pose_video: float `[F, H, W, 3]` 0..1 (VACE control);
    track_boxes: float `[N, F, 4]` xyxy px, NaN = absent; track_masks: bool `[N, F, H, W]`.
    """

    reference_image: Tensor
    reference_masks: Tensor
    video: Tensor
    pose_video: Tensor
    track_boxes: Tensor
    track_masks: Tensor


@dataclass
class EncodedClip:
    """latents: `[16, T_lat, h, w]` model-space clip latents (the flow-matching x0).
    conditioning: IILR references + pose control (`vace_context`, `trim`, `vace_strength`).
    reference_masks: bool `[N, H, W]` identity masks after the decoupler's reassignment.
    binding: int64 `[N]`, identity k bound to track k.
    layout: TokenLayout with `soft_labels` (AGF targets from the track masks)."""

    latents: Tensor
    conditioning: IILRConditioning
    reference_masks: Tensor
    binding: Tensor
    layout: TokenLayout


def encode_clip(codec: VideoCodec, clip: ClipTensors, *, reassign: bool, seed: int, background: bool) -> EncodedClip:
    """Decouple the reference (stochastic reassignment when `reassign`, seeded by `seed`),
    encode IILR + control and the video with `codec`, and lay out the tokens."""
    decoupled = decouple_instances(clip.reference_image, clip.reference_masks, reassign=reassign, seed=seed)
    cond = encode_iilr(codec, decoupled, clip.pose_video, background=background)
    latents = process_in(codec.encode(clip.video))
    binding = torch.arange(len(clip.reference_masks), dtype=torch.int64)
    layout = build_token_layout(decoupled.masks, clip.track_boxes, binding.tolist(), background=background,
                                track_masks=clip.track_masks)
    return EncodedClip(latents=latents, conditioning=cond, reference_masks=decoupled.masks, binding=binding,
                       layout=layout)
