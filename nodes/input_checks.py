"""Boundary checks of node inputs: every bad value a user (or an upstream node, or an API
prompt) can hand a node function becomes an `AnyCrowdError` naming the input and the fix,
never a raw traceback deep inside the core and never a silently meaningless result.

ComfyUI checks widget values against their min/max only for constants typed in the UI;
values linked from other nodes, Python callers and upstream NaN tensors reach the node
function unchecked, so the node functions call these before any work.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from anycrowd_core.errors import AnyCrowdError, require_finite
from anycrowd_core.layout import invisible_bound_tracks
from anycrowd_core.pose.binding import identity_name

T = TypeVar("T")

SEED_MAX = 0xFFFFFFFFFFFFFFFF  # ComfyUI's seed widgets (and torch.manual_seed) take 0 .. 2**64 - 1
# IMAGE pixels are 0..1; small overshoots (resampling, colour nodes) are tolerated, values far
# outside mean another convention (0..255, -1..1) and would give a meaningless video.
PIXEL_SLACK = 0.5
# Frames (masks, poses, videos) whose aspect ratios differ by more than this are refused rather
# than stretched or centre-cropped onto each other: they were probably made from another picture.
ASPECT_TOLERANCE = 0.02
MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION: the widgets' largest width/height/length


def _is_number(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.numel() == 1 and not value.dtype == torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def finite_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                  fix: str = "") -> float:
    """`value` as a float, refusing non-numbers, NaN, infinity and values outside [low, high]."""
    if not _is_number(value):
        raise AnyCrowdError(f"{name} must be a number, got {type(value).__name__} {value!r}.{(' ' + fix) if fix else ''}")
    number = float(value)
    require_finite(number, name, fix or _range_text(low, high))
    if (low is not None and number < low) or (high is not None and number > high):
        raise AnyCrowdError(f"{name} is {number:g} but must be {_range_text(low, high)}.{(' ' + fix) if fix else ''}")
    return number


def whole_number(value: Any, name: str, *, low: int | None = None, high: int | None = None, fix: str = "") -> int:
    """`value` as an int (INT widgets; a float is accepted only when it is whole), in [low, high]."""
    if not _is_number(value):
        raise AnyCrowdError(f"{name} must be a whole number, got {type(value).__name__} {value!r}.{(' ' + fix) if fix else ''}")
    number = int(value) if isinstance(value, numbers.Integral) else float(value)
    if isinstance(number, float):
        if not math.isfinite(number) or number != int(number):
            raise AnyCrowdError(f"{name} must be a whole number, got {value!r}.{(' ' + fix) if fix else ''}")
        number = int(number)
    if (low is not None and number < low) or (high is not None and number > high):
        raise AnyCrowdError(f"{name} is {number} but must be {_range_text(low, high)}.{(' ' + fix) if fix else ''}")
    return number


def seed_value(value: Any, name: str = "seed") -> int:
    """A seed in ComfyUI's range 0 .. 2**64 - 1 (what its seed widgets and the noise generator take)."""
    return whole_number(value, name, low=0, high=SEED_MAX, fix="Use e.g. 0 (ComfyUI's seed widgets stay in this range).")


def _range_text(low, high) -> str:
    def fmt(v) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    if low is not None and high is not None:
        return f"between {fmt(low)} and {fmt(high)}"
    if low is not None:
        return f">= {fmt(low)}"
    if high is not None:
        return f"<= {fmt(high)}"
    return "a finite number"


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def image_batch(images: Any, name: str, fix: str = "") -> Tensor:
    """An IMAGE `[B, H, W, C]` (a single `[H, W, C]` image is made a batch of one) as float
    `[B, H, W, 3]` on the CPU: at least one frame of at least 1x1 px, 3 or more channels (an
    alpha channel is dropped), finite pixels in 0..1 (up to PIXEL_SLACK outside)."""
    if not isinstance(images, Tensor) or images.ndim not in (3, 4):
        raise AnyCrowdError(f"{name} must be an IMAGE batch [frames, H, W, 3]; got {_shape(images)}.{(' ' + fix) if fix else ''}")
    batch = images if images.ndim == 4 else images[None]
    if batch.shape[-1] < 3:
        raise AnyCrowdError(
            f"{name} has {int(batch.shape[-1])} colour channel(s); an IMAGE has 3 (RGB): shape {tuple(images.shape)}. "
            "Convert it with a node that outputs an RGB IMAGE (e.g. Convert Mask to Image for a mask)."
        )
    if batch.numel() == 0:
        raise AnyCrowdError(
            f"{name} is empty (shape {tuple(images.shape)}: {int(batch.shape[0])} frame(s) of "
            f"{int(batch.shape[2])}x{int(batch.shape[1])} px).{(' ' + fix) if fix else ' Connect an image with pixels.'}"
        )
    batch = batch[..., :3].float().cpu()
    require_finite(batch, f"{name} (pixels)", "Fix the node that produced it (a NaN/inf upstream), or load the image again.")
    _check_unit_range(batch, f"{name} has pixel values", "IMAGE",
                      "0..255 or -1..1 images need converting first, e.g. divide by 255")
    return batch


def mask_batch(masks: Any, name: str, *, weights: bool = False, fix: str = "") -> Tensor:
    """A MASK `[N, H, W]` (a single `[H, W]` mask is made a batch of one) as float on the CPU,
    non-empty and finite. `weights`: the values are used as 0..1 weights, not thresholded
    at 0.5, so they must lie in 0..1 (up to PIXEL_SLACK outside)."""
    if not isinstance(masks, Tensor) or masks.ndim not in (2, 3):
        raise AnyCrowdError(f"{name} must be a MASK batch [N, H, W]; got {_shape(masks)}.{(' ' + fix) if fix else ''}")
    batch = masks if masks.ndim == 3 else masks[None]
    if batch.numel() == 0:
        raise AnyCrowdError(
            f"{name} is empty (shape {tuple(masks.shape)}).{(' ' + fix) if fix else ' Connect masks with pixels.'}"
        )
    batch = batch.float().cpu()
    require_finite(batch, name, "Fix the node that produced the masks (a NaN/inf upstream), or load them again.")
    if weights:
        _check_unit_range(batch, f"{name} has values", "MASK", "0..255 masks need dividing by 255 first")
    return batch


def _check_unit_range(batch: Tensor, what: str, kind: str, fix: str) -> None:
    """Refuse values outside 0..1 by more than PIXEL_SLACK: another convention (0..255, -1..1)."""
    lo, hi = float(batch.min()), float(batch.max())
    if lo < -PIXEL_SLACK or hi > 1 + PIXEL_SLACK:
        raise AnyCrowdError(f"{what} from {lo:g} to {hi:g}, but a ComfyUI {kind} holds 0..1 ({fix}).")


def aspects_differ(size: tuple[int, int], other: tuple[int, int]) -> bool:
    """True if two (H, W) frames have aspect ratios further apart than ASPECT_TOLERANCE."""
    (h, w), (oh, ow) = size, other
    return abs((w / h) / (ow / oh) - 1) > ASPECT_TOLERANCE


def check_same_aspect(size: tuple[int, int], other: tuple[int, int], name: str, other_name: str, fix: str) -> None:
    """Refuse two (H, W) frames of different shape (a centre crop would misalign them)."""
    (h, w), (oh, ow) = size, other
    if min(h, w, oh, ow) <= 0 or aspects_differ(size, other):
        raise AnyCrowdError(f"{name} is {w}x{h} px but {other_name} is {ow}x{oh} px, another shape: {fix}")


def conditioning(value: Any, name: str) -> list:
    """A CONDITIONING: a non-empty list of [tensor, options dict] pairs."""
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(entry, (list, tuple)) and len(entry) >= 2 and isinstance(entry[0], Tensor)
        and isinstance(entry[1], dict) for entry in value)
    if not ok:
        raise AnyCrowdError(
            f"{name} must be a CONDITIONING (a list of [tensor, options] pairs, e.g. from CLIP Text Encode); "
            f"got {type(value).__name__}{'' if not isinstance(value, (list, tuple)) else f' of {len(value)} entries'}."
        )
    return value


def latent_samples(latent: Any, name: str = "latent") -> Tensor:
    """The `samples` of a LATENT dict, a finite 5-D tensor (and a finite noise_mask if any)."""
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), Tensor):
        raise AnyCrowdError(f"{name} must be a LATENT (connect the latent output of AnyCrowd IILR Encode).")
    samples = latent["samples"]
    require_finite(samples, f"{name} (samples)", "Connect the latent of AnyCrowd IILR Encode, or fix the node that made it.")
    mask = latent.get("noise_mask")
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise AnyCrowdError(f"{name} has a noise_mask that is not a tensor ({type(mask).__name__}).")
        require_finite(mask, f"{name} (noise_mask)", "Fix the node that set the latent's noise mask.")
    return samples


def user_text(parse: Callable[[], T], name: str, text: Any) -> T:
    """Run a parser of a text widget (or a POSE_KEYPOINT input): its AnyCrowdError gets the
    input's name in front when the message lacks it, and anything else it raises (a parser bug
    on odd input) becomes an AnyCrowdError that names the input and quotes the text."""
    try:
        return parse()
    except AnyCrowdError as exc:
        if name.split(" ")[0] in str(exc):
            raise
        raise AnyCrowdError(f"{name}: {exc}") from None
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError, ZeroDivisionError) as exc:
        shown = f" from {text[:200]!r}" if isinstance(text, str) else ""
        raise AnyCrowdError(
            f"{name} could not be read ({type(exc).__name__}: {exc}){shown}: check its numbers "
            "(no nan/inf, frame numbers are whole numbers, sizes and canvas sizes are positive)."
        ) from exc


def pose_canvas(pose_keypoint: Any) -> tuple[int, int] | None:
    """(H, W) canvas of the first POSE_KEYPOINT frame that states a usable one, else None."""
    data = pose_keypoint
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        return None
    for frame in data:
        if not isinstance(frame, dict):
            continue
        try:
            h, w = float(frame.get("canvas_height") or 0), float(frame.get("canvas_width") or 0)
        except (TypeError, ValueError):
            continue
        if math.isfinite(h) and math.isfinite(w) and h >= 1 and w >= 1:
            return int(h), int(w)
    return None


def check_identities_visible(track_boxes: Tensor, binding: Sequence[int], num_identities: int,
                             frame_size: tuple[int, int], where: str, node: str) -> None:
    """Every bound track must have a box inside the frame (positive area, so it covers a video
    token) in at least one frame, else its character would be bound to nothing there:
    AnyCrowdError naming the track (boxes line / track) and its character. Characters bound to
    no track at all only get a warning (a reference character may be left out on purpose).

    The rule is the core's (`anycrowd_core.layout.invisible_bound_tracks`), worded for the node:
    track_boxes `[M, T, 4]` xyxy px in the output frame `frame_size` (H, W) after the centre crop,
    NaN = absent; binding: character index per track; where: what a track is called in this node
    ("boxes line", "track", "track_masks character").
    """
    height, width = frame_size
    frames = int(track_boxes.shape[1]) if track_boxes.ndim == 3 else 0
    listed = "; ".join(f"{where} {i} (character {identity_name(k)}, index {k})"
                       for i, k in invisible_bound_tracks(track_boxes, binding, height, width))
    if listed:
        raise AnyCrowdError(
            f"{listed}: no box inside the {width}x{height} output frame in any of the {frames} frames (outside "
            "the frame, cut off by the centre crop, empty or 'none' throughout), so that character would not "
            "follow it. Fix its boxes (pixels of the control video as connected) or leave it out of the binding."
        )
    for k in range(num_identities):
        if not any(int(c) == k for c in binding):
            logging.warning("AnyCrowd %s: character %s (index %d) is bound to no track, so it will not appear in "
                            "the video.", node, identity_name(k), k)

