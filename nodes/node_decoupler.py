"""AnyCrowd Instance Decoupler node: reference IMAGE + one MASK per character -> isolated
identities and background (ANYCROWD_INSTANCES) and a preview strip (anycrowd_core.decoupler),
optionally aligned onto the driving tracks (One-to-All "pose" mode, anycrowd_core.pose.align).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from anycrowd_core.boxes import boxes_from_masks
from anycrowd_core.decoupler import DecoupledInstances, decouple_instances, preview
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.align import align_identities
from anycrowd_core.pose.binding import bind_tracks
from anycrowd_core.pose.keypoint_format import pose_keypoint_to_sequence
from anycrowd_core.pose.types import BODY_POINTS, NUM_KEYPOINTS, PoseTracks

from .comfy_runtime import resize_frames
from .input_checks import (
    SEED_MAX,
    aspects_differ,
    check_same_aspect,
    image_batch,
    mask_batch,
    pose_canvas,
    seed_value,
    user_text,
    whole_number,
)
from .node_types import INSTANCES, TRACKS
from .reference_instances import DecoupledReference


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
    if aspects_differ((mh, mw), (height, width)):
        raise AnyCrowdError(
            f"The masks are {mw}x{mh} (WxH) but the reference image is {width}x{height}, a different shape: "
            "make the masks on this image (or crop/resize them to its size)."
        )
    return F.interpolate(masks[:, None].float(), size=(height, width), mode="nearest-exact")[:, 0]


def reference_keypoints_for_masks(pose_keypoint, masks: Tensor) -> Tensor:
    """`[N, 128, 3]` px keypoints of each masked character from POSE_KEYPOINT of the reference
    image (first frame): people are matched to masks by how many of their body points fall
    inside each mask (Hungarian); a mask nobody matches gets zeros (alignment then uses boxes)."""
    n, height, width = int(masks.shape[0]), int(masks.shape[1]), int(masks.shape[2])
    canvas = pose_canvas(pose_keypoint)
    if canvas is not None:
        check_same_aspect(canvas, (height, width), "The reference_pose canvas", "the reference image",
                          "give the poses of this reference image (run the pose extractor on it).")
    people = user_text(lambda: pose_keypoint_to_sequence(pose_keypoint, height=height, width=width),
                       "reference_pose (POSE_KEYPOINT)", pose_keypoint).frames[0].keypoints.double().numpy()
    out = np.zeros((n, NUM_KEYPOINTS, 3))
    if people.shape[0] == 0:
        return torch.from_numpy(out).float()
    m = masks.numpy() > 0.5
    body = people[:, :BODY_POINTS]
    ok = body[..., 2] > 0
    xs = np.clip(np.rint(body[..., 0]).astype(np.int64), 0, width - 1)
    ys = np.clip(np.rint(body[..., 1]).astype(np.int64), 0, height - 1)
    inside = np.stack([(m[k][ys, xs] & ok).sum(-1) for k in range(n)])  # [N, P]
    rows, cols = linear_sum_assignment(-inside)
    for k, p in zip(rows, cols):
        if inside[k, p] > 0:
            out[k] = people[p]
    return torch.from_numpy(out).float()


def align_to_tracks(instances: DecoupledInstances, masks: Tensor, tracks, reference_pose, anchor_frame: int,
                    binding: str) -> tuple[DecoupledInstances, Any]:
    """Identities scaled and placed onto their bound tracks at the anchor frame (One-to-All
    "pose" mode), on the driving canvas; the background resized to it like the control video."""
    if not isinstance(tracks, PoseTracks):
        raise AnyCrowdError("align_to must come from AnyCrowd Pose Extractor or AnyCrowd Pose From Keypoints.")
    n = instances.num_identities
    ref_kp = (reference_keypoints_for_masks(reference_pose, masks) if reference_pose is not None
              else torch.zeros(n, NUM_KEYPOINTS, 3))
    bound = bind_tracks(binding, tracks, n, masks)
    aligned = align_identities(instances.identity_images, instances.masks, ref_kp, bound,
                               anchor_frame=None if int(anchor_frame) < 0 else int(anchor_frame))
    height, width = int(tracks.height), int(tracks.width)
    background = resize_frames(instances.background[None], width, height)[0].clamp(0, 1)
    result = DecoupledInstances(
        identity_images=aligned.images, background=background, masks=aligned.masks,
        boxes=boxes_from_masks(aligned.masks[:, None])[:, 0], offsets=aligned.matrices[:, :, 2].clone(),
        scales=aligned.scales,
    )
    return result, aligned


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
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip": "Seed of the random placement when reassign is on."}),
                "background_fill": (["gray", "inpaint"], {"default": "gray", "tooltip": "How to fill the holes the characters leave in the background: flat gray (as in the paper) or OpenCV inpainting."}),
            },
            "optional": {
                "align_to": (TRACKS, {"tooltip": "Optional (One-to-All 'pose' mode): driving tracks to align each character to. Each character is scaled (shoulder/hip/ear ratios, else box heights) and moved onto its bound track at the anchor frame, on the driving video's canvas. Use when the reference framing differs from the video."}),
                "reference_pose": ("POSE_KEYPOINT", {"tooltip": "Poses of the reference image (e.g. Pose Extractor run on it) for alignment by body proportions; without it alignment matches box heights and centres."}),
                "anchor_frame": ("INT", {"default": -1, "min": -1, "max": 100000, "tooltip": "Driving frame to align to; -1 = per character, the frame whose pose best matches the reference's orientation. Only used with align_to."}),
                "align_binding": ("STRING", {"default": "", "tooltip": "Which track each character is aligned to, same syntax as IILR Encode's binding (write the same binding there): empty = left to right, '0,1' or 'A=1, B=0'. Only used with align_to."}),
            },
        }

    def decouple(self, image, masks, reassign=False, seed=0, background_fill="gray", align_to=None,
                 reference_pose=None, anchor_frame=-1, align_binding=""):
        image = image_batch(image, "image (the reference image)")[0]
        height, width = int(image.shape[0]), int(image.shape[1])
        masks = fit_masks_to_image(
            mask_batch(masks, "masks", fix="Give one mask per character as a MASK batch [N, H, W]."), height, width)
        seed = seed_value(seed)
        anchor_frame = whole_number(anchor_frame, "anchor_frame", fix="Use -1 (automatic) or a frame of the driving tracks.")
        if align_to is not None and isinstance(align_to, PoseTracks) and anchor_frame >= align_to.num_frames:
            raise AnyCrowdError(
                f"anchor_frame {anchor_frame} is past the driving tracks' last frame ({align_to.num_frames - 1}): "
                "use -1 (automatic) or a frame that exists."
            )
        if align_to is None and reference_pose is not None:
            raise AnyCrowdError("reference_pose is only used to align to driving tracks: connect align_to too, or disconnect it.")
        if align_to is not None and reassign:
            raise AnyCrowdError("reassign (random placement) and align_to (placement on the driving tracks) exclude each other: turn reassign off.")
        instances = decouple_instances(
            image, masks.cpu(), reassign=bool(reassign), seed=seed, fill=background_fill
        )
        aligned = None
        if align_to is not None:
            instances, aligned = align_to_tracks(instances, masks.cpu(), align_to, reference_pose, anchor_frame, align_binding)
        ref = DecoupledReference(instances, image, masks.cpu(), bool(reassign), seed,
                                 background_fill, aligned)
        return (ref, preview(instances)[None])
