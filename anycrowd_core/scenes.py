"""Procedural multi-character scenes with exact ground truth.

Stick-figure characters with distinct colours, stripes and heads walk or dance over a
textured background. Every quantity the pipeline needs (instance masks in the reference,
occlusion-aware track masks, boxes, COCO-18 keypoints, an OpenPose-style pose video,
depth order) is known exactly, so tests, the headless demo and smoke training can run
without downloaded data.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from .codec import check_frame_count, check_frame_size
from .errors import AnyCrowdError
from .pose.render import OPENPOSE_COLORS, OPENPOSE_LIMBS, draw_people  # noqa: F401 (re-exported)

SCENARIOS = ("crossing", "exit_reenter", "static")

# OpenPose / COCO-18 body order.
KEYPOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
# Part labels of a rendered character.
_LIMB, _TORSO, _HEAD = 1, 2, 3


@dataclass
class ProceduralScene:
    """A synthetic multi-character clip with exact annotations (N characters, T frames).

    reference_image: `[H, W, 3]` float 0..1 — the characters standing apart, not
        overlapping, in a neutral pose on the background (a "group photo").
    reference_masks: bool `[N, H, W]` — exact instance masks in the reference image.
    reference_keypoints: `[N, 18, 3]` — keypoints of the reference pose (x, y px, conf).
    video: `[T, H, W, 3]` float 0..1 — ground-truth frames.
    background: `[H, W, 3]` float 0..1 — the empty background (same in every frame).
    track_masks: bool `[N, T, H, W]` — visible pixels of character k (a character in front
        hides the one behind). Track k is character k (identity binding = identity).
    track_boxes: float `[N, T, 4]` — xyxy px of the character's whole in-frame body
        (occluded parts included; x1/y1 exclusive pixel edges), NaN where it is out of frame.
    keypoints: float `[N, T, 18, 3]` — COCO-18 x, y px and confidence (1 inside the frame,
        0 with x = y = 0 outside; occlusion by another character does not zero it).
    pose_video: `[T, H, W, 3]` float 0..1 — OpenPose-style skeletons on black.
    depth_order: long `[T, N]` — character indices back to front (painter's order): the
        character whose feet are lower in the image is closer to the camera.
    colors: float `[N, 3, 3]` — (body, stripe, head) RGB of each character, 0..1.
    """

    reference_image: Tensor
    reference_masks: Tensor
    reference_keypoints: Tensor
    video: Tensor
    background: Tensor
    track_masks: Tensor
    track_boxes: Tensor
    keypoints: Tensor
    pose_video: Tensor
    depth_order: Tensor
    colors: Tensor
    scenario: str

    @property
    def num_characters(self) -> int:
        return int(self.reference_masks.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])


def _skeleton(x: float, y_feet: float, size: float, phase: float, style: str, amount: float) -> np.ndarray:
    """COCO-18 keypoints `[18, 2]` of a figure `size` px tall, feet centred at (x, y_feet).

    The figure faces the camera (its right side on the image left). `phase` drives the
    limb swing; `amount` 0 gives the neutral standing pose.
    """
    u = size / 8.0
    k = np.zeros((18, 2), dtype=np.float64)
    head = np.array([x, y_feet - size + 0.7 * u])
    neck = np.array([x, y_feet - size + 1.6 * u])
    k[1] = neck
    k[0] = head + [0.0, 0.15 * u]
    k[14] = head + [-0.22 * u, -0.12 * u]
    k[15] = head + [0.22 * u, -0.12 * u]
    k[16] = head + [-0.45 * u, 0.0]
    k[17] = head + [0.45 * u, 0.0]
    k[2] = neck + [-0.9 * u, 0.15 * u]
    k[5] = neck + [0.9 * u, 0.15 * u]
    k[8] = [x - 0.5 * u, y_feet - 4.0 * u]
    k[11] = [x + 0.5 * u, y_feet - 4.0 * u]

    s = math.sin(phase)
    c = math.cos(phase)
    if style == "walk":
        leg = 0.45 * amount * s  # radians from vertical, legs in antiphase
        arm = -0.5 * amount * s
        arm_r, arm_l = 0.15 + arm, -0.15 - arm
        elbow_r = elbow_l = 0.3 * amount
    else:  # dance: arms wave up and down, knees bounce
        leg = 0.25 * amount * s
        arm_r = 0.15 + amount * (1.2 + 0.9 * s)
        arm_l = -0.15 - amount * (1.2 + 0.9 * c)
        elbow_r = elbow_l = 0.6 * amount * c

    def limb(start: np.ndarray, angle: float, length: float) -> np.ndarray:
        # angle measured from straight down; positive swings towards image-left for the
        # right limbs (outwards), and we mirror for the left ones via the sign given.
        return start + length * np.array([-math.sin(angle), math.cos(angle)])

    k[3] = limb(k[2], arm_r, 1.4 * u)
    k[4] = limb(k[3], arm_r + elbow_r, 1.3 * u)
    k[6] = limb(k[5], arm_l, 1.4 * u)
    k[7] = limb(k[6], arm_l - elbow_l, 1.3 * u)
    k[9] = limb(k[8], leg + 0.05, 2.0 * u)
    k[10] = limb(k[9], leg * 0.6 + 0.05, 2.0 * u)
    k[12] = limb(k[11], -leg - 0.05, 2.0 * u)
    k[13] = limb(k[12], -leg * 0.6 - 0.05, 2.0 * u)
    return k


def _render_parts(kp: np.ndarray, size: float, height: int, width: int) -> np.ndarray:
    """Part-label image uint8 `[H, W]` (0 empty, limb, torso, head) of one figure."""
    labels = np.zeros((height, width), dtype=np.uint8)
    thick = max(2, int(round(size / 8.0 * 0.55)))
    p = np.round(kp).astype(np.int32)
    for a, b in ((8, 9), (9, 10), (11, 12), (12, 13)):
        cv2.line(labels, tuple(p[a]), tuple(p[b]), _LIMB, thick + 1, cv2.LINE_8)
    torso = np.stack([p[1] + [0, -1], p[2], p[8], p[11], p[5]])
    cv2.fillPoly(labels, [torso], _TORSO)
    cv2.line(labels, tuple(p[1]), tuple(p[1] + [0, int(round(size / 8.0 * 0.3))]), _TORSO, thick)
    for a, b in ((2, 3), (3, 4), (5, 6), (6, 7)):
        cv2.line(labels, tuple(p[a]), tuple(p[b]), _LIMB, thick, cv2.LINE_8)
    head_c = np.round((kp[16] + kp[17]) / 2.0).astype(np.int32)
    cv2.circle(labels, tuple(head_c), max(2, int(round(size / 8.0 * 0.62))), _HEAD, -1)
    return labels


def _paint(canvas: np.ndarray, labels: np.ndarray, colors: np.ndarray, stripe_axis: int, stripe: int) -> None:
    """Paint one character's parts onto `canvas` in place (torso striped, head its own colour)."""
    ys, xs = np.nonzero(labels)
    if ys.size == 0:
        return
    part = labels[ys, xs]
    coord = (ys, xs, ys + xs)[stripe_axis]
    striped = (coord // stripe) % 2 == 1
    rgb = np.where((part == _HEAD)[:, None], colors[2], colors[0])
    rgb = np.where(((part == _TORSO) & striped)[:, None], colors[1], rgb)
    canvas[ys, xs] = rgb


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A calm, textured backdrop: sky/floor gradients and a few muted blocks."""
    hue = rng.uniform(0, 1)
    top = np.array(colorsys.hsv_to_rgb(hue, 0.15, 0.85))
    wall = np.array(colorsys.hsv_to_rgb(hue, 0.25, 0.6))
    floor = np.array(colorsys.hsv_to_rgb((hue + 0.1) % 1, 0.3, 0.45))
    horizon = int(height * 0.62)
    t = np.linspace(0, 1, horizon)[:, None]
    bg = np.empty((height, width, 3), dtype=np.float64)
    bg[:horizon] = (top * (1 - t) + wall * t)[:, None, :]
    f = np.linspace(0, 1, height - horizon)[:, None]
    bg[horizon:] = (floor * (1 - 0.4 * f) + 0.1 * f)[:, None, :]
    for _ in range(4):
        bw, bh = int(rng.uniform(0.08, 0.2) * width), int(rng.uniform(0.1, 0.3) * height)
        x0, y0 = int(rng.uniform(0, width - bw)), int(rng.uniform(0.05, 0.5) * height)
        col = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), 0.2, rng.uniform(0.4, 0.8)))
        bg[y0 : min(y0 + bh, horizon), x0 : x0 + bw] = col
    # A little floor tiling so inpainting and background tokens have texture to keep.
    bg[horizon:, :: max(8, width // 12)] *= 0.85
    return bg


def _character_colors(num: int, rng: np.random.Generator) -> np.ndarray:
    """`[N, 3, 3]` (body, stripe, head) colours; bodies evenly spaced in hue, saturated."""
    offset = rng.uniform(0, 1)
    out = np.zeros((num, 3, 3))
    for i in range(num):
        h = (offset + i / num) % 1.0
        out[i, 0] = colorsys.hsv_to_rgb(h, 0.85, 0.95)
        out[i, 1] = colorsys.hsv_to_rgb(h, 0.9, 0.35)
        out[i, 2] = colorsys.hsv_to_rgb((h + 0.5) % 1.0, 0.45, 1.0)
    return out


def _with_confidence(kp: np.ndarray, height: int, width: int) -> np.ndarray:
    inside = (kp[:, 0] >= 0) & (kp[:, 0] <= width - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= height - 1)
    out = np.zeros((18, 3))
    out[inside, :2] = kp[inside]
    out[inside, 2] = 1.0
    return out


def _box(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.full(4, np.nan)
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def make_scene(
    num_characters: int = 3,
    num_frames: int = 17,
    height: int = 128,
    width: int = 192,
    seed: int = 0,
    scenario: str = "crossing",
    style: str | None = None,
) -> ProceduralScene:
    """Render a procedural multi-character scene (deterministic under `seed`).

    scenario: "crossing" — characters swap sides, passing in front of/behind each other at
    different depths; "exit_reenter" — character 0 walks out of the left edge and comes
    back while the others dance in place; "static" — everyone dances in place at their
    reference position (no translation, limbs still move).
    style: "walk" | "dance" | None (None: crossing walks, the others dance).
    """
    if scenario not in SCENARIOS:
        raise AnyCrowdError(f"Unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}.")
    if style not in (None, "walk", "dance"):
        raise AnyCrowdError(f"Unknown style {style!r}; choose 'walk', 'dance' or None.")
    if num_characters < 1:
        raise AnyCrowdError(f"num_characters must be at least 1, got {num_characters}.")
    check_frame_count(num_frames, "scene")
    check_frame_size(height, width, what="scene")

    rng = np.random.default_rng(seed)
    n, t_len, hgt, wid = num_characters, num_frames, height, width
    spacing = wid / n
    # A figure is about 0.6*size wide with arms out; keep reference figures apart.
    size = min(0.55 * hgt, 0.75 * spacing / 0.6)
    if size < 24:
        raise AnyCrowdError(
            f"{n} characters do not fit side by side in a {width}px wide scene (figures would be "
            f"{size:.0f}px tall). Use a wider scene (e.g. width {16 * math.ceil(n * 40 / 16)}) or fewer characters."
        )
    walk_style = style or ("walk" if scenario == "crossing" else "dance")

    background = _background(hgt, wid, rng)
    colors = _character_colors(n, rng)
    stripe_axis = [int(rng.integers(0, 3)) for _ in range(n)]
    stripe = max(2, int(round(size / 16)))
    base_feet = hgt * 0.9
    slots = (np.arange(n) + 0.5) * spacing
    phases = rng.uniform(0, 2 * math.pi, size=n)
    speed = 2 * math.pi / 8.0  # one stride every 8 frames

    # Reference: neutral pose, evenly spaced, same depth.
    ref_img = background.copy()
    ref_masks = np.zeros((n, hgt, wid), dtype=bool)
    ref_kps = np.zeros((n, 18, 3))
    for i in range(n):
        kp = _skeleton(slots[i], base_feet, size, 0.0, "walk", 0.0)
        labels = _render_parts(kp, size, hgt, wid)
        _paint(ref_img, labels, colors[i], stripe_axis[i], stripe)
        ref_masks[i] = labels > 0
        ref_kps[i] = _with_confidence(kp, hgt, wid)

    # Paths: feet position per character per frame.
    tt = np.arange(t_len)
    u = tt / max(t_len - 1, 1)
    xs = np.zeros((n, t_len))
    feet = np.zeros((n, t_len))
    depth_offsets = (np.arange(n) - (n - 1) / 2) * min(6.0, 0.08 * hgt)
    depth_offsets = depth_offsets[rng.permutation(n)]
    if scenario == "crossing":
        ease = u * u * (3 - 2 * u)
        for i in range(n):
            start, end = slots[i], slots[n - 1 - i]
            if start == end:  # the middle one (odd n) or a lone character sways instead
                end = start + 0.35 * spacing
                ease_i = np.sin(np.pi * u)
            else:
                ease_i = ease
            xs[i] = start + (end - start) * ease_i
            feet[i] = base_feet + depth_offsets[i]
    elif scenario == "exit_reenter":
        for i in range(n):
            xs[i] = slots[i] + 0.05 * spacing * np.sin(2 * np.pi * u + phases[i])
            feet[i] = base_feet + depth_offsets[i] * 0.5
        # Walk out over the first third, stay out for the middle third, walk back in.
        out_dist = slots[0] + 0.6 * size  # far enough that the whole figure leaves
        xs[0] = slots[0] - out_dist * np.clip(3.0 * np.minimum(u, 1.0 - u), 0.0, 1.0)
    else:
        xs[:] = slots[:, None]
        feet[:] = base_feet

    video = np.repeat(background[None], t_len, axis=0)
    track_masks = np.zeros((n, t_len, hgt, wid), dtype=bool)
    boxes = np.full((n, t_len, 4), np.nan)
    kps = np.zeros((n, t_len, 18, 3))
    depth = np.zeros((t_len, n), dtype=np.int64)
    pose = np.zeros((t_len, hgt, wid, 3), dtype=np.uint8)
    for f in range(t_len):
        labels_f = []
        for i in range(n):
            kp = _skeleton(xs[i, f], feet[i, f], size, phases[i] + speed * f, walk_style, 1.0)
            labels_f.append(_render_parts(kp, size, hgt, wid))
            kps[i, f] = _with_confidence(kp, hgt, wid)
            boxes[i, f] = _box(labels_f[i] > 0)
        order = np.lexsort((np.arange(n), feet[:, f]))  # back to front; ties: higher index in front
        depth[f] = order
        for i in order:
            _paint(video[f], labels_f[i], colors[i], stripe_axis[i], stripe)
        covered = np.zeros((hgt, wid), dtype=bool)
        for i in order[::-1]:
            body = labels_f[i] > 0
            track_masks[i, f] = body & ~covered
            covered |= body
        draw_people(pose[f], kps[:, f])  # the project's one pose renderer

    as_t = lambda a, dt=torch.float32: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    return ProceduralScene(
        reference_image=as_t(ref_img),
        reference_masks=torch.from_numpy(ref_masks),
        reference_keypoints=as_t(ref_kps),
        video=as_t(video),
        background=as_t(background),
        track_masks=torch.from_numpy(track_masks),
        track_boxes=as_t(boxes),
        keypoints=as_t(kps),
        pose_video=torch.from_numpy(pose).float().div_(255.0),
        depth_order=torch.from_numpy(depth),
        colors=as_t(colors),
        scenario=scenario,
    )
