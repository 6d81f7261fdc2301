"""Tracking scenarios with ground-truth identities: the procedural scenes of `scenes.py` and
hand-made trajectories (crossings, swaps, occlusion, exits, dropped and false detections).

Used by tests/test_tracking.py, `python -m anycrowd_core.pose.evaluate` and the tracking
benchmark. Everything is seeded; detections are shuffled within each frame.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import AnyCrowdError
from ..scenes import _skeleton, make_scene
from .types import BODY_POINTS, FACE, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND, FramePoses, PoseSequence


@dataclass
class Scenario:
    """Detections of a clip and who each detection really is.

    sequence: the detector-like input (shuffled people per frame, 128-point keypoints).
    identities: per frame, int64 `[P_t]` true identity of each detection (-1 = false positive).
    in_frame: bool `[N, T]` identity n is in the picture (at least 4 body points inside it,
        occluded or not); less is a sliver at the edge that no detector finds.
    description: one line on what makes it hard.
    """

    name: str
    description: str
    sequence: PoseSequence
    identities: list[np.ndarray]
    in_frame: np.ndarray

    @property
    def num_identities(self) -> int:
        return int(self.in_frame.shape[0])

    @property
    def num_frames(self) -> int:
        return len(self.sequence.frames)


_MIN_POINTS = 4  # body points inside the picture for a person to count as in it (detectable)


def _seed(name: str, seed: int) -> int:
    return zlib.crc32(name.encode()) + 1_000_003 * seed


# ---- detections from per-person body keypoints ------------------------------------------

# Face and hands are not used for matching; plant them so outputs carry them through.
_FACE_T = np.stack([np.cos(np.linspace(0, 2 * np.pi, 68, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 68, endpoint=False))], 1) * np.array([0.28, 0.36])
_HAND_T = np.stack([np.cos(np.linspace(0, 2 * np.pi, 21, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 21, endpoint=False))], 1) * 0.12


def _full_keypoints(body: np.ndarray, size: float, conf_body: np.ndarray) -> np.ndarray:
    """`[128, 3]` from body points `[18, 2]` (+ face around the nose, hands at the wrists)."""
    out = np.zeros((NUM_KEYPOINTS, 3))
    out[:BODY_POINTS, :2] = body
    out[:BODY_POINTS, 2] = conf_body
    u = size / 8.0
    for sl, centre, tmpl, ok in ((FACE, body[0], _FACE_T * u, conf_body[0]),
                                 (LEFT_HAND, body[7], _HAND_T * size / 8, conf_body[7]),
                                 (RIGHT_HAND, body[4], _HAND_T * size / 8, conf_body[4])):
        out[sl, :2] = centre + tmpl
        out[sl, 2] = 0.8 if ok > 0 else 0.0
    return out


def _box_of(points: np.ndarray, size: float) -> np.ndarray:
    """A detector-like person box around body points `[K, 2]` (margin for head and feet)."""
    m = 0.07 * size
    return np.array([points[:, 0].min() - m, points[:, 1].min() - 1.6 * m,
                     points[:, 0].max() + m, points[:, 1].max() + m])


@dataclass
class _Person:
    x: np.ndarray  # [T] feet x px
    feet: np.ndarray  # [T] feet y px (larger = closer to the camera)
    size: np.ndarray  # [T] body height px
    phase: float
    style: str = "walk"


def _detections(people: list[_Person], height: int, width: int, rng: np.random.Generator, *,
                noise: float = 0.01, drop: float = 0.0, max_drop_run: int = 4,
                false_rate: float = 0.0, occlusion: bool = True, forced_missing: dict | None = None
                ) -> tuple[list[FramePoses], list[np.ndarray], np.ndarray]:
    """Detector-like frames for `people`: depth occlusion (heavily covered people vanish, partly
    covered ones lose the covered points), keypoint noise (fraction of height), random drops
    (runs capped at `max_drop_run`), and spurious detections (`false_rate` per frame)."""
    n, num_t = len(people), len(people[0].x)
    speed = 2 * math.pi / 8.0
    body = np.zeros((n, num_t, BODY_POINTS, 2))
    for i, p in enumerate(people):
        for t in range(num_t):
            body[i, t] = _skeleton(p.x[t], p.feet[t], p.size[t], p.phase + speed * t, p.style, 1.0)
    inside = ((body[..., 0] >= 0) & (body[..., 0] <= width - 1) & (body[..., 1] >= 0) & (body[..., 1] <= height - 1))
    in_frame = inside.sum(-1) >= _MIN_POINTS
    drop_run = np.zeros(n, dtype=np.int64)
    frames, ids = [], []
    fp_alive: list[tuple[int, np.ndarray, np.ndarray, float]] = []  # (frames left, box, kps, score)
    for t in range(num_t):
        order = np.argsort([p.feet[t] for p in people], kind="stable")  # back to front
        cores = [np.array([body[i, t, :, 0].min(), body[i, t, :, 1].min(), body[i, t, :, 0].max(),
                           body[i, t, :, 1].max()]) for i in range(n)]
        kp_list, box_list, sc_list, id_list = [], [], [], []
        for rank, i in enumerate(order):
            if not in_frame[i, t]:
                continue
            size = people[i].size[t]
            conf = inside[i, t].astype(np.float64)
            front = order[rank + 1:] if occlusion else []
            covered_frac = 0.0
            for j in front:
                if not in_frame[j, t]:
                    continue
                c = cores[j]
                hit = ((body[i, t, :, 0] >= c[0]) & (body[i, t, :, 0] <= c[2])
                       & (body[i, t, :, 1] >= c[1]) & (body[i, t, :, 1] <= c[3]))
                covered_frac = max(covered_frac, hit.mean())
                conf = np.where(hit, 0.0, conf)
            missing = covered_frac > 0.7 or conf.sum() < _MIN_POINTS
            if forced_missing and t in forced_missing.get(i, ()):
                missing = True
            if not missing and drop > 0:
                if drop_run[i] < max_drop_run and rng.random() < drop:
                    missing = True
            drop_run[i] = drop_run[i] + 1 if missing else 0
            if missing:
                continue
            pts = body[i, t] + rng.normal(0, noise * size, size=(BODY_POINTS, 2))
            vis = conf > 0
            c_val = np.where(vis, rng.uniform(0.6, 0.95, BODY_POINTS), 0.0)
            box = _box_of(pts[vis], size) + rng.normal(0, noise * size * 0.5, 4)
            box[0::2] = np.clip(box[0::2], 0, width)
            box[1::2] = np.clip(box[1::2], 0, height)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            score = rng.uniform(0.75, 0.95) if covered_frac < 0.25 else rng.uniform(0.4, 0.7)
            kp_list.append(_full_keypoints(pts, size, c_val))
            box_list.append(box)
            sc_list.append(score)
            id_list.append(i)
        # Spurious detections: random places and sizes, 1-2 frames each, random scores.
        if false_rate > 0:
            for _ in range(rng.poisson(false_rate)):
                s = rng.uniform(0.15, 0.5) * height
                cx, cy = rng.uniform(0, width), rng.uniform(0.3 * height, height)
                pts = np.stack([cx + rng.normal(0, 0.15 * s, BODY_POINTS), cy - s / 2 + rng.normal(0, 0.3 * s, BODY_POINTS)], 1)
                fp_alive.append((int(rng.integers(1, 3)), pts, float(rng.uniform(0.3, 0.9)), s))
        still = []
        for left, pts, score, s in fp_alive:
            pts = pts + rng.normal(0, 0.02 * s, pts.shape)
            conf = rng.uniform(0.3, 0.6, BODY_POINTS) * (rng.random(BODY_POINTS) < 0.6)
            box = _box_of(pts, s)
            box[0::2] = np.clip(box[0::2], 0, width)
            box[1::2] = np.clip(box[1::2], 0, height)
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                kp_list.append(_full_keypoints(pts, s, conf))
                box_list.append(box)
                sc_list.append(score)
                id_list.append(-1)
            if left > 1:
                still.append((left - 1, pts, score, s))
        fp_alive = still
        # The detector's NMS (YOLOX, IoU 0.45): of two heavily overlapping boxes only the more
        # confident survives, e.g. a person mostly hidden behind another is not reported.
        if box_list:
            keep = _nms(np.stack(box_list), np.asarray(sc_list), 0.45)
            kp_list, box_list = [kp_list[i] for i in keep], [box_list[i] for i in keep]
            sc_list, id_list = [sc_list[i] for i in keep], [id_list[i] for i in keep]
        perm = rng.permutation(len(box_list))
        frames.append(_frame(kp_list, box_list, sc_list, perm))
        ids.append(np.asarray(id_list, dtype=np.int64)[perm] if id_list else np.zeros(0, np.int64))
    return frames, ids, in_frame


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, in their original order."""
    from .tracking import box_iou

    order = np.argsort(-scores, kind="stable")
    ious = box_iou(boxes, boxes)
    kept: list[int] = []
    for i in order:
        if all(ious[i, j] <= iou for j in kept):
            kept.append(int(i))
    return sorted(kept)


def _frame(kps, boxes, scores, perm) -> FramePoses:
    if not boxes:
        return FramePoses.empty()
    return FramePoses(
        keypoints=torch.tensor(np.stack(kps)[perm], dtype=torch.float32),
        boxes=torch.tensor(np.stack(boxes)[perm], dtype=torch.float32),
        scores=torch.tensor(np.asarray(scores)[perm], dtype=torch.float32),
    )


def _ease(u: np.ndarray) -> np.ndarray:
    return u * u * (3 - 2 * u)


def _scenario(name, description, people, height, width, rng, **kw) -> Scenario:
    frames, ids, in_frame = _detections(people, height, width, rng, **kw)
    return Scenario(name, description, PoseSequence(frames, height, width), ids, in_frame)


# ---- hand-made trajectories ----------------------------------------------------------------

def cross_two(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(_seed("cross_two", seed))
    h, w, t = 480, 832, 60
    u = np.linspace(0, 1, t)
    people = [
        _Person(0.15 * w + 0.7 * w * _ease(u), np.full(t, 0.92 * h), np.full(t, 0.55 * h), rng.uniform(0, 6)),
        _Person(0.85 * w - 0.7 * w * _ease(u), np.full(t, 0.82 * h), np.full(t, 0.48 * h), rng.uniform(0, 6)),
    ]
    return _scenario("cross_two", "two people walk past each other, the far one hidden at the crossing",
                     people, h, w, rng)


def cross_same_height(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(_seed("cross_same_height", seed))
    h, w, t = 480, 832, 48
    u = np.linspace(0, 1, t)
    people = [
        _Person(0.2 * w + 0.6 * w * u, np.full(t, 0.9 * h), np.full(t, 0.55 * h), 0.0),
        _Person(0.8 * w - 0.6 * w * u, np.full(t, 0.88 * h), np.full(t, 0.55 * h), 2.0),
    ]
    return _scenario("cross_same_height", "two people of the same height and depth cross at constant speed",
                     people, h, w, rng)


def cross_group(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(_seed("cross_group", seed))
    h, w, t = 480, 832, 90
    u = np.linspace(0, 1, t)
    lin = lambda a, b, lo, hi: a + (b - a) * _ease(np.clip((u - lo) / (hi - lo), 0, 1))  # noqa: E731
    people = [
        _Person(lin(0.1 * w, 0.55 * w, 0.0, 0.6), np.full(t, 0.93 * h), np.full(t, 0.5 * h), rng.uniform(0, 6)),
        _Person(lin(0.45 * w, 0.12 * w, 0.1, 0.6), np.full(t, 0.86 * h), np.full(t, 0.46 * h), rng.uniform(0, 6)),
        _Person(lin(0.6 * w, 0.9 * w, 0.4, 1.0), np.full(t, 0.8 * h), np.full(t, 0.42 * h), rng.uniform(0, 6)),
        _Person(lin(0.9 * w, 0.35 * w, 0.35, 0.95), np.full(t, 0.9 * h), np.full(t, 0.48 * h), rng.uniform(0, 6)),
    ]
    return _scenario("cross_group", "four people, two crossings at different times and depths",
                     people, h, w, rng)


def swap_circle(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(_seed("swap_circle", seed))
    h, w, t = 480, 832, 96
    ang = np.linspace(0, 2 * np.pi, t)
    people = []
    for k in range(2):
        a = ang + k * np.pi
        depth = np.sin(a)  # +1 near, -1 far
        people.append(_Person(0.5 * w + 0.2 * w * np.cos(a), 0.84 * h + 0.06 * h * depth,
                              0.5 * h * (1 + 0.12 * depth), rng.uniform(0, 6), "dance"))
    return _scenario("swap_circle", "two dancers circle each other and swap sides twice (curved paths)",
                     people, h, w, rng)


def occlusion(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(_seed("occlusion", seed))
    h, w, t = 480, 832, 72
    u = np.linspace(0, 1, t)
    people = [
        _Person(np.full(t, 0.5 * w), np.full(t, 0.93 * h), np.full(t, 0.6 * h), rng.uniform(0, 6), "dance"),
        _Person(0.25 * w + 0.5 * w * u, np.full(t, 0.82 * h), np.full(t, 0.5 * h), rng.uniform(0, 6)),
        _Person(np.full(t, 0.85 * w), np.full(t, 0.9 * h), np.full(t, 0.55 * h), rng.uniform(0, 6), "dance"),
    ]
    return _scenario("occlusion", "one person walks behind a dancer and is not detected for several frames",
                     people, h, w, rng)


def exit_reenter(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(_seed("exit_reenter", seed))
    h, w, t = 480, 832, 120
    tt = np.arange(t)

    def out_and_back(start, edge_x, t_out0, t_out1, t_back0, t_back1):
        x = np.full(t, float(start))
        x = np.where(tt >= t_out0, start + (edge_x - start) * np.clip((tt - t_out0) / (t_out1 - t_out0), 0, 1), x)
        back = np.clip((tt - t_back0) / (t_back1 - t_back0), 0, 1)
        return np.where(tt >= t_back0, edge_x + (start - edge_x) * back, x)

    people = [
        _Person(out_and_back(0.2 * w, -0.25 * w, 5, 30, 70, 95), np.full(t, 0.9 * h), np.full(t, 0.5 * h), rng.uniform(0, 6)),
        _Person(np.full(t, 0.5 * w), np.full(t, 0.88 * h), np.full(t, 0.5 * h), rng.uniform(0, 6), "dance"),
        _Person(out_and_back(0.8 * w, 1.25 * w, 20, 40, 60, 85), np.full(t, 0.86 * h), np.full(t, 0.48 * h), rng.uniform(0, 6)),
    ]
    return _scenario("exit_reenter", "two people leave (left, right), stay out 20-40 frames and come back",
                     people, h, w, rng)


def dropped(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(_seed("dropped", seed))
    h, w, t = 480, 832, 100
    u = np.linspace(0, 1, t)
    people = [
        _Person((0.12 + 0.19 * k) * w + 0.04 * w * np.sin(2 * np.pi * u * (1 + k % 2) + k), np.full(t, (0.86 + 0.02 * (k % 2)) * h),
                np.full(t, 0.45 * h), rng.uniform(0, 6), "dance" if k % 2 else "walk")
        for k in range(5)
    ]
    return _scenario("dropped", "five people, 25% of detections dropped at random (runs up to 6 frames)",
                     people, h, w, rng, drop=0.25, max_drop_run=6)


def false_positives(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(_seed("false_positives", seed))
    h, w, t = 480, 832, 80
    u = np.linspace(0, 1, t)
    people = [
        _Person(0.2 * w + 0.25 * w * u, np.full(t, 0.9 * h), np.full(t, 0.5 * h), rng.uniform(0, 6)),
        _Person(np.full(t, 0.6 * w), np.full(t, 0.86 * h), np.full(t, 0.5 * h), rng.uniform(0, 6), "dance"),
        _Person(0.9 * w - 0.15 * w * u, np.full(t, 0.88 * h), np.full(t, 0.5 * h), rng.uniform(0, 6)),
    ]
    return _scenario("false_positives", "three people and ~1 spurious detection per frame (1-2 frames each)",
                     people, h, w, rng, false_rate=1.0)


def noisy_crowd(seed: int = 0, num_people: int = 9, num_frames: int = 120, drop: float = 0.05,
                false_rate: float = 0.2, noise: float = 0.02) -> Scenario:
    """`num_people` dancers in a row drifting a little (also the benchmark input)."""
    rng = np.random.default_rng(_seed("noisy_crowd", seed))
    h, w, t = 480, 832, num_frames
    u = np.arange(t) / 60.0
    spacing = w / num_people
    size = min(0.5 * h, 1.2 * spacing / 0.6)
    people = [
        _Person((k + 0.5) * spacing + 0.15 * spacing * np.sin(2 * np.pi * 0.3 * u + 1.3 * k),
                np.full(t, (0.88 + 0.03 * (k % 3)) * h), np.full(t, size), rng.uniform(0, 6), "dance")
        for k in range(num_people)
    ]
    return _scenario("noisy_crowd", f"{num_people} dancers side by side, noisy points, drops and spurious boxes",
                     people, h, w, rng, drop=drop, false_rate=false_rate, noise=noise)


# ---- procedural scenes ------------------------------------------------------------------

def from_scene(scenario: str, num_characters: int = 3, num_frames: int = 33, height: int = 128,
               width: int = 192, seed: int = 0) -> Scenario:
    """Detections = a `make_scene` clip's exact keypoints and boxes, shuffled per frame."""
    scene = make_scene(num_characters, num_frames, height, width, seed=seed, scenario=scenario)
    rng = np.random.default_rng(_seed("scene_" + scenario, seed))
    kps, boxes = scene.keypoints.numpy(), scene.track_boxes.numpy()
    # A detector needs some of the body: slivers at the frame edge (< 4 points inside) are not found.
    in_frame = ~np.isnan(boxes).any(-1) & ((kps[..., 2] > 0).sum(-1) >= _MIN_POINTS)
    frames, ids = [], []
    for t in range(num_frames):
        who = np.flatnonzero(in_frame[:, t])
        who = who[rng.permutation(len(who))]
        if len(who) == 0:
            frames.append(FramePoses.empty())
            ids.append(np.zeros(0, np.int64))
            continue
        kp = np.zeros((len(who), NUM_KEYPOINTS, 3), np.float32)
        kp[:, :BODY_POINTS] = kps[who, t]
        frames.append(FramePoses(torch.from_numpy(kp), torch.from_numpy(boxes[who, t].copy()),
                                 torch.full((len(who),), 0.9)))
        ids.append(who.astype(np.int64))
    name = f"scene_{scenario}{num_characters}"
    return Scenario(name, f"procedural scene '{scenario}', {num_characters} characters", PoseSequence(frames, height, width),
                    ids, in_frame)


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "scene_crossing3": lambda seed=0: from_scene("crossing", 3, 33, seed=seed),
    "scene_crossing5": lambda seed=0: from_scene("crossing", 5, 41, 128, 320, seed=seed),
    "scene_exit_reenter3": lambda seed=0: from_scene("exit_reenter", 3, 33, seed=seed),
    "scene_static4": lambda seed=0: from_scene("static", 4, 17, 128, 256, seed=seed),
    "cross_two": cross_two,
    "cross_same_height": cross_same_height,
    "cross_group": cross_group,
    "swap_circle": swap_circle,
    "occlusion": occlusion,
    "exit_reenter": exit_reenter,
    "dropped": dropped,
    "false_positives": false_positives,
    "noisy_crowd": noisy_crowd,
}


def make_scenario(name: str, seed: int = 0) -> Scenario:
    """One scenario by name (see SCENARIOS)."""
    if name not in SCENARIOS:
        raise AnyCrowdError(f"Unknown tracking scenario {name!r}; choose one of {', '.join(SCENARIOS)}.")
    return SCENARIOS[name](seed)
