"""Specification of face control (X-Dyna §3.3): face boxes from the 68 landmarks, stabilised
and reused on short misses; driving-video patches on neutral gray; global vs local regions;
the face stream shaped like the pose stream."""

import math

import numpy as np
import pytest
import torch

from anycrowd_core.codec import TestCodec
from anycrowd_core.decoupler import decouple_instances
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.face_control import (
    LEFT_EYE,
    MOUTH,
    NEUTRAL_GRAY,
    RIGHT_EYE,
    face_boxes,
    face_control_video,
)
from anycrowd_core.iilr import encode_control_stream, encode_iilr
from anycrowd_core.pose.render import render_pose_video
from anycrowd_core.pose.types import FACE, NUM_KEYPOINTS, PoseTracks
from anycrowd_core.scenes import make_scene

T, H, W = 9, 64, 96


def face_template() -> np.ndarray:
    """68 iBUG-style landmarks in unit face coordinates: x in [-1, 1], y in [-0.6, 1] (brows to chin)."""
    pts = np.zeros((68, 2))
    theta = np.linspace(math.pi, 0, 17)
    pts[0:17] = np.stack([np.cos(theta), 0.1 + 0.9 * np.sin(theta)], -1)  # jaw
    pts[17:22] = np.stack([np.linspace(-0.8, -0.2, 5), np.full(5, -0.6)], -1)  # brows
    pts[22:27] = np.stack([np.linspace(0.2, 0.8, 5), np.full(5, -0.6)], -1)
    pts[27:31] = np.stack([np.zeros(4), np.linspace(-0.4, 0.25, 4)], -1)  # nose bridge
    pts[31:36] = np.stack([np.linspace(-0.2, 0.2, 5), np.full(5, 0.32)], -1)
    a = np.linspace(0, 2 * math.pi, 6, endpoint=False)
    pts[36:42] = np.stack([-0.45 + 0.18 * np.cos(a), -0.3 + 0.07 * np.sin(a)], -1)  # eyes
    pts[42:48] = np.stack([0.45 + 0.18 * np.cos(a), -0.3 + 0.07 * np.sin(a)], -1)
    a = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    pts[48:60] = np.stack([0.35 * np.cos(a), 0.6 + 0.12 * np.sin(a)], -1)  # mouth
    a = np.linspace(0, 2 * math.pi, 8, endpoint=False)
    pts[60:68] = np.stack([0.2 * np.cos(a), 0.6 + 0.05 * np.sin(a)], -1)
    return pts


def plant_tracks(centres, scale: float = 10.0, present=None) -> PoseTracks:
    """Tracks whose face landmarks are the template at `centres` `[M, T, 2]` px (half-width `scale` px)."""
    centres = np.asarray(centres, dtype=np.float64)
    m, t = centres.shape[:2]
    kp = torch.zeros(m, t, NUM_KEYPOINTS, 3)
    face = face_template()[None, None] * scale + centres[:, :, None, :]
    kp[:, :, FACE, :2] = torch.from_numpy(face).float()
    kp[:, :, FACE, 2] = 0.9
    kp[:, :, 1, :2] = torch.from_numpy(centres).float()  # a neck point, so the pose renders something
    kp[:, :, 1, 2] = 0.9
    present = torch.ones(m, t, dtype=torch.bool) if present is None else torch.as_tensor(present)
    boxes = torch.from_numpy(np.concatenate([centres - 2 * scale, centres + 2 * scale], -1)).float()
    boxes[~present] = float("nan")
    kp[~present] = 0
    return PoseTracks(kp, boxes, present, H, W, list(range(m)))


def static_centres(*points):
    return np.array([[p] * T for p in points], dtype=np.float64)


def driving_video() -> torch.Tensor:
    """Every pixel knows where it is: (x / W, y / H, t / T), never exactly 0.5 gray."""
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([(x + 0.25) / W, (y + 0.25) / H, (t + 0.25) / T], -1).float()


def expected_box(cx, cy, scale=10.0, enlarge=1.5, lift=0.1):
    """Square from the template's extent: x in [-1, 1], y in [-0.6, 1] (times scale)."""
    ext_w, ext_h = 2 * scale, 1.6 * scale
    mid_y = cy + 0.2 * scale - lift * ext_h
    side = enlarge * max(ext_w, ext_h)
    return (cx - side / 2, mid_y - side / 2, cx + side / 2, mid_y + side / 2)


# --- face boxes ---------------------------------------------------------------------------

def test_face_box_is_the_enlarged_square_around_the_planted_landmarks():
    fb = face_boxes(plant_tracks(static_centres((30, 25), (70, 30))), enlarge=1.5)
    assert fb.boxes.shape == (2, T, 4) and fb.landmarks.shape == (2, T, 68, 3)
    for i, (cx, cy) in enumerate([(30, 25), (70, 30)]):
        want = torch.tensor(expected_box(cx, cy)).float()
        torch.testing.assert_close(fb.boxes[i], want.expand(T, 4), atol=1e-4, rtol=0)
    assert fb.observed.all() and not fb.held.any()


def test_face_box_follows_linear_motion_exactly_and_the_median_removes_a_one_frame_jump():
    centres = np.stack([np.linspace(20, 60, T), np.full(T, 28.0)], -1)[None]
    moving = face_boxes(plant_tracks(centres), smooth_frames=5)
    for t in range(T):
        torch.testing.assert_close(moving.boxes[0, t], torch.tensor(expected_box(*centres[0, t])).float(), atol=1e-4, rtol=0)
    jumpy = static_centres((40, 28)).copy()
    jumpy[0, 4] += (6, -5)  # a detector glitch in one frame
    fb = face_boxes(plant_tracks(jumpy), smooth_frames=5)
    torch.testing.assert_close(fb.boxes[0], torch.tensor(expected_box(40, 28)).float().expand(T, 4), atol=1e-4, rtol=0)
    raw = face_boxes(plant_tracks(jumpy), smooth_frames=1)
    assert not torch.allclose(raw.boxes[0, 4], fb.boxes[0, 4])


def test_a_short_miss_reuses_the_last_box_and_a_long_one_or_an_absent_track_has_no_face():
    centres = np.stack([np.linspace(20, 60, T), np.full(T, 28.0)], -1)[None]
    tracks = plant_tracks(centres)
    tracks.keypoints[0, 4:6, FACE, 2] = 0.0  # landmarks lost for 2 frames, person still present
    fb = face_boxes(tracks, smooth_frames=1, max_missing=2)
    assert fb.held[0].tolist() == [False] * 4 + [True, True] + [False] * 3
    assert torch.equal(fb.boxes[0, 4], fb.boxes[0, 3]) and torch.equal(fb.boxes[0, 5], fb.boxes[0, 3])
    assert torch.equal(fb.landmarks[0, 5], fb.landmarks[0, 3])
    short = face_boxes(tracks, smooth_frames=1, max_missing=1)
    assert short.has_face[0].tolist() == [True] * 5 + [False] + [True] * 3
    present = torch.ones(1, T, dtype=torch.bool)
    present[0, 4] = False
    gone = face_boxes(plant_tracks(centres, present=present), smooth_frames=1)
    assert gone.has_face[0].tolist() == [True] * 4 + [False] + [True] * 4


def test_face_boxes_are_clipped_to_the_frame():
    fb = face_boxes(plant_tracks(static_centres((4, 60))), enlarge=2.0)
    b = fb.boxes[0, 0]
    assert b[0] == 0 and b[3] == H and b[2] < W and b[1] > 0


def test_too_few_confident_landmarks_is_no_observation():
    tracks = plant_tracks(static_centres((40, 30)))
    tracks.keypoints[0, :, FACE.start + 4 :, 2] = 0.1  # only 4 confident points
    assert not face_boxes(tracks, min_points=5).has_face.any()
    assert face_boxes(tracks, min_points=4).has_face.all()


# --- the face-control video ---------------------------------------------------------------

def box_pixels(box):
    x0, y0, x1, y1 = box
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[max(math.floor(y0), 0) : math.ceil(y1), max(math.floor(x0), 0) : math.ceil(x1)] = True
    return mask


def test_global_mode_copies_the_driving_pixels_in_every_face_box_and_is_neutral_elsewhere():
    video = driving_video()
    tracks = plant_tracks(static_centres((25, 25), (72, 32)))
    fc = face_control_video(video, tracks, mode="global")
    assert fc.video.shape == (T, H, W, 3) and fc.mask.shape == (T, H, W)
    inside = box_pixels(expected_box(25, 25)) | box_pixels(expected_box(72, 32))
    for t in range(T):
        assert torch.equal(fc.video[t][inside], video[t][inside])
        assert (fc.video[t][~inside] == NEUTRAL_GRAY).all()
        assert torch.equal(fc.mask[t], inside.float())


def test_local_mode_keeps_only_eyes_and_mouth():
    video = driving_video()
    cx, cy, s = 48.0, 26.0, 12.0
    tracks = plant_tracks(static_centres((cx, cy)), scale=s)
    fc = face_control_video(video, tracks, mode="local")
    pix = lambda x, y: (0, int(round(y)), int(round(x)))  # noqa: E731
    for region in (LEFT_EYE, RIGHT_EYE, MOUTH):  # region centres carry the driver's pixels
        c = face_template()[list(region)].mean(0) * s + (cx, cy)
        assert fc.mask[pix(*c)] == 1 and torch.equal(fc.video[pix(*c)], video[pix(*c)])
    for idx in (8, 0, 16, 30, 19, 24):  # chin, jaw sides, nose tip, brows: neutral
        x, y = face_template()[idx] * s + (cx, cy)
        assert fc.mask[pix(x, y)] == 0 and (fc.video[pix(x, y)] == NEUTRAL_GRAY).all()
    outside = fc.mask[0] == 0
    assert (fc.video[0][outside] == NEUTRAL_GRAY).all()
    assert ((fc.mask[0] > 0) & (fc.mask[0] < 1)).any(), "edges are feathered"
    glob = face_control_video(video, tracks, mode="global")
    assert bool((fc.mask <= glob.mask).all()), "local regions lie inside the face box"
    assert fc.mask.sum() < 0.5 * glob.mask.sum()


def test_a_shifted_track_shows_the_face_read_from_its_source_position():
    video = driving_video()
    dx, dy = 40, 4
    shifted = plant_tracks(static_centres((24 + dx, 26 + dy)))
    fc = face_control_video(video, shifted, mode="global", source_offsets=torch.tensor([[dx, dy]]))
    dest = box_pixels(expected_box(24 + dx, 26 + dy))
    source = box_pixels(expected_box(24, 26))
    assert torch.equal(fc.video[0][dest], video[0][source])


def test_face_stream_has_exactly_the_pose_streams_shapes():
    scene = make_scene(num_characters=2, num_frames=T, height=H, width=W, seed=0)
    tracks = plant_tracks(static_centres((25, 25), (72, 32)))
    fc = face_control_video(scene.video, tracks, mode="local")
    pose = render_pose_video(tracks)
    assert fc.video.shape == pose.shape == scene.pose_video.shape
    codec = TestCodec()
    decoupled = decouple_instances(scene.reference_image, scene.reference_masks)
    iilr = encode_iilr(codec, decoupled, pose)
    stream = encode_control_stream(codec, fc.video, num_ref_frames=iilr.trim)
    assert stream.shape == iilr.vace_context.shape == (96, 3 + 3, H // 8, W // 8)
    assert (stream[:, : iilr.trim] == 0).all(), "no reference in the face stream's reference slots"
    # the control part is encoded exactly like IILR's control part
    same = encode_iilr(codec, decoupled, fc.video)
    assert torch.equal(stream[:, iilr.trim :], same.vace_context[:, iilr.trim :])


def test_errors_name_the_fix():
    video = driving_video()
    tracks = plant_tracks(static_centres((25, 25)))
    with pytest.raises(AnyCrowdError, match="choose one of global, local"):
        face_control_video(video, tracks, mode="eyes")
    with pytest.raises(AnyCrowdError, match="same video the pose extractor read"):
        face_control_video(video[:, :32], tracks)
    with pytest.raises(AnyCrowdError, match="one \\(dx, dy\\) per track"):
        face_control_video(video, tracks, source_offsets=torch.zeros(2, 2))
    with pytest.raises(AnyCrowdError, match="enlarge"):
        face_boxes(tracks, enlarge=0)
    with pytest.raises(AnyCrowdError, match="PoseTracks"):
        face_boxes("tracks")
