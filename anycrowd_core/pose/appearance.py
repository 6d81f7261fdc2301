"""Appearance cue for the tracker: a colour histogram of each person's torso, from the frames.

The torso is the box spanned by the shoulders and hips (body points 2, 5, 8, 11), shrunk a
little so arms and background at its sides stay out. Its pixels give a normalised HSV
histogram (OpenCV `calcHist`, hue x saturation x value bins); two histograms are compared by
the Bhattacharyya distance (0 = same colours, 1 = nothing in common). See docs/pose_tracking.md.
"""

from __future__ import annotations

import cv2
import numpy as np
from torch import Tensor

from ..errors import AnyCrowdError

HIST_BINS = (8, 4, 4)  # hue, saturation, value
HIST_SIZE = int(np.prod(HIST_BINS))
_RANGES = [0, 180, 0, 256, 0, 256]
_TORSO = (2, 5, 8, 11)  # right shoulder, left shoulder, right hip, left hip (COCO-18)
_MIN_PIXELS = 24  # fewer torso pixels than this: no descriptor


def frame_as_uint8(frame) -> np.ndarray:
    """One video frame as uint8 `[H, W, 3]` RGB (from 0..1 floats, a torch tensor, or uint8)."""
    if isinstance(frame, Tensor):
        frame = frame.detach().cpu().numpy()
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise AnyCrowdError(f"A video frame must be [H, W, 3], got {tuple(arr.shape)}.")
    if arr.dtype == np.uint8:
        return arr[..., :3]
    return np.clip(arr[..., :3] * 255.0 + 0.5, 0, 255).astype(np.uint8)


def torso_regions(body: np.ndarray, conf_min: float = 0.3) -> np.ndarray:
    """Integer xyxy torso boxes `[D, 4]` from body points `[D, 18, 3]` px (-1 rows where fewer
    than three torso points are confident). Hips missing: the torso reaches down one and a half
    shoulder widths; shrunk by 15 % of its width on each side."""
    d = len(body)
    out = np.full((d, 4), -1, dtype=np.int64)
    if d == 0:
        return out
    pts = body[:, _TORSO, :2]
    ok = body[:, _TORSO, 2] >= conf_min
    enough = ok.sum(1) >= 3
    big = np.inf
    x0, x1 = np.where(ok, pts[..., 0], big).min(1), np.where(ok, pts[..., 0], -big).max(1)
    y0, y1 = np.where(ok, pts[..., 1], big).min(1), np.where(ok, pts[..., 1], -big).max(1)
    no_hips = ~(ok[:, 2] | ok[:, 3])
    with np.errstate(invalid="ignore"):
        y1 = np.where(no_hips, y0 + 1.5 * (x1 - x0), y1)
        shrink = 0.15 * (x1 - x0)
        box = np.stack([x0 + shrink, y0, x1 - shrink, y1], 1)
    good = enough & np.isfinite(box).all(1) & (box[:, 2] - box[:, 0] >= 2) & (box[:, 3] - box[:, 1] >= 2)
    out[good] = np.round(box[good]).astype(np.int64)
    return out


def torso_clearance(regions: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Float `[D]` in 0..1: the share of each torso region `[D, 4]` that no other person's box
    `[D, 4]` covers (the largest single overlap counts); 0 for rows without a region. A torso
    crop under someone else's box may show that person's colours."""
    d = len(regions)
    if d == 0:
        return np.zeros(0)
    r = regions.astype(np.float64)
    w = np.minimum(r[:, None, 2], boxes[None, :, 2]) - np.maximum(r[:, None, 0], boxes[None, :, 0])
    h = np.minimum(r[:, None, 3], boxes[None, :, 3]) - np.maximum(r[:, None, 1], boxes[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    np.fill_diagonal(inter, 0.0)
    area = np.maximum((r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1]), 1.0)
    clear = 1.0 - inter.max(1, initial=0.0) / area
    return np.where(regions[:, 0] >= 0, np.clip(clear, 0.0, 1.0), 0.0)


def torso_histograms(frame: np.ndarray, body: np.ndarray, regions: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """HSV histograms `[D, HIST_SIZE]` (sum 1) of each person's torso in a uint8 RGB `frame`,
    and bool `[D]` whether one could be taken (enough torso points and pixels in the frame)."""
    height, width = frame.shape[:2]
    regions = torso_regions(body) if regions is None else regions
    hists = np.zeros((len(body), HIST_SIZE), dtype=np.float32)
    valid = np.zeros(len(body), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(regions.tolist()):
        if x0 < 0 and x1 < 0:
            continue
        x0, x1 = max(x0, 0), min(x1, width)
        y0, y1 = max(y0, 0), min(y1, height)
        if (x1 - x0) * (y1 - y0) < _MIN_PIXELS:
            continue
        hsv = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2HSV)
        h = cv2.calcHist([hsv], [0, 1, 2], None, list(HIST_BINS), _RANGES).reshape(-1)
        total = float(h.sum())
        if total > 0:
            hists[i] = h / total
            valid[i] = True
    return hists, valid


def histogram_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bhattacharyya distance `[A, B]` between normalised histograms `[A, K]` and `[B, K]`:
    sqrt(1 - sum sqrt(p q)), 0 for identical colour distributions, 1 for disjoint ones."""
    bc = np.sqrt(np.maximum(a, 0.0)) @ np.sqrt(np.maximum(b, 0.0)).T
    return np.sqrt(np.clip(1.0 - bc, 0.0, 1.0))
