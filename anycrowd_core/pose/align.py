"""Reference alignment, One-to-All "pose" mode (§3.1): scale and place each isolated identity so
its skeleton matches its bound track at an anchor frame, and report the padding mask (pixels
with no source). Pure functions; formulas in docs/pose_rendering_binding.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from ..errors import AnyCrowdError
from .types import PoseTracks

# COCO-18 indices used by the ratios.
NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP, NOSE, R_EAR, L_EAR = 1, 2, 5, 8, 11, 0, 16, 17
_EPS = 1.0  # px: a reference length below this is degenerate (side view, collapsed points)


@dataclass
class AlignedIdentities:
    """N identities moved onto their tracks, on an H x W canvas (the driving video's size).

    images:   `[N, H, W, 3]` float 0..1 — identity k scaled and placed, neutral gray elsewhere.
    masks:    bool `[N, H, W]` — where identity k is after alignment.
    padding:  bool `[N, H, W]` — pixels the warped reference canvas does not cover (no source
              pixels: what a model must outpaint).
    scales:   float `[N]` — size factor s_k (driving / reference).
    matrices: float `[N, 2, 3]` — affine map reference px -> output px, [[s, 0, tx], [0, s, ty]].
    keypoints: float `[N, K, 3]` — the reference keypoints after alignment (px).
    anchor_frames: driving frame used for each identity.
    track_indices: the track (index into the tracks / binding output tracks) each identity follows.
    rules: which measurement gave each scale: "shoulder+torso", "shoulder", "ear" or "box".
    """

    images: Tensor
    masks: Tensor
    padding: Tensor
    scales: Tensor
    matrices: Tensor
    keypoints: Tensor
    anchor_frames: list[int]
    track_indices: list[int]
    rules: list[str]


def _ok(kp: np.ndarray, idx, conf: float) -> bool:
    return all(kp[i, 2] >= conf and kp[i, 2] > 0 for i in idx)


def alignment_scale(
    ref_kp: np.ndarray,
    drv_kp: np.ndarray,
    conf_threshold: float = 0.3,
    ref_box=None,
    drv_box=None,
) -> tuple[float, str]:
    """Scale s (driving size / reference size) from COCO-18 points `[>=18, 3]`, One-to-All's order:

    1. shoulders and hips confident in both: s = (|x_ls - x_rs|_d / |x_ls - x_rs|_r
       + torso_d / torso_r) / 2, torso = |mean y(hips) - mean y(shoulders)|;
    2. shoulders only: ratio of shoulder distances; 3. ears: ratio of ear distances;
    4. fallback (ours): ratio of box heights. Degenerate reference lengths (< 1 px) skip a rule.
    """
    r, d = np.asarray(ref_kp, np.float64), np.asarray(drv_kp, np.float64)
    sh = _ok(r, (R_SHOULDER, L_SHOULDER), conf_threshold) and _ok(d, (R_SHOULDER, L_SHOULDER), conf_threshold)
    hip = _ok(r, (R_HIP, L_HIP), conf_threshold) and _ok(d, (R_HIP, L_HIP), conf_threshold)
    ear = _ok(r, (R_EAR, L_EAR), conf_threshold) and _ok(d, (R_EAR, L_EAR), conf_threshold)
    if sh and hip:
        wr, wd = abs(r[L_SHOULDER, 0] - r[R_SHOULDER, 0]), abs(d[L_SHOULDER, 0] - d[R_SHOULDER, 0])
        tr = abs(r[[R_HIP, L_HIP], 1].mean() - r[[R_SHOULDER, L_SHOULDER], 1].mean())
        td = abs(d[[R_HIP, L_HIP], 1].mean() - d[[R_SHOULDER, L_SHOULDER], 1].mean())
        if wr >= _EPS and tr >= _EPS:
            return 0.5 * (wd / wr + td / tr), "shoulder+torso"
    if sh:
        lr = float(np.linalg.norm(r[L_SHOULDER, :2] - r[R_SHOULDER, :2]))
        if lr >= _EPS:
            return float(np.linalg.norm(d[L_SHOULDER, :2] - d[R_SHOULDER, :2])) / lr, "shoulder"
    if ear:
        lr = float(np.linalg.norm(r[L_EAR, :2] - r[R_EAR, :2]))
        if lr >= _EPS:
            return float(np.linalg.norm(d[L_EAR, :2] - d[R_EAR, :2])) / lr, "ear"
    if ref_box is not None and drv_box is not None:
        hr, hd = float(ref_box[3] - ref_box[1]), float(drv_box[3] - drv_box[1])
        if hr >= _EPS and np.isfinite(hd) and hd > 0:
            return hd / hr, "box"
    raise AnyCrowdError(
        "Cannot measure the character's size for alignment: neither shoulders, hips nor ears are confident in "
        "both the reference and the driving pose, and no boxes were given. Pick another anchor frame, lower "
        "conf_threshold, or turn alignment off."
    )


def _anchor(kp: np.ndarray, conf: float) -> dict[str, np.ndarray]:
    """Candidate anchor points by kind: neck, mid-shoulders, mid-hips, nose."""
    out = {}
    if _ok(kp, (NECK,), conf):
        out["neck"] = kp[NECK, :2]
    if _ok(kp, (R_SHOULDER, L_SHOULDER), conf):
        out["shoulders"] = kp[[R_SHOULDER, L_SHOULDER], :2].mean(0)
    if _ok(kp, (R_HIP, L_HIP), conf):
        out["hips"] = kp[[R_HIP, L_HIP], :2].mean(0)
    if _ok(kp, (NOSE,), conf):
        out["nose"] = kp[NOSE, :2]
    return out


def _angle(v: np.ndarray, axis: str) -> float:
    dx, dy = abs(float(v[0])), abs(float(v[1]))
    return math.atan2(dy, dx + 1e-9) if axis == "h" else math.atan2(dx, dy + 1e-9)


def pick_anchor_frame(ref_kp, track_kp, present, conf_threshold: float = 0.3) -> int:
    """Driving frame whose pose best matches the reference's orientation (after One-to-All's
    anchor choice): most ratio groups usable (shoulders, hips, ears confident in both), then
    the smallest |shoulder-line tilt difference| + |head (neck->nose) tilt difference|; ties:
    earliest frame. `track_kp` `[T, K, 3]`, `present` bool `[T]`."""
    r = np.asarray(ref_kp, np.float64)
    kp = np.asarray(track_kp, np.float64)
    pres = np.asarray(present, bool)
    frames = np.flatnonzero(pres & (kp[..., 2] > 0).any(-1))
    if frames.size == 0:
        raise AnyCrowdError("The bound track is never visible, so there is no frame to align the reference to.")

    def tilt(k: np.ndarray) -> tuple[float, float]:
        sh = hd = None
        if _ok(k, (R_SHOULDER, L_SHOULDER), conf_threshold):
            sh = _angle(k[L_SHOULDER, :2] - k[R_SHOULDER, :2], "h")
        if _ok(k, (NOSE, NECK), conf_threshold):
            hd = _angle(k[NOSE, :2] - k[NECK, :2], "v")
        return sh, hd

    rs, rh = tilt(r)
    best, best_key = int(frames[0]), None
    for f in frames.tolist():
        d = kp[f]
        groups = sum(
            _ok(r, g, conf_threshold) and _ok(d, g, conf_threshold)
            for g in ((R_SHOULDER, L_SHOULDER), (R_HIP, L_HIP), (R_EAR, L_EAR))
        )
        ds, dh = tilt(d)
        diff = (abs(ds - rs) if ds is not None and rs is not None else math.pi) + (
            abs(dh - rh) if dh is not None and rh is not None else math.pi
        )
        key = (-groups, diff)
        if best_key is None or key < best_key:
            best, best_key = f, key
    return best


def _np(x, dtype=np.float32) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x
        x = x.numpy()
    return np.asarray(x).astype(dtype)


def align_identities(
    identity_images,
    identity_masks,
    reference_keypoints,
    targets,
    *,
    anchor_frame: int | None = None,
    conf_threshold: float = 0.3,
    gray: float = 0.5,
) -> AlignedIdentities:
    """Scale and place each isolated identity onto its bound track (One-to-All "pose" mode).

    identity_images `[N, Hr, Wr, 3]` float 0..1 (the decoupler's, identity on gray),
    identity_masks `[N, Hr, Wr]`, reference_keypoints `[N, 18 or 128, 3]` px in the
    reference. targets: a `Binding` (identity k follows its first output track) or
    `PoseTracks` (identity k follows track k). anchor_frame: driving frame to match (None:
    `pick_anchor_frame` per identity; a frame where the track is absent uses the nearest
    present frame). Output on the driving canvas H x W.
    """
    images = _np(identity_images)
    masks = _np(identity_masks) > 0.5
    ref_kp = _np(reference_keypoints, np.float64)
    if images.ndim == 3:
        images = images[None]
        masks = masks[None] if masks.ndim == 2 else masks
        ref_kp = ref_kp[None] if ref_kp.ndim == 2 else ref_kp
    n = images.shape[0]
    if images.ndim != 4 or images.shape[-1] < 3 or masks.shape != images.shape[:3]:
        raise AnyCrowdError(
            f"identity images [N, H, W, 3] and masks [N, H, W] must match, got {images.shape} and {masks.shape}: "
            "pass the decoupler's identity_images and masks."
        )
    if ref_kp.ndim != 3 or ref_kp.shape[0] != n or ref_kp.shape[1] < 18 or ref_kp.shape[2] != 3:
        raise AnyCrowdError(
            f"reference_keypoints must be [N, 18 or 128, 3] for the {n} identities, got {ref_kp.shape}. Run the "
            "pose extractor on the reference image (or use a scene's reference_keypoints)."
        )

    if isinstance(targets, PoseTracks):
        tracks, follow = targets, list(range(n))
        if targets.num_tracks < n:
            raise AnyCrowdError(f"{n} identities but only {targets.num_tracks} tracks: give a Binding instead.")
    elif hasattr(targets, "identities") and hasattr(targets, "tracks"):
        tracks = targets.tracks
        follow = []
        for k in range(n):
            if k not in targets.identities:
                raise AnyCrowdError(f"Identity {k} is not bound to any track; fix the binding before aligning.")
            follow.append(targets.identities.index(k))
    else:
        raise AnyCrowdError(f"targets must be a Binding or PoseTracks, got {type(targets).__name__}.")

    height, width = int(tracks.height), int(tracks.width)
    tkp = _np(tracks.keypoints, np.float64)
    tboxes = _np(tracks.boxes, np.float64)
    tpres = _np(tracks.present, bool)
    out_img = np.full((n, height, width, 3), gray, np.float32)
    out_mask = np.zeros((n, height, width), bool)
    out_pad = np.zeros((n, height, width), bool)
    scales, mats, kps, frames, rules = [], [], [], [], []
    for k in range(n):
        j = follow[k]
        if tpres[j].any() and not (tkp[j][..., 2] > 0).any():
            raise AnyCrowdError(
                f"Track {j} bound to identity {k} has boxes but no keypoints (mask-only tracks, e.g. from "
                "AnyCrowd Identity Masks), and aligning the reference needs the driving poses. Connect the "
                "AnyCrowd Pose Extractor's tracks to align_to, or leave align_to unconnected.")
        present = tpres[j] & (tkp[j][..., 2] > 0).any(-1)
        if anchor_frame is None:
            f = pick_anchor_frame(ref_kp[k], tkp[j], present, conf_threshold)
        else:
            idx = np.flatnonzero(present)
            if idx.size == 0:
                raise AnyCrowdError(f"Track {j} bound to identity {k} is never visible; cannot align.")
            f = int(idx[np.argmin(np.abs(idx - int(anchor_frame)))])
        d = tkp[j, f]
        ys, xs = np.nonzero(masks[k])
        if xs.size == 0:
            raise AnyCrowdError(f"Identity {k} has an empty mask; nothing to align.")
        ref_box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        s, rule = alignment_scale(ref_kp[k], d, conf_threshold, ref_box, tboxes[j, f])
        ar, ad = _anchor(ref_kp[k], conf_threshold), _anchor(d, conf_threshold)
        kind = next((c for c in ("neck", "shoulders", "hips", "nose") if c in ar and c in ad), None)
        if kind is not None:
            src, dst = ar[kind], ad[kind]
        else:  # no shared joint: box centres
            b = tboxes[j, f]
            src = np.array([(ref_box[0] + ref_box[2]) / 2, (ref_box[1] + ref_box[3]) / 2])
            dst = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        m = np.array([[s, 0.0, dst[0] - s * src[0]], [0.0, s, dst[1] - s * src[1]]], np.float64)
        size = (width, height)
        img = cv2.warpAffine(np.ascontiguousarray(images[k, ..., :3]), m, size, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(gray, gray, gray))
        mk = cv2.warpAffine(masks[k].astype(np.float32), m, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) >= 0.5
        cover = cv2.warpAffine(np.ones(masks.shape[1:], np.float32), m, size, flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) > 0.5
        if not mk.any():
            raise AnyCrowdError(
                f"After alignment identity {k} lies outside the frame (scale {s:.2f} at frame {f}); pick another "
                "anchor frame or turn alignment off."
            )
        out_img[k] = np.where(mk[..., None], img, gray)
        out_mask[k], out_pad[k] = mk, ~cover
        a = ref_kp[k].copy()
        v = a[:, 2] > 0
        a[v, 0] = s * a[v, 0] + m[0, 2]
        a[v, 1] = s * a[v, 1] + m[1, 2]
        scales.append(s)
        mats.append(m)
        kps.append(a)
        frames.append(f)
        rules.append(rule)
    return AlignedIdentities(
        images=torch.from_numpy(out_img),
        masks=torch.from_numpy(out_mask),
        padding=torch.from_numpy(out_pad),
        scales=torch.tensor(scales, dtype=torch.float32),
        matrices=torch.from_numpy(np.stack(mats)).float(),
        keypoints=torch.from_numpy(np.stack(kps)).float(),
        anchor_frames=frames,
        track_indices=follow,
        rules=rules,
    )
