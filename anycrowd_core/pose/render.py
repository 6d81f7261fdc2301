"""OpenPose-style pose rendering: the VACE control video, single frames, and the per-identity
preview users look at to check tracking and binding. The one renderer of the project
(`scenes.py` draws its pose video with it too); details and sizes in docs/pose_rendering_binding.md.
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np
import torch
from torch import Tensor

from ..errors import AnyCrowdError
from .types import BODY_POINTS, FACE_POINTS, HAND_POINTS, FramePoses, PoseSequence, PoseTracks

# OpenPose / COCO-18 limb pairs (0-based) and colours (RGB), as controlnet_aux `draw_bodypose`.
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
LIMB_DIM = 0.6  # controlnet_aux draws limbs at 60% of the joint colour
# Hand skeleton (21 points, wrist = 0) and its rainbow edge colours (hue = edge / 20), as
# controlnet_aux `draw_handpose`; hand joints are blue, face landmarks white.
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
HAND_EDGE_COLORS = tuple(
    tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
    for i in range(len(HAND_EDGES))
)
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)

# One-to-All's "lightened" head signal (§3.3): head joints and the limbs touching them.
HEAD_JOINTS = (0, 14, 15, 16, 17)  # nose, eyes, ears
LIGHT_FACTOR = 0.35
_HEAD_LIMBS = frozenset(i for i, (a, b) in enumerate(OPENPOSE_LIMBS) if a in HEAD_JOINTS or b in HEAD_JOINTS)

_FACE0 = BODY_POINTS
_LHAND0 = BODY_POINTS + FACE_POINTS
_RHAND0 = _LHAND0 + HAND_POINTS


def stroke_sizes(height: int, width: int) -> dict[str, int]:
    """Pixel sizes of the drawing at an H x W canvas: controlnet_aux's sizes at 512 px on the
    short side (limb half-width and body joint radius 4, hand lines 2, hand joints 4, face dots
    3), scaled linearly with min(H, W) / 512 and never below 1 px."""
    s = min(height, width) / 512.0
    size = lambda v: max(1, int(round(v * s)))  # noqa: E731
    return {"stick": size(4), "joint": size(4), "hand_line": size(2), "hand_joint": size(4), "face": size(3)}


def identity_colors(n: int) -> list[tuple[int, int, int]]:
    """`n` well separated, bright RGB colours (golden-ratio hue steps), stable for a given index."""
    out = []
    for i in range(n):
        h = (0.03 + i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85 if i % 2 == 0 else 0.6, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _as_numpy_keypoints(kp, what: str) -> np.ndarray:
    if isinstance(kp, Tensor):
        kp = kp.detach().cpu().float().numpy()
    kp = np.asarray(kp, dtype=np.float64)
    if kp.ndim < 2 or kp.shape[-1] != 3 or kp.shape[-2] not in (BODY_POINTS, 128):
        raise AnyCrowdError(
            f"{what} must be [..., 18 or 128, 3] keypoints (x px, y px, confidence), got shape "
            f"{tuple(kp.shape)}. Use the 128-point layout of anycrowd_core.pose.types."
        )
    return kp


def _draw_person(
    canvas: np.ndarray,
    kp: np.ndarray,
    sizes: dict[str, int],
    draw_body: bool,
    draw_hands: bool,
    draw_face: bool,
    light_head: bool,
) -> None:
    """Draw one person's keypoints `[18 or 128, 3]` (px) onto uint8 RGB `canvas` in place.

    Order and styles follow controlnet_aux: body limbs, body joints, hands, face.
    """
    valid = kp[:, 2] > 0
    pts = np.rint(kp[:, :2]).astype(np.int64)
    # cv2 wants Python ints; clamp far-off points so drawing a limb that leaves the frame
    # stays cheap and never overflows cv2's int coordinates.
    pts = np.clip(pts, -(1 << 20), 1 << 20).tolist()
    stick, joint = sizes["stick"], sizes["joint"]

    if draw_body:
        for i, (a, b) in enumerate(OPENPOSE_LIMBS):
            if not (valid[a] and valid[b]):
                continue
            factor = LIMB_DIM * (LIGHT_FACTOR if light_head and i in _HEAD_LIMBS else 1.0)
            color = tuple(int(c * factor) for c in OPENPOSE_COLORS[i])
            (xa, ya), (xb, yb) = pts[a], pts[b]
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            poly = cv2.ellipse2Poly(
                ((xa + xb) // 2, (ya + yb) // 2), (int(length / 2), stick), int(round(angle)), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, poly, color)
        for j in range(BODY_POINTS):
            if valid[j]:
                # One-to-All's lightened rendering paints the head joints with intensity 0.
                color = (0, 0, 0) if light_head and j in HEAD_JOINTS else OPENPOSE_COLORS[j]
                cv2.circle(canvas, tuple(pts[j]), joint, color, -1)

    if kp.shape[0] == BODY_POINTS:
        return
    if draw_hands:
        line, hj = sizes["hand_line"], sizes["hand_joint"]
        for start in (_LHAND0, _RHAND0):
            hv = valid[start : start + HAND_POINTS]
            if not hv.any():
                continue
            for e, (a, b) in enumerate(HAND_EDGES):
                if hv[a] and hv[b]:
                    cv2.line(canvas, tuple(pts[start + a]), tuple(pts[start + b]), HAND_EDGE_COLORS[e], line)
            for j in range(HAND_POINTS):
                if hv[j]:
                    cv2.circle(canvas, tuple(pts[start + j]), hj, HAND_JOINT_COLOR, -1)
    if draw_face:
        fv = valid[_FACE0 : _FACE0 + FACE_POINTS]
        if fv.any():
            g = int(255 * LIGHT_FACTOR) if light_head else 255
            color, r = (g, g, g), sizes["face"]
            for j in range(FACE_POINTS):
                if fv[j]:
                    cv2.circle(canvas, tuple(pts[_FACE0 + j]), r, color, -1)
            # controlnet_aux's 70-point face ends with the two body eyes as pupils: draw them too.
            for j in (14, 15):
                if valid[j]:
                    cv2.circle(canvas, tuple(pts[j]), r, color, -1)


def draw_people(
    canvas: np.ndarray,
    keypoints,
    *,
    draw_body: bool = True,
    draw_hands: bool = True,
    draw_face: bool = True,
    light_head: bool = False,
) -> np.ndarray:
    """Draw people `[P, 18 or 128, 3]` (px, confidence 0 = skip) onto a uint8 `[H, W, 3]` RGB
    canvas in place and return it. People are drawn in the given order."""
    kp = _as_numpy_keypoints(keypoints, "keypoints")
    if kp.ndim == 2:
        kp = kp[None]
    sizes = stroke_sizes(canvas.shape[0], canvas.shape[1])
    for person in kp:
        if (person[:, 2] > 0).any():
            _draw_person(canvas, person, sizes, draw_body, draw_hands, draw_face, light_head)
    return canvas


def _to_float(frames_u8: np.ndarray) -> Tensor:
    # One conversion for the whole stack: uint8 -> float32 0..1.
    return torch.from_numpy(frames_u8).to(torch.float32).div_(255.0)


def render_pose_frame(
    keypoints,
    height: int,
    width: int,
    **options,
) -> Tensor:
    """One frame `[H, W, 3]` float 0..1 of people `[P, 18 or 128, 3]` on black (see `draw_people`)."""
    canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    return _to_float(draw_people(canvas, keypoints, **options))


def render_frame_poses(frame: FramePoses, height: int, width: int, **options) -> Tensor:
    """`render_pose_frame` of a detector frame (`FramePoses`)."""
    return render_pose_frame(frame.keypoints, height, width, **options)


def render_pose_sequence(sequence: PoseSequence, **options) -> Tensor:
    """`[T, H, W, 3]` float 0..1 of untracked per-frame detections."""
    out = np.zeros((len(sequence.frames), sequence.height, sequence.width, 3), dtype=np.uint8)
    for t, frame in enumerate(sequence.frames):
        if frame.num_people:
            draw_people(out[t], frame.keypoints, **options)
    return _to_float(out)


def render_pose_video(
    tracks: PoseTracks,
    *,
    draw_body: bool = True,
    draw_hands: bool = True,
    draw_face: bool = True,
    light_head: bool = False,
) -> Tensor:
    """The VACE control video `[T, H, W, 3]` float 0..1: every track's skeleton on black,
    OpenPose colours (controlnet_aux style), tracks drawn in their order.

    light_head: One-to-All's lightened head/face signal (nose/eye/ear limbs at 35%
    intensity, those joints blacked out, face landmarks 35% gray instead of white).
    """
    kp = _as_numpy_keypoints(tracks.keypoints, "tracks.keypoints")
    if kp.ndim != 4:
        raise AnyCrowdError(f"tracks.keypoints must be [M, T, K, 3], got shape {tuple(kp.shape)}.")
    m, t = kp.shape[:2]
    present = tracks.present.detach().cpu().numpy().astype(bool) if m else np.zeros((0, t), bool)
    height, width = int(tracks.height), int(tracks.width)
    sizes = stroke_sizes(height, width)
    visible = present & (kp[..., 2] > 0).any(-1)
    out = np.zeros((t, height, width, 3), dtype=np.uint8)
    for f in range(t):
        for i in range(m):
            if visible[i, f]:
                _draw_person(out[f], kp[i, f], sizes, draw_body, draw_hands, draw_face, light_head)
    return _to_float(out)


def _label(canvas: np.ndarray, text: str, org: tuple[int, int], color, scale: float, thick: int) -> None:
    # Dark outline under the coloured text so labels read on any background.
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def render_identity_preview(
    frames,
    tracks: PoseTracks,
    binding=None,
    *,
    dim: float = 0.45,
    frame_numbers: bool = True,
) -> Tensor:
    """Preview `[T, H, W, 3]` float 0..1 for checking tracking and binding: the video (0..1
    floats or uint8) dimmed to `dim` (black without `frames`), each track's skeleton and box in its own colour, labelled
    with its track id ("T2"), and (frame_numbers) the frame number in the top-left corner, the
    F of a track edit such as "swap 0 1 @F". With a `binding` (see `binding.Binding`): colour per identity,
    labels like "A T2" (identity A on track 2; "B T0+0.3w" for a shifted copy), and the
    tracks no identity uses in gray, labelled "T1 unbound".
    """
    layers = []  # (tracks, colours, labels)
    if binding is not None:
        palette = identity_colors(max(binding.num_identities, 1))
        if binding.unbound:
            idx = torch.tensor(binding.unbound, dtype=torch.long)
            ids = tracks.track_ids or list(range(tracks.num_tracks))
            rest = PoseTracks(tracks.keypoints[idx], tracks.boxes[idx], tracks.present[idx],
                              tracks.height, tracks.width)
            layers.append((rest, [(150, 150, 150)] * len(idx), [f"T{ids[i]} unbound" for i in binding.unbound]))
        layers.append((binding.tracks, [palette[k] for k in binding.identities], binding.labels()))
    else:
        ids = tracks.track_ids or list(range(tracks.num_tracks))
        layers.append((tracks, identity_colors(max(tracks.num_tracks, 1)), [f"T{i}" for i in ids]))
    height, width, t = int(tracks.height), int(tracks.width), tracks.num_frames
    if frames is not None:
        raw = frames.detach().cpu() if isinstance(frames, Tensor) else torch.as_tensor(np.asarray(frames))
        f = raw.float() / 255.0 if raw.dtype == torch.uint8 else raw.float()  # uint8 video or 0..1 floats
        if f.dim() != 4 or tuple(f.shape[:3]) != (t, height, width):
            raise AnyCrowdError(
                f"The preview video must be [T, H, W, 3] = [{t}, {height}, {width}, 3] like the tracks, "
                f"got {tuple(f.shape)}. Pass the same driving video the tracks were extracted from."
            )
        out = f[..., :3].mul(255.0 * dim).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()
    else:
        out = np.zeros((t, height, width, 3), dtype=np.uint8)

    sizes = stroke_sizes(height, width)
    stick, joint = max(1, sizes["stick"] // 2), max(1, sizes["joint"] - 1)
    font = max(0.35, min(height, width) / 650.0)  # ids must stay readable: the user writes edits from them
    thick = max(1, int(round(font * 2)))
    for show, colors, names in layers:
        kp = _as_numpy_keypoints(show.keypoints, "tracks.keypoints")
        boxes = show.boxes.detach().cpu().float().numpy()
        present = show.present.detach().cpu().numpy().astype(bool)
        for f in range(t):
            canvas = out[f]
            for i in range(show.num_tracks):
                if not present[i, f]:
                    continue
                color = colors[i]
                p = kp[i, f]
                valid = p[:, 2] > 0
                pts = np.clip(np.rint(p[:, :2]), -(1 << 20), 1 << 20).astype(np.int64).tolist()
                for a, b in OPENPOSE_LIMBS:
                    if valid[a] and valid[b]:
                        cv2.line(canvas, tuple(pts[a]), tuple(pts[b]), color, stick, cv2.LINE_AA)
                for j in range(BODY_POINTS):
                    if valid[j]:
                        cv2.circle(canvas, tuple(pts[j]), joint, color, -1, cv2.LINE_AA)
                box = boxes[i, f]
                if np.isfinite(box).all():
                    x0, y0, x1, y1 = (int(round(v)) for v in box)
                    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), color, 1)
                    ty = y0 - 4 if y0 > 14 * font + 4 else y0 + int(22 * font) + 2
                    _label(canvas, names[i], (max(0, x0 + 2), ty), color, font, thick)
    if frame_numbers:
        for f in range(t):
            _label(out[f], f"frame {f}", (4, int(24 * font) + 2), (255, 255, 255), font, thick)
    return _to_float(out)
