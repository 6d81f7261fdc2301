"""Fitting source media to the training size: resize so the source covers the target, then
center-crop. One geometry for frames, masks, keypoints and boxes of a clip, so they stay
aligned (used by `training.sample_builder`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropResize:
    """Resize so the source covers the target, then center-crop: source (H0, W0) px ->
    target (H, W) px. A source pixel coordinate x maps to x * scale_x - left."""

    src: tuple[int, int]
    dst: tuple[int, int]

    @property
    def resized(self) -> tuple[int, int]:
        (h0, w0), (h, w) = self.src, self.dst
        s = max(h / h0, w / w0)
        return max(h, round(h0 * s)), max(w, round(w0 * s))

    @property
    def offset(self) -> tuple[int, int]:
        (rh, rw), (h, w) = self.resized, self.dst
        return (rh - h) // 2, (rw - w) // 2

    def _resize(self, a: np.ndarray) -> np.ndarray:
        rh, rw = self.resized
        if (rh, rw) == a.shape[:2]:
            return a
        shrink = rh < a.shape[0] or rw < a.shape[1]
        return cv2.resize(a, (rw, rh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def image(self, img: np.ndarray) -> np.ndarray:
        """uint8 or float `[H0, W0, C]` -> same dtype `[H, W, C]`."""
        top, left = self.offset
        h, w = self.dst
        out = self._resize(img)
        if out.ndim == 2:
            out = out[:, :, None]
        return out[top : top + h, left : left + w]

    def mask(self, m: np.ndarray) -> np.ndarray:
        """bool `[H0, W0]` -> bool `[H, W]` (area-averaged occupancy >= 0.5 when shrinking)."""
        return self.image(m.astype(np.float32))[..., 0] >= 0.5

    def points(self, xy: np.ndarray) -> np.ndarray:
        """`[..., 2]` x, y px in the source -> px in the target."""
        (h0, w0), (rh, rw) = self.src, self.resized
        top, left = self.offset
        out = np.asarray(xy, dtype=np.float64).copy()
        out[..., 0] = out[..., 0] * (rw / w0) - left
        out[..., 1] = out[..., 1] * (rh / h0) - top
        return out

    def boxes(self, b: np.ndarray) -> np.ndarray:
        """xyxy `[..., 4]` (NaN = absent) -> target px, clipped; boxes left outside become NaN."""
        h, w = self.dst
        p = self.points(np.asarray(b, dtype=np.float64).reshape(*np.shape(b)[:-1], 2, 2))
        p[..., 0] = p[..., 0].clip(0, w)
        p[..., 1] = p[..., 1].clip(0, h)
        out = p.reshape(*np.shape(b)[:-1], 4)
        empty = ~((out[..., 2] > out[..., 0]) & (out[..., 3] > out[..., 1]))
        out[empty] = np.nan
        return out.astype(np.float32)
