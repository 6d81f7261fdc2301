"""What an ANYCROWD_INSTANCES socket carries (not a node): the Instance Decoupler's isolated
characters with the reference they came from, and their fit to a node's output size. Made by
AnyCrowd Instance Decoupler, read by IILR Encode and Long Video Sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from anycrowd_core.boxes import boxes_from_masks
from anycrowd_core.decoupler import DecoupledInstances
from anycrowd_core.errors import AnyCrowdError

from .comfy_runtime import resize_frames, resize_masks


@dataclass
class DecoupledReference:
    """What an ANYCROWD_INSTANCES socket carries.

    instances: the core `DecoupledInstances` (identity images `[N,H,W,3]`, background
        `[H,W,3]`, masks bool `[N,H,W]`, boxes `[N,4]` xyxy px) at the reference size.
    image: the reference image `[H,W,3]` float 0..1 it was built from.
    masks: the instance masks `[N,H,W]` float 0..1 at the image size (after resizing).
    reassign, seed, fill: the decoupler options used.
    alignment: the `anycrowd_core.pose.align.AlignedIdentities` when the identities were aligned
        onto driving tracks (then `instances` is on the driving video's canvas), else None.
    """

    instances: DecoupledInstances
    image: Tensor
    masks: Tensor
    reassign: bool = False
    seed: int = 0
    fill: str = "gray"
    alignment: Any | None = None

    @property
    def num_identities(self) -> int:
        return self.instances.num_identities


def reference_input(instances) -> DecoupledReference:
    """The instances input, refused unless it came from AnyCrowd Instance Decoupler."""
    if not isinstance(instances, DecoupledReference):
        raise AnyCrowdError("instances must come from AnyCrowd Instance Decoupler.")
    return instances


def fit_instances(decoupled: DecoupledInstances, width: int, height: int) -> DecoupledInstances:
    """The decoupled reference at width x height, resized (center crop) like WanVaceToVideo
    resizes its reference image; masks by nearest neighbour, boxes recomputed."""
    if decoupled.size == (height, width):
        return decoupled
    images = resize_frames(decoupled.identity_images, width, height)
    background = resize_frames(decoupled.background[None], width, height)[0]
    masks = resize_masks(decoupled.masks.float(), width, height, mode="nearest-exact") > 0.5
    gone = [k for k in range(masks.shape[0]) if not masks[k].any()]
    if gone:
        raise AnyCrowdError(
            f"Character(s) {gone} vanish when the reference is resized to {width}x{height} (their masks "
            "are too small or outside the centre crop): use a larger width/height or a reference with the same shape."
        )
    boxes = boxes_from_masks(masks[:, None])[:, 0]
    scale = torch.tensor([width / decoupled.size[1], height / decoupled.size[0]])
    return replace(
        decoupled, identity_images=images.clamp(0, 1), background=background.clamp(0, 1), masks=masks,
        boxes=boxes, offsets=decoupled.offsets * scale,
    )
