"""AnyCrowd Instance Decoupler node: reference IMAGE + one MASK per character -> isolated
identities and background (ANYCROWD_INSTANCES) and a preview strip (anycrowd_core.decoupler).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from anycrowd_core.decoupler import DecoupledInstances, decouple_instances, preview
from anycrowd_core.errors import AnyCrowdError

from .node_types import INSTANCES

# Masks whose aspect ratio differs from the image's by more than this are refused rather
# than stretched: they were probably drawn on another picture.
ASPECT_TOLERANCE = 0.02


@dataclass
class DecoupledReference:
    """What an ANYCROWD_INSTANCES socket carries.

    instances: the core `DecoupledInstances` (identity images `[N,H,W,3]`, background
        `[H,W,3]`, masks bool `[N,H,W]`, boxes `[N,4]` xyxy px) at the reference size.
    image: the reference image `[H,W,3]` float 0..1 it was built from.
    masks: the instance masks `[N,H,W]` float 0..1 at the image size (after resizing).
    reassign, seed, fill: the decoupler options used.
    """

    instances: DecoupledInstances
    image: Tensor
    masks: Tensor
    reassign: bool = False
    seed: int = 0
    fill: str = "gray"

    @property
    def num_identities(self) -> int:
        return self.instances.num_identities


def fit_masks_to_image(masks: Tensor, height: int, width: int) -> Tensor:
    """`[N, h, w]` masks at the image size: nearest-neighbour resize when only the resolution
    differs (e.g. a segmentation run at a lower size), an error when the aspect differs."""
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise AnyCrowdError(f"masks must be a MASK batch [N, H, W] (one mask per character); got shape {tuple(masks.shape)}.")
    mh, mw = int(masks.shape[1]), int(masks.shape[2])
    if (mh, mw) == (height, width):
        return masks.float()
    if abs((mw / mh) / (width / height) - 1) > ASPECT_TOLERANCE:
        raise AnyCrowdError(
            f"The masks are {mw}x{mh} (WxH) but the reference image is {width}x{height}, a different shape: "
            "make the masks on this image (or crop/resize them to its size)."
        )
    return F.interpolate(masks[:, None].float(), size=(height, width), mode="nearest-exact")[:, 0]


class AnyCrowdInstanceDecoupler:
    DESCRIPTION = (
        "Cuts every character out of the reference image (one mask per character, in order) onto its own "
        "gray canvas and removes them all from the background. Each identity is later VAE-encoded alone "
        "(AnyCrowd IILR), so identities never mix. Character k is identity k in the binding."
    )
    CATEGORY = "AnyCrowd/conditioning"
    FUNCTION = "decouple"
    RETURN_TYPES = (INSTANCES, "IMAGE")
    RETURN_NAMES = ("instances", "preview")
    OUTPUT_TOOLTIPS = (
        "The isolated identities and background, for AnyCrowd IILR Encode.",
        "Identities 1..N and the background side by side, to check the masks.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The reference image with all characters (the first image of a batch is used)."}),
                "masks": ("MASK", {"tooltip": "One mask per character, as a MASK batch [N,H,W] in character order (e.g. from a segmentation node, or Load Image (as Mask) per character joined with Batch Images). Masks of another resolution but the same shape as the image are resized (nearest)."}),
                "reassign": ("BOOLEAN", {"default": False, "tooltip": "Training-style shuffle: move each character to a random non-overlapping place. Leave off for inference."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Seed of the random placement when reassign is on."}),
                "background_fill": (["gray", "inpaint"], {"default": "gray", "tooltip": "How to fill the holes the characters leave in the background: flat gray (as in the paper) or OpenCV inpainting."}),
            }
        }

    def decouple(self, image, masks, reassign=False, seed=0, background_fill="gray"):
        if image.ndim == 4:
            image = image[0]
        height, width = int(image.shape[0]), int(image.shape[1])
        masks = fit_masks_to_image(masks, height, width)
        instances = decouple_instances(
            image[..., :3].float().cpu(), masks.cpu(), reassign=bool(reassign), seed=int(seed), fill=background_fill
        )
        ref = DecoupledReference(instances, image[..., :3].float().cpu(), masks.cpu(), bool(reassign), int(seed), background_fill)
        return (ref, preview(instances)[None])
