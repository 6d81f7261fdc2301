"""Procedural multi-character scenes with exact ground truth.

Figures with two-tone clothing (an upper and a lower colour, so a swap and a blend of two
characters look different even after the VAE's 8x pooling) walk, circle or dance over a
textured background. Every quantity the pipeline needs (instance masks in the reference,
occlusion-aware track masks and part labels, boxes, COCO-18 keypoints, an OpenPose-style
pose video with the same colours for everyone, depth order) is known exactly, so tests,
the demo, the miniature's training data and the binding benchmark need no downloads.
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

SCENARIOS = ("crossing", "exit_reenter", "static", "swap", "group_crossing", "occlusion")

# OpenPose / COCO-18 body order.
KEYPOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
# Part labels of a rendered character (values of `track_parts` / `reference_parts`).
UPPER, LOWER, HEAD = 1, 2, 3


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
    pose_video: `[T, H, W, 3]` float 0..1 — OpenPose-style skeletons on black, the same
        limb colours for every person (the pose carries no identity cue).
    depth_order: long `[T, N]` — character indices back to front (painter's order): the
        character whose feet are lower in the image is closer to the camera.
    colors: float `[N, 3, 3]` — (upper body, lower body, head) RGB of each character, 0..1.
    track_parts: uint8 `[N, T, H, W]` — visible part label per pixel (0 none, UPPER = torso
        and arms, LOWER = hips and legs, HEAD); `track_masks == track_parts > 0`.
    reference_parts: uint8 `[N, H, W]` — part labels of the reference figures.
    body_area: float `[N, T]` — pixels of each whole in-frame body, occluded parts
        included (visible pixels / body_area = how much of the character is unoccluded).
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
    track_parts: Tensor
    reference_parts: Tensor
    body_area: Tensor

    @property
    def num_characters(self) -> int:
        return int(self.reference_masks.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    def video_for_binding(self, binding) -> Tensor:
        """`[T, H, W, 3]` ground truth when track i is animated by identity `binding[i]`:
        each visible part of track i painted in that identity's colour (`binding` =
        range(N) gives `video`)."""
        binding = [int(b) for b in binding]
        if len(binding) != self.num_characters or not all(0 <= b < self.num_characters for b in binding):
            raise AnyCrowdError(
                f"binding must give one identity index in 0..{self.num_characters - 1} per track "
                f"({self.num_characters} tracks), got {binding}."
            )
        video = self.background.expand_as(self.video).clone()
        for i, k in enumerate(binding):
            for part in (UPPER, LOWER, HEAD):
                video[self.track_parts[i] == part] = self.colors[k, part - 1]
        return video


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
    """Part-label image uint8 `[H, W]` (0 empty, UPPER, LOWER, HEAD) of one figure.

    Limbs are drawn thick and the hips filled down to the knees (shorts), so both tones
    cover several 8x8 blocks of a VAE and survive its pooling.
    """
    labels = np.zeros((height, width), dtype=np.uint8)
    u = size / 8.0
    arm = max(2, int(round(0.7 * u)))
    leg = max(3, int(round(0.9 * u)))
    p = np.round(kp).astype(np.int32)
    for a, b in ((8, 9), (9, 10), (11, 12), (12, 13)):
        cv2.line(labels, tuple(p[a]), tuple(p[b]), LOWER, leg, cv2.LINE_8)
    cv2.fillPoly(labels, [np.stack([p[8], p[11], p[12], p[9]])], LOWER)
    torso = np.stack([p[1] + [0, -1], p[2], p[8], p[11], p[5]])
    cv2.fillPoly(labels, [torso], UPPER)
    cv2.line(labels, tuple(p[1]), tuple(p[1] + [0, int(round(u * 0.3))]), UPPER, arm)
    for a, b in ((2, 3), (3, 4), (5, 6), (6, 7)):
        cv2.line(labels, tuple(p[a]), tuple(p[b]), UPPER, arm, cv2.LINE_8)
    head_c = np.round((kp[16] + kp[17]) / 2.0).astype(np.int32)
    cv2.circle(labels, tuple(head_c), max(2, int(round(u * 0.62))), HEAD, -1)
    return labels


def _paint(canvas: np.ndarray, labels: np.ndarray, colors: np.ndarray) -> None:
    """Paint one character's parts onto `canvas` in place, each part in its own colour."""
    for part in (UPPER, LOWER, HEAD):
        canvas[labels == part] = colors[part - 1]


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
    """`[N, 3, 3]` (upper, lower, head) colours. Upper hues are evenly spaced; lower hues
    are the same set rotated by about half a turn and darker, so no two characters share
    a tone and the blend of two characters matches neither."""
    offset = rng.uniform(0, 1)
    shift = num // 2 if num > 1 else 0
    out = np.zeros((num, 3, 3))
    for i in range(num):
        h = (offset + i / num) % 1.0
        h_low = (offset + ((i + shift) % num + 0.5) / num) % 1.0
        out[i, 0] = colorsys.hsv_to_rgb(h, 0.85, 0.95)
        out[i, 1] = colorsys.hsv_to_rgb(h_low, 0.8, 0.5)
        out[i, 2] = colorsys.hsv_to_rgb(h_low, 0.35, 1.0)
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
    reference position (no translation, limbs still move); "swap" — neighbours circle
    around each other in pairs and end on each other's spot, one passing in front;
    "group_crossing" — the left and the right half of the group walk through each other;
    "occlusion" — character 0 walks across the whole row, in front of some characters and
    behind others, while they dance in place.
    style: "walk" | "dance" | None (None: the travelling scenarios walk, the others dance).
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
    travelling = scenario in ("crossing", "swap", "group_crossing")
    walk_style = style or ("walk" if travelling else "dance")

    background = _background(hgt, wid, rng)
    colors = _character_colors(n, rng)
    base_feet = hgt * 0.9
    slots = (np.arange(n) + 0.5) * spacing
    phases = rng.uniform(0, 2 * math.pi, size=n)
    speed = 2 * math.pi / 8.0  # one stride every 8 frames

    # Reference: neutral pose, evenly spaced, same depth.
    ref_img = background.copy()
    ref_parts = np.zeros((n, hgt, wid), dtype=np.uint8)
    ref_kps = np.zeros((n, 18, 3))
    for i in range(n):
        kp = _skeleton(slots[i], base_feet, size, 0.0, "walk", 0.0)
        ref_parts[i] = _render_parts(kp, size, hgt, wid)
        _paint(ref_img, ref_parts[i], colors[i])
        ref_kps[i] = _with_confidence(kp, hgt, wid)

    xs, feet = _paths(scenario, n, t_len, slots, spacing, size, base_feet, hgt, phases, rng)

    video = np.repeat(background[None], t_len, axis=0)
    parts = np.zeros((n, t_len, hgt, wid), dtype=np.uint8)
    boxes = np.full((n, t_len, 4), np.nan)
    area = np.zeros((n, t_len))
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
            area[i, f] = float((labels_f[i] > 0).sum())
        order = np.lexsort((np.arange(n), feet[:, f]))  # back to front; ties: higher index in front
        depth[f] = order
        covered = np.zeros((hgt, wid), dtype=bool)
        for i in order[::-1]:
            body = labels_f[i] > 0
            parts[i, f] = np.where(body & ~covered, labels_f[i], 0)
            covered |= body
            _paint(video[f], parts[i, f], colors[i])
        draw_people(pose[f], kps[:, f])  # the project's one pose renderer

    as_t = lambda a, dt=torch.float32: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    parts_t = torch.from_numpy(parts)
    ref_parts_t = torch.from_numpy(ref_parts)
    return ProceduralScene(
        reference_image=as_t(ref_img),
        reference_masks=ref_parts_t > 0,
        reference_keypoints=as_t(ref_kps),
        video=as_t(video),
        background=as_t(background),
        track_masks=parts_t > 0,
        track_boxes=as_t(boxes),
        keypoints=as_t(kps),
        pose_video=torch.from_numpy(pose).float().div_(255.0),
        depth_order=torch.from_numpy(depth),
        colors=as_t(colors),
        scenario=scenario,
        track_parts=parts_t,
        reference_parts=ref_parts_t,
        body_area=as_t(area),
    )


def _paths(scenario: str, n: int, t_len: int, slots: np.ndarray, spacing: float, size: float, base_feet: float,
           hgt: int, phases: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Feet x and y `[N, T]` of every character in every frame for `scenario`."""
    u = np.arange(t_len) / max(t_len - 1, 1)
    ease = u * u * (3 - 2 * u)
    xs = np.repeat(slots[:, None], t_len, axis=1).astype(np.float64)
    feet = np.full((n, t_len), base_feet)
    depth_step = min(6.0, 0.08 * hgt)
    depth_offsets = (np.arange(n) - (n - 1) / 2) * depth_step
    depth_offsets = depth_offsets[rng.permutation(n)]
    sway = 0.05 * spacing * np.sin(2 * np.pi * u[None] + phases[:, None])
    if scenario == "crossing":
        for i in range(n):
            start, end = slots[i], slots[n - 1 - i]
            if start == end:  # the middle one (odd n) or a lone character sways instead
                xs[i] = start + 0.35 * spacing * np.sin(np.pi * u)
            else:
                xs[i] = start + (end - start) * ease
            feet[i] = base_feet + depth_offsets[i]
    elif scenario == "exit_reenter":
        xs = slots[:, None] + sway
        feet = base_feet + depth_offsets[:, None] * 0.5 + 0 * u[None]
        # Walk out over the first third, stay out for the middle third, walk back in.
        out_dist = slots[0] + 0.6 * size  # far enough that the whole figure leaves
        xs[0] = slots[0] - out_dist * np.clip(3.0 * np.minimum(u, 1.0 - u), 0.0, 1.0)
    elif scenario == "swap":
        # Pairs (0,1), (2,3), ... turn half a circle around their midpoint; the one whose
        # path bows towards the camera passes in front. An odd one out sways in place.
        for a in range(0, n - 1, 2):
            b = a + 1
            mid, half = (slots[a] + slots[b]) / 2, (slots[b] - slots[a]) / 2
            angle = np.pi * ease
            xs[a] = mid - half * np.cos(angle)
            xs[b] = mid + half * np.cos(angle)
            bow = 2.5 * depth_step * np.sin(angle)
            front = a if rng.random() < 0.5 else b
            feet[front] = base_feet + bow
            feet[b if front == a else a] = base_feet - bow
        if n % 2:
            xs[n - 1] = slots[n - 1] + sway[n - 1]
    elif scenario == "group_crossing":
        # The left half walks right by half the frame while the right half walks left.
        left = np.arange(n) < n / 2
        dist = np.where(left, 1.0, -1.0) * spacing * max(n // 2, 1)
        if n == 1:
            dist[:] = 0.35 * spacing
        for i in range(n):
            xs[i] = slots[i] + dist[i] * ease
            feet[i] = base_feet + depth_offsets[i]
    elif scenario == "occlusion":
        # Character 0 walks from beyond the left-most slot to beyond the right-most one,
        # alternately in front of and behind the others, who dance in place.
        xs = slots[:, None] + sway
        feet = base_feet + 0 * xs
        xs[0] = slots[0] - 0.3 * spacing + (slots[-1] - slots[0] + 0.6 * spacing) * ease
        for i in range(1, n):
            feet[i] = base_feet + (depth_step if i % 2 else -depth_step)
    # "static": everyone stays at their slot (limbs still move)
    return xs, feet
