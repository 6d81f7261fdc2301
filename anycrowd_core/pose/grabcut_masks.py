"""Reference instance masks without a segmentation pack: OpenCV GrabCut seeded by each person's
box (probable foreground), own skeleton (sure foreground) and the other people's skeletons
(sure background). Good enough for the decoupler when no SAM-style node is installed.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from ..errors import AnyCrowdError
from .keypoint_format import keypoint_boxes
from .render import HAND_EDGES, OPENPOSE_LIMBS
from .types import BODY_POINTS, FACE_POINTS, HAND_POINTS

# Torso quad (neck, r_shoulder, r_hip, l_hip, l_shoulder): solid on every person.
_TORSO = (1, 2, 8, 11, 5)
_HANDS = (BODY_POINTS + FACE_POINTS, BODY_POINTS + FACE_POINTS + HAND_POINTS)


def _skeleton(shape: tuple[int, int], kp: np.ndarray, width: int, offset=(0, 0)) -> np.ndarray:
    """uint8 `[h, w]` drawing (1 = on) of one person's limbs, torso and hands, `width` px thick."""
    canvas = np.zeros(shape, np.uint8)
    valid = kp[:, 2] > 0
    pts = np.rint(kp[:, :2] - np.asarray(offset, np.float64)).astype(np.int64)
    pts = np.clip(pts, -(1 << 20), 1 << 20).tolist()
    torso = [pts[i] for i in _TORSO if valid[i]]
    if len(torso) >= 3:
        cv2.fillPoly(canvas, [np.array(torso, np.int32)], 1)
    for a, b in OPENPOSE_LIMBS:
        if valid[a] and valid[b]:
            cv2.line(canvas, tuple(pts[a]), tuple(pts[b]), 1, width)
    for j in range(min(BODY_POINTS, kp.shape[0])):
        if valid[j]:
            cv2.circle(canvas, tuple(pts[j]), max(1, width // 2), 1, -1)
    if kp.shape[0] > BODY_POINTS:
        for start in _HANDS:
            for a, b in HAND_EDGES:
                if valid[start + a] and valid[start + b]:
                    cv2.line(canvas, tuple(pts[start + a]), tuple(pts[start + b]), 1, max(1, width // 2))
    return canvas


def grabcut_instance_masks(
    image,
    keypoints,
    boxes=None,
    *,
    iterations: int = 5,
    margin: float = 0.15,
    limb_width: float = 0.02,
    background_width: float = 0.02,
) -> Tensor:
    """Instance masks bool `[N, H, W]` for the N people of one image.

    image `[H, W, 3]` float 0..1 (or `[1, H, W, 3]`); keypoints `[N, 18 or 128, 3]` px;
    boxes `[N, 4]` xyxy px (default: the keypoints' extent padded by 10%). For person k,
    GrabCut runs on its box grown by `margin` (x box size) with: outside the box = sure
    background; inside = probable foreground; the other people's skeletons
    (`background_width` x box height thick) = sure background; its own skeleton and torso
    (`limb_width` x box height thick) = sure foreground. Connected parts not touching the own
    skeleton are dropped, and pixels claimed by several people go to the nearest skeleton.
    """
    img = image.detach().cpu().float().numpy() if isinstance(image, Tensor) else np.asarray(image, np.float32)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 3 or img.shape[-1] < 3:
        raise AnyCrowdError(f"The reference image must be [H, W, 3], got {tuple(img.shape)}.")
    height, width = img.shape[:2]
    img8 = np.ascontiguousarray(np.clip(np.rint(img[..., :3] * 255), 0, 255).astype(np.uint8))
    if isinstance(keypoints, Tensor):
        kp = keypoints.detach().cpu().double().numpy()
    else:
        kp = np.asarray(keypoints, np.float64)
    if kp.ndim != 3 or kp.shape[-1] != 3 or kp.shape[1] < BODY_POINTS:
        raise AnyCrowdError(f"keypoints must be [N, 18 or 128, 3] px, got {tuple(kp.shape)}.")
    n = kp.shape[0]
    if boxes is None:
        bx = keypoint_boxes(kp, height, width, 0.1)
    else:
        bx = boxes.detach().cpu().double().numpy() if isinstance(boxes, Tensor) else np.asarray(boxes, np.float64)
        if bx.shape != (n, 4):
            raise AnyCrowdError(f"boxes must be [N, 4] = [{n}, 4] xyxy px (one per person), got {tuple(bx.shape)}.")
    if not np.isfinite(bx).all():
        bad = [k for k in range(n) if not np.isfinite(bx[k]).all()]
        raise AnyCrowdError(f"People {bad} have no box and no confident keypoint; remove them or give their boxes.")

    masks = np.zeros((n, height, width), bool)
    skeletons = np.zeros((n, height, width), np.uint8)
    for k in range(n):
        x0, y0, x1, y1 = bx[k]
        bh = max(y1 - y0, 1.0)
        fg_w = max(1, int(round(limb_width * bh)))
        bg_w = max(1, int(round(background_width * bh)))
        skeletons[k] = _skeleton((height, width), kp[k], fg_w)
        mx, my = margin * (x1 - x0), margin * (y1 - y0)
        cx0, cy0 = int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my)))
        cx1, cy1 = int(min(width, np.ceil(x1 + mx))), int(min(height, np.ceil(y1 + my)))
        crop_shape = (cy1 - cy0, cx1 - cx0)
        gc = np.full(crop_shape, cv2.GC_BGD, np.uint8)
        bx0, by0 = int(round(x0)) - cx0, int(round(y0)) - cy0
        bx1, by1 = int(round(x1)) - cx0, int(round(y1)) - cy0
        gc[max(by0, 0):max(by1, 0), max(bx0, 0):max(bx1, 0)] = cv2.GC_PR_FGD
        for o in range(n):
            if o != k:
                gc[_skeleton(crop_shape, kp[o], bg_w, (cx0, cy0)) > 0] = cv2.GC_BGD
        own = _skeleton(crop_shape, kp[k], fg_w, (cx0, cy0)) > 0
        gc[own] = cv2.GC_FGD
        if not own.any():
            continue
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        has_bg = (gc == cv2.GC_BGD).any()
        if has_bg and (gc == cv2.GC_PR_FGD).any():
            cv2.grabCut(img8[cy0:cy1, cx0:cx1].copy(), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
        # Keep only the parts connected to the person's own skeleton.
        count, labels = cv2.connectedComponents(fg, connectivity=8)
        keep = np.unique(labels[own & (fg > 0)])
        keep = keep[keep > 0]
        masks[k, cy0:cy1, cx0:cx1] = np.isin(labels, keep)

    claimed = masks.sum(0) > 1
    if claimed.any() and n > 1:
        dist = np.stack([cv2.distanceTransform((1 - s).astype(np.uint8), cv2.DIST_L2, 3) for s in skeletons])
        dist = np.where(masks, dist, np.inf)
        owner = dist.argmin(0)
        for k in range(n):
            masks[k] &= ~claimed | (owner == k)
    return torch.from_numpy(masks)
