"""POSE_KEYPOINT (comfyui_controlnet_aux / OpenPose JSON) in and out, so poses from other packs
can drive AnyCrowd and our tracks can be edited and exported. Accepts pixel or normalised
coordinates, missing parts, BODY_25 bodies and points outside the frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import AnyCrowdError
from .types import (
    BODY, BODY_POINTS, FACE, FACE_POINTS, HAND_POINTS, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND,
    FramePoses, PoseSequence, PoseTracks,
)

COORDS = ("auto", "pixel", "normalized")
# Normalised files may hold points a little outside the frame; pixel files never have every
# point inside a 1.5 x 1.5 px corner, so this threshold separates the two conventions.
_NORMALIZED_LIMIT = 1.5
# BODY_25 (OpenPose) -> COCO-18: drop MidHip (8) and the 6 foot points.
_BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_PARTS = (
    ("face_keypoints_2d", FACE, FACE_POINTS),
    ("hand_left_keypoints_2d", LEFT_HAND, HAND_POINTS),
    ("hand_right_keypoints_2d", RIGHT_HAND, HAND_POINTS),
)


def _flat(values: np.ndarray) -> list[float]:
    return [float(v) for v in values.reshape(-1)]


def _person_dict(kp: np.ndarray, height: int, width: int, normalized: bool, keep_confidence: bool) -> dict:
    """One person `[128, 3]` px -> controlnet_aux person dict (flat [x, y, c] lists)."""
    out = kp.astype(np.float64).copy()
    valid = out[:, 2] > 0
    if normalized:
        out[:, 0] /= width
        out[:, 1] /= height
    # controlnet_aux writes c = 1.0 for every kept point and its readers drop c < 1.0.
    out[:, 2] = np.where(valid, out[:, 2] if keep_confidence else 1.0, 0.0)
    out[~valid] = 0.0
    person: dict[str, Any] = {"pose_keypoints_2d": _flat(out[BODY])}
    for key, part, _ in _PARTS:
        pts = out[part]
        if not valid[part].any():
            person[key] = None
            continue
        if key == "face_keypoints_2d":
            # OpenPose faces have 70 points: controlnet_aux appends the body eyes (14, 15) as pupils.
            pts = np.concatenate([pts, out[[14, 15]]], axis=0)
        person[key] = _flat(pts)
    return person


def tracks_to_pose_keypoint(
    tracks: PoseTracks,
    normalized: bool = False,
    *,
    keep_confidence: bool = False,
    keep_absent: bool = True,
) -> list[dict]:
    """Tracks -> POSE_KEYPOINT: one dict per frame {"people": [...], "canvas_width", "canvas_height"}.

    Coordinates in pixels (as controlnet_aux's DWPose writes) or divided by the canvas size
    with `normalized=True`. Confidence 1.0 for every present point unless `keep_confidence`
    (controlnet_aux readers drop points with c < 1). Each person carries an extra "track_id"
    key and an "anycrowd_box" key (its xyxy person box, same units; other packs ignore both)
    and, with `keep_absent`, absent tracks stay in the list as all-zero bodies so list
    positions stay identities too. `pose_keypoint_to_tracks` reads it all back.
    """
    kp = tracks.keypoints.detach().cpu().double().numpy()
    boxes = tracks.boxes.detach().cpu().double().numpy()
    present = tracks.present.detach().cpu().numpy().astype(bool)
    ids = list(tracks.track_ids) or list(range(tracks.num_tracks))
    height, width = int(tracks.height), int(tracks.width)
    frames = []
    for f in range(tracks.num_frames):
        people = []
        for i in range(tracks.num_tracks):
            person_kp = kp[i, f] if present[i, f] else np.zeros((NUM_KEYPOINTS, 3))
            if not present[i, f] and not keep_absent:
                continue
            person = _person_dict(person_kp, height, width, normalized, keep_confidence)
            person["track_id"] = int(ids[i])
            box = boxes[i, f]
            if present[i, f] and np.isfinite(box).all():
                scale = np.array([width, height, width, height], np.float64) if normalized else 1.0
                person["anycrowd_box"] = _flat(box / scale)
            people.append(person)
        frames.append({"people": people, "canvas_width": width, "canvas_height": height})
    return frames


def _load(data) -> list[dict]:
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise AnyCrowdError(
                f"POSE_KEYPOINT text is not valid JSON ({exc}); pass the list the pose node outputs."
            ) from exc
    if isinstance(data, dict):  # a single frame
        data = [data]
    if not isinstance(data, (list, tuple)) or not all(isinstance(f, dict) for f in data):
        raise AnyCrowdError(
            "POSE_KEYPOINT must be a list with one dict per frame ({'people': [...], 'canvas_width', "
            f"'canvas_height'}}), got {type(data).__name__}. Connect the POSE_KEYPOINT output of a pose node."
        )
    if not data:
        raise AnyCrowdError("POSE_KEYPOINT is empty (no frames): run the pose node on at least one frame.")
    return list(data)


def _points(values, count: int, where: str) -> np.ndarray | None:
    """A flat or nested [x, y, c] list -> `[count, 3]`, None when missing (None / empty)."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return None
    if arr.size % 3:
        raise AnyCrowdError(f"{where}: {arr.size} numbers is not a list of (x, y, confidence) triples.")
    arr = arr.reshape(-1, 3)
    if where.endswith("pose_keypoints_2d") and arr.shape[0] == 25:
        return arr[list(_BODY25_TO_COCO18)]
    if where.endswith("face_keypoints_2d") and arr.shape[0] in (FACE_POINTS, FACE_POINTS + 2):
        return arr[:FACE_POINTS]  # drop the 2 pupils: our layout has the eyes in the body
    if arr.shape[0] != count:
        expected = {"pose_keypoints_2d": "18 (COCO-18) or 25 (BODY_25)", "face_keypoints_2d": "68 or 70"}
        exp = next((v for k, v in expected.items() if where.endswith(k)), str(count))
        raise AnyCrowdError(f"{where}: {arr.shape[0]} points, expected {exp}. Check the pose node's output format.")
    return arr


def _person_points(person: dict, where: str) -> np.ndarray:
    """One person dict -> `[128, 3]` in the file's own units (missing points all zero)."""
    if not isinstance(person, dict):
        raise AnyCrowdError(f"{where}: a person must be a dict with 'pose_keypoints_2d', got {type(person).__name__}.")
    kp = np.zeros((NUM_KEYPOINTS, 3))
    body = _points(person.get("pose_keypoints_2d"), BODY_POINTS, f"{where} pose_keypoints_2d")
    if body is not None:
        kp[BODY] = body
    for key, part, count in _PARTS:
        pts = _points(person.get(key), count, f"{where} {key}")
        if pts is not None:
            kp[part] = pts
    kp[~np.isfinite(kp).all(-1)] = 0.0
    kp[kp[:, 2] <= 0] = 0.0
    return kp


def _canvas(height, width, frame: int) -> tuple[int, int]:
    """A frame's (canvas_height, canvas_width) as positive whole pixels."""
    try:
        h, w = float(height), float(width)
    except (TypeError, ValueError):
        h = w = float("nan")
    if not (math.isfinite(h) and math.isfinite(w) and h >= 1 and w >= 1):
        raise AnyCrowdError(
            f"POSE_KEYPOINT frame {frame} has canvas {width!r}x{height!r} (width x height); a canvas is positive "
            "whole pixels: fix the node that wrote the keypoints, or remove canvas_width/canvas_height."
        )
    return int(h), int(w)


def _box_of_person(person: dict, where: str) -> np.ndarray:
    """The person's "anycrowd_box" `[4]` in the file's units; NaN when it has none."""
    value = person.get("anycrowd_box") if isinstance(person, dict) else None
    if value is None:
        return np.full(4, np.nan)
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != 4 or not np.isfinite(arr).all():
        raise AnyCrowdError(f"{where} anycrowd_box: expected 4 finite numbers [x0, y0, x1, y1], got {value!r}.")
    return arr


def _parse(data, coords: str, height: int | None, width: int | None):
    """-> (per-frame list of (people `[P, 128, 3]` px, track ids or None), H, W, per-frame
    stored boxes `[P, 4]` px, NaN where a person has none)."""
    if coords not in COORDS:
        raise AnyCrowdError(f"Unknown coordinate convention {coords!r}; use one of {', '.join(COORDS)}.")
    frames = _load(data)
    raw, canvases, ids, stored = [], [], [], []
    for t, frame in enumerate(frames):
        people = frame.get("people") or []
        stored.append(np.stack([_box_of_person(p, f"frame {t} person {i}") for i, p in enumerate(people)])
                      if people else np.zeros((0, 4)))
        raw.append(np.stack([_person_points(p, f"frame {t} person {i}") for i, p in enumerate(people)])
                   if people else np.zeros((0, NUM_KEYPOINTS, 3)))
        ids.append([p.get("track_id") for p in people])
        ch, cw = frame.get("canvas_height"), frame.get("canvas_width")
        canvases.append(_canvas(ch, cw, t) if ch and cw else None)

    valid = [r[r[..., 2] > 0][:, :2] for r in raw]
    allv = np.concatenate(valid) if valid else np.zeros((0, 2))
    if coords == "auto":
        normalized = allv.size > 0 and float(np.abs(allv).max()) <= _NORMALIZED_LIMIT
    else:
        normalized = coords == "normalized"

    known = [c for c in canvases if c is not None]
    out_h = int(height) if height else (known[0][0] if known else None)
    out_w = int(width) if width else (known[0][1] if known else None)
    if out_h is None or out_w is None:
        raise AnyCrowdError(
            "POSE_KEYPOINT frames have no 'canvas_height'/'canvas_width': give the video size "
            "(height and width) so the keypoints can be placed."
        )
    result, boxes = [], []
    for t, r in enumerate(raw):
        r = r.copy()
        src_h, src_w = canvases[t] if canvases[t] is not None else (out_h, out_w)
        # Normalised: multiply by the output size. Pixels: rescale from the frame's canvas.
        sx, sy = (out_w, out_h) if normalized else (out_w / src_w, out_h / src_h)
        v = r[..., 2] > 0
        r[..., 0] = np.where(v, r[..., 0] * sx, 0.0)
        r[..., 1] = np.where(v, r[..., 1] * sy, 0.0)
        result.append((r, ids[t]))
        boxes.append(stored[t] * np.array([sx, sy, sx, sy]))
    return result, out_h, out_w, boxes


def keypoint_boxes(keypoints: np.ndarray, height: int, width: int, padding: float = 0.1) -> np.ndarray:
    """xyxy px boxes `[..., 4]` of keypoints `[..., K, 3]`: the extent of the confident points
    grown by `padding` x its height on every side (keypoints miss hair, hands, clothes),
    clipped to the frame; NaN where no point is confident."""
    kp = np.asarray(keypoints, dtype=np.float64)
    v = kp[..., 2] > 0
    big = np.inf
    x0 = np.where(v, kp[..., 0], big).min(-1)
    y0 = np.where(v, kp[..., 1], big).min(-1)
    x1 = np.where(v, kp[..., 0], -big).max(-1)
    y1 = np.where(v, kp[..., 1], -big).max(-1)
    pad = padding * np.maximum(y1 - y0, x1 - x0)
    boxes = np.stack([x0 - pad, y0 - pad, x1 + pad + 1, y1 + pad + 1], -1)
    boxes[..., 0::2] = boxes[..., 0::2].clip(0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clip(0, height)
    empty = ~v.any(-1) | (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
    boxes[empty] = np.nan
    return boxes


def pose_keypoint_to_sequence(
    data,
    *,
    coords: str = "auto",
    height: int | None = None,
    width: int | None = None,
    box_padding: float = 0.1,
) -> PoseSequence:
    """POSE_KEYPOINT -> per-frame detections (people unordered; the tracker assigns ids).

    coords: "auto" (normalised when every confident coordinate is within 1.5 in absolute
    value, else pixels), "pixel" or "normalized". height/width: output canvas size
    (default: the first frame's canvas); pixel coordinates are rescaled from each frame's
    canvas. People without any confident point are skipped; boxes are the keypoints'
    extent (see `keypoint_boxes`), scores the mean confidence of their points.
    """
    frames, out_h, out_w, _ = _parse(data, coords, height, width)
    out = []
    for people, _ in frames:
        keep = (people[..., 2] > 0).any(-1)
        people = people[keep]
        boxes = keypoint_boxes(people, out_h, out_w, box_padding)
        keep2 = np.isfinite(boxes).all(-1)  # everything outside the frame: not a detection
        people, boxes = people[keep2], boxes[keep2]
        conf = people[..., 2]
        scores = np.where(conf > 0, conf, 0).sum(-1) / np.maximum((conf > 0).sum(-1), 1)
        out.append(FramePoses(
            keypoints=torch.from_numpy(people).float(),
            boxes=torch.from_numpy(boxes).float(),
            scores=torch.from_numpy(scores).float(),
        ))
    return PoseSequence(frames=out, height=out_h, width=out_w)


def pose_keypoint_to_tracks(
    data,
    *,
    coords: str = "auto",
    height: int | None = None,
    width: int | None = None,
    box_padding: float = 0.1,
) -> PoseTracks:
    """POSE_KEYPOINT whose people keep their identity -> tracks, without a tracker.

    Identity: the "track_id" of each person when every person has one (what
    `tracks_to_pose_keypoint` writes), otherwise the position in the frame's list (person i
    is track i in every frame). Use `pose_keypoint_to_sequence` + the tracker when neither holds.
    Boxes: the stored "anycrowd_box" where every person with points has one (our own export:
    the tracks come back as they were saved), else the keypoints' extent (`keypoint_boxes`).
    """
    frames, out_h, out_w, stored = _parse(data, coords, height, width)
    t = len(frames)
    use_ids = all(i is not None for _, ids in frames for i in ids) and any(ids for _, ids in frames)
    if use_ids:
        track_ids: Sequence[int] = sorted({int(i) for _, ids in frames for i in ids})
    else:
        track_ids = list(range(max((len(p) for p, _ in frames), default=0)))
    slot = {tid: k for k, tid in enumerate(track_ids)}
    m = len(track_ids)
    kp = np.zeros((m, t, NUM_KEYPOINTS, 3))
    given = np.full((m, t, 4), np.nan)
    for f, (people, ids) in enumerate(frames):
        if use_ids and len({int(i) for i in ids}) != len(ids):
            raise AnyCrowdError(
                f"frame {f}: two people share a track_id ({sorted(int(i) for i in ids)}); give each "
                "person of a frame its own track_id, or remove the track_id keys to use list order."
            )
        for i, person in enumerate(people):
            k = slot[int(ids[i])] if use_ids else i
            kp[k, f] = person
            given[k, f] = stored[f][i]
    boxes = keypoint_boxes(kp, out_h, out_w, box_padding)
    with_points = (kp[..., 2] > 0).any(-1)
    if with_points.any() and np.isfinite(given[with_points]).all():
        boxes = given
    present = np.isfinite(boxes).all(-1)
    kp[~present] = 0.0
    return PoseTracks(
        keypoints=torch.from_numpy(kp).float(),
        boxes=torch.from_numpy(boxes).float(),
        present=torch.from_numpy(present),
        height=out_h,
        width=out_w,
        track_ids=[int(i) for i in track_ids],
    )


def save_tracks_json(tracks: PoseTracks, path) -> None:
    """Write `tracks` as POSE_KEYPOINT JSON (pixels, confidences, track ids, boxes, absent
    tracks kept): `load_tracks_json` gives the same tracks back, so a tracked clip is never
    tracked again; other packs read the file as ordinary POSE_KEYPOINT."""
    from ..files import write_text_atomic

    data = tracks_to_pose_keypoint(tracks, keep_confidence=True, keep_absent=True)
    write_text_atomic(path, json.dumps(data))


def load_tracks_json(path, *, height: int | None = None, width: int | None = None) -> PoseTracks:
    """Tracks from a POSE_KEYPOINT JSON file (ours, or any pack's with track_id keys or a fixed
    person order; see `pose_keypoint_to_tracks`), placed on height x width (default: its canvas)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise AnyCrowdError(f"Cannot read the tracks file {str(path)!r} ({exc.strerror or exc}): give the path of a "
                            "tracks JSON written by --save-tracks or a POSE_KEYPOINT export.") from None
    return pose_keypoint_to_tracks(text, height=height, width=width)
