"""Face control after X-Dyna §3.3: face patches cut from the DRIVING video, pasted at their
positions on a neutral gray canvas, as an extra VACE control stream that carries expression
and head motion; `local` keeps only eyes and mouth so less of the driver's identity leaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .errors import AnyCrowdError
from .pose.types import FACE, FACE_POINTS, PoseTracks

__all__ = [
    "FACE_MODES",
    "NEUTRAL_GRAY",
    "FaceBoxes",
    "FaceControl",
    "face_boxes",
    "face_control_video",
]

FACE_MODES = ("global", "local")
NEUTRAL_GRAY = 0.5  # what VACE reads as "no signal" (WanVaceToVideo's empty control video)
# iBUG-68 landmark indices (within the 68 face points): eyes 36-41 / 42-47, mouth 48-67
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))
MOUTH = tuple(range(48, 68))
LOCAL_REGIONS = (LEFT_EYE, RIGHT_EYE, MOUTH)


@dataclass
class FaceBoxes:
    """Stabilised per-track face boxes of a video, pixels of the tracks' canvas.

    boxes:     float `[M, T, 4]` xyxy px, square before clipping to the frame; NaN rows where
               the track has no face in that frame.
    landmarks: float `[M, T, 68, 3]` (x px, y px, confidence) the face of each frame is drawn
               from; on a held (reused) frame, the last observed landmarks; zeros where no face.
    observed:  bool `[M, T]` enough confident landmarks in that very frame.
    held:      bool `[M, T]` no landmarks in that frame; box and landmarks reused from the last
               observed frame (short misses only, while the track is present).
    height, width: canvas size in px.
    """

    boxes: Tensor
    landmarks: Tensor
    observed: Tensor
    held: Tensor
    height: int
    width: int

    @property
    def has_face(self) -> Tensor:
        """bool `[M, T]`: a face box exists (observed or held)."""
        return ~torch.isnan(self.boxes).any(-1)


@dataclass
class FaceControl:
    """The face-control stream of a video.

    video: float `[T, H, W, 3]` 0..1 — driving-video pixels inside the face regions, neutral
           gray 0.5 everywhere else (same shape as the rendered pose video of the tracks).
    mask:  float `[T, H, W]` 0..1 — weight of the driving pixels (1 inside a face region, soft
           edges in `local` mode, 0 = neutral gray).
    boxes: the face boxes the regions come from.
    mode:  "global" or "local".
    """

    video: Tensor
    mask: Tensor
    boxes: FaceBoxes
    mode: str


def _check_tracks(tracks) -> None:
    if not isinstance(tracks, PoseTracks):
        raise AnyCrowdError(
            f"Face control needs identity tracks (PoseTracks from the AnyCrowd pose extractor), got "
            f"{type(tracks).__name__}."
        )
    if tracks.keypoints.ndim != 4 or tracks.keypoints.shape[2] < FACE.stop:
        raise AnyCrowdError(
            f"The tracks carry keypoints of shape {tuple(tracks.keypoints.shape)}, without the 68 face landmarks "
            f"([M, T, 128, 3] expected): extract poses with face landmarks enabled (DWPose whole-body)."
        )


def _centred_median(values: np.ndarray, ok: np.ndarray, radius: int) -> np.ndarray:
    """Per frame t with ok[t], the median of values[ok] inside a window symmetric around t
    (radius shrunk near the ends so it stays symmetric: linear motion passes unchanged)."""
    out = values.copy()
    t_len = len(values)
    for t in np.flatnonzero(ok):
        r = min(radius, t, t_len - 1 - t)
        window = slice(t - r, t + r + 1)
        out[t] = np.median(values[window][ok[window]], axis=0)
    return out


def face_boxes(
    tracks: PoseTracks,
    *,
    enlarge: float = 1.5,
    min_confidence: float = 0.3,
    min_points: int = 5,
    smooth_frames: int = 5,
    max_missing: int = 8,
    lift: float = 0.1,
) -> FaceBoxes:
    """Face boxes per track and frame from the 68 face landmarks (`keypoints[..., FACE, :]`).

    A frame is observed when the track is present and has >= `min_points` landmarks with
    confidence > `min_confidence`. Its raw box is a square of side `enlarge` x the larger
    side of the landmarks' extent, centred on the extent's centre moved up by `lift` x its
    height (the 68 points stop at the brows; this takes in the forehead). Centre and side are
    stabilised by a centred median over `smooth_frames` frames (observed frames only; 1 =
    off). A present track without landmarks reuses its last box for up to `max_missing`
    frames; an absent track has no face. Boxes are clipped to the frame last.
    """
    _check_tracks(tracks)
    if enlarge <= 0 or not math.isfinite(enlarge):
        raise AnyCrowdError(f"Face box enlarge factor must be > 0 (1.5 = half as large again), got {enlarge}.")
    if smooth_frames < 1 or max_missing < 0 or min_points < 1:
        raise AnyCrowdError(
            f"smooth_frames must be >= 1, max_missing >= 0 and min_points >= 1 "
            f"(got {smooth_frames}, {max_missing}, {min_points})."
        )
    face = tracks.keypoints[:, :, FACE].detach().float().cpu().numpy()  # [M, T, 68, 3]
    present = tracks.present.detach().bool().cpu().numpy()
    m, t_len = present.shape
    height, width = int(tracks.height), int(tracks.width)

    boxes = np.full((m, t_len, 4), np.nan, dtype=np.float64)
    landmarks = np.zeros((m, t_len, FACE_POINTS, 3), dtype=np.float32)
    observed = np.zeros((m, t_len), dtype=bool)
    held = np.zeros((m, t_len), dtype=bool)
    for i in range(m):
        conf = face[i, :, :, 2] > min_confidence
        ok = present[i] & (conf.sum(-1) >= min_points)
        observed[i] = ok
        geom = np.zeros((t_len, 3))  # centre x, centre y, side
        for t in np.flatnonzero(ok):
            pts = face[i, t, conf[t], :2]
            lo, hi = pts.min(0), pts.max(0)
            ext = hi - lo
            geom[t] = ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2 - lift * ext[1], enlarge * max(ext[0], ext[1], 1.0))
        geom = _centred_median(geom, ok, smooth_frames // 2)
        last = None  # (frame, geometry) of the last observed frame
        for t in range(t_len):
            if ok[t]:
                last = t
                src = t
            elif present[i, t] and last is not None and t - last <= max_missing:
                held[i, t] = True
                src = last
            else:
                continue
            cx, cy, side = geom[src]
            boxes[i, t] = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            landmarks[i, t] = face[i, src] * np.where(conf[src], 1.0, 0.0)[:, None]
    boxes[..., 0::2] = boxes[..., 0::2].clip(0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clip(0, height)
    empty = (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
    boxes[empty] = np.nan
    landmarks[empty] = 0
    return FaceBoxes(
        boxes=torch.from_numpy(boxes).float(),
        landmarks=torch.from_numpy(landmarks),
        observed=torch.from_numpy(observed),
        held=torch.from_numpy(held & ~empty),
        height=height,
        width=width,
    )


def _box_mask(box: np.ndarray, height: int, width: int):
    """Hard mask of a pixel box: (rect y0, y1, x0, x1, ones) covering pixels the box touches."""
    x0, y0 = int(math.floor(box[0])), int(math.floor(box[1]))
    x1, y1 = int(math.ceil(box[2])), int(math.ceil(box[3]))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (y0, y1, x0, x1), np.ones((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=np.float32)


def _ellipse_masks(landmarks: np.ndarray, face_side: float, height: int, width: int, min_confidence: float,
                   region_scale: float, region_margin: float, feather: float):
    """Soft elliptic masks around the eyes and the mouth: 1 inside, ramping to exactly 0 at
    the ellipse's edge over the outer `feather` fraction of its radius."""
    out = []
    for region in LOCAL_REGIONS:
        pts = landmarks[list(region)]
        pts = pts[pts[:, 2] > min_confidence, :2]
        if len(pts) < 3:  # not enough of this eye / the mouth to place it
            continue
        lo, hi = pts.min(0), pts.max(0)
        cx, cy = (lo + hi) / 2
        # at least a pixel: a closed mouth or an eye drawn as one row would divide by zero
        a = max((hi[0] - lo[0]) / 2 * region_scale + region_margin * face_side, 1.0)
        b = max((hi[1] - lo[1]) / 2 * region_scale + region_margin * face_side, 1.0)
        y0, y1 = max(int(math.floor(cy - b)), 0), min(int(math.ceil(cy + b)) + 1, height)
        x0, x1 = max(int(math.floor(cx - a)), 0), min(int(math.ceil(cx + a)) + 1, width)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d = np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2)
        m = np.clip((1.0 - d) / feather, 0.0, 1.0) if feather > 0 else (d <= 1.0).astype(np.float32)
        out.append(((y0, y1, x0, x1), m.astype(np.float32)))
    return out


def _paste(video: np.ndarray, weight: np.ndarray, source: np.ndarray, rect, mask: np.ndarray, offset) -> None:
    """Blend driving pixels read `offset` (dx, dy) px away into rect of `video` by `mask`
    (over earlier pastes); `weight` keeps the combined mask. Source pixels outside the
    frame are not pasted."""
    y0, y1, x0, x1 = rect
    dx, dy = offset
    height, width = source.shape[:2]
    # restrict to pixels whose source lies inside the frame
    sy0, sy1 = max(y0, -dy), min(y1, height - dy)
    sx0, sx1 = max(x0, -dx), min(x1, width - dx)
    if sy1 <= sy0 or sx1 <= sx0:
        return
    m = mask[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0][..., None]
    src = source[sy0 + dy : sy1 + dy, sx0 + dx : sx1 + dx]
    region = video[sy0:sy1, sx0:sx1]
    video[sy0:sy1, sx0:sx1] = region * (1 - m) + src * m
    w = weight[sy0:sy1, sx0:sx1]
    weight[sy0:sy1, sx0:sx1] = np.maximum(w, m[..., 0])


def face_control_video(
    video,
    tracks: PoseTracks,
    *,
    mode: str = "local",
    enlarge: float = 1.5,
    source_offsets=None,
    region_scale: float = 1.5,
    region_margin: float = 0.08,
    feather: float = 0.3,
    min_confidence: float = 0.3,
    **box_options,
) -> FaceControl:
    """The face-control video of `video` (the DRIVING video the tracks were extracted from).

    video: `[T, H, W, 3]` 0..1 with the tracks' T, H, W. mode: "global" pastes every face box
    whole; "local" pastes soft ellipses around each eye and the mouth only (semi-axes:
    `region_scale` x the landmarks' half extent + `region_margin` x the face size; the outer
    `feather` of the radius ramps to 0), so the face shape and most skin stay neutral.
    source_offsets: optional float `[M, 2]` (dx, dy) px per track: the track was shifted by
    this much (a binding's `offsets`), so its face is read at position - offset and pasted at
    position. Tracks are pasted in order (later ones on top). `box_options` go to `face_boxes`.
    """
    if mode not in FACE_MODES:
        raise AnyCrowdError(f"Unknown face control mode {mode!r}: choose one of {', '.join(FACE_MODES)}.")
    if not 0 <= feather <= 1:
        raise AnyCrowdError(f"feather must be between 0 and 1 (fraction of the region radius), got {feather}.")
    _check_tracks(tracks)
    frames = video if isinstance(video, Tensor) else torch.as_tensor(np.asarray(video))
    if frames.ndim != 4 or frames.shape[-1] < 3:
        raise AnyCrowdError(f"The driving video must be [T, H, W, 3] (an IMAGE batch); got {tuple(frames.shape)}.")
    t_len, height, width = (int(s) for s in frames.shape[:3])
    if (t_len, height, width) != (tracks.num_frames, int(tracks.height), int(tracks.width)):
        raise AnyCrowdError(
            f"The driving video is {width}x{height} px with {t_len} frames, but the tracks were extracted from "
            f"{tracks.width}x{tracks.height} px with {tracks.num_frames} frames: connect the same video the pose "
            "extractor read (before any resize or trim), or extract the tracks from this one."
        )
    m = tracks.num_tracks
    if source_offsets is None:
        offsets = np.zeros((m, 2), dtype=np.int64)
    else:
        offsets = np.asarray(torch.as_tensor(source_offsets).detach().cpu().float().reshape(-1, 2)).round()
        if offsets.shape[0] != m:
            raise AnyCrowdError(
                f"source_offsets has {offsets.shape[0]} rows but there are {m} tracks: give one (dx, dy) per track."
            )
        offsets = offsets.astype(np.int64)

    fb = face_boxes(tracks, enlarge=enlarge, min_confidence=min_confidence, **box_options)
    source = frames[..., :3].detach().float().cpu().numpy()
    out = np.full((t_len, height, width, 3), NEUTRAL_GRAY, dtype=np.float32)
    weight = np.zeros((t_len, height, width), dtype=np.float32)
    boxes = fb.boxes.numpy()
    lms = fb.landmarks.numpy()
    has = fb.has_face.numpy()
    for t in range(t_len):
        for i in range(m):
            if not has[i, t]:
                continue
            # the source reads at position - offset
            shift = (-int(offsets[i, 0]), -int(offsets[i, 1]))
            if mode == "global":
                pieces = [_box_mask(boxes[i, t], height, width)]
            else:
                side = max(boxes[i, t, 2] - boxes[i, t, 0], boxes[i, t, 3] - boxes[i, t, 1]) / enlarge
                pieces = _ellipse_masks(lms[i, t], side, height, width, min_confidence, region_scale,
                                        region_margin, feather)
            for rect, mask in pieces:
                _paste(out[t], weight[t], source[t], rect, mask, shift)
    return FaceControl(video=torch.from_numpy(out), mask=torch.from_numpy(weight), boxes=fb, mode=mode)
