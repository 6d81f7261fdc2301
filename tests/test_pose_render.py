"""Specification of the pose renderer: control video, single frames, identity preview."""

import json
import time

import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.binding import parse_binding
from anycrowd_core.pose.render import (
    FACE_COLOR, HAND_EDGE_COLORS, HAND_EDGES, HAND_JOINT_COLOR, LIGHT_FACTOR, OPENPOSE_COLORS, OPENPOSE_LIMBS,
    identity_colors, render_frame_poses, render_identity_preview, render_pose_frame, render_pose_sequence,
    render_pose_video, stroke_sizes,
)
from anycrowd_core.pose.types import FACE, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND, FramePoses, PoseSequence, PoseTracks
from anycrowd_core.scenes import make_scene


def person(cx=200.0, top=60.0, scale=1.0):
    """A standing person, 128 points: body spread out so joints never overlap, plus face and hands."""
    kp = np.zeros((NUM_KEYPOINTS, 3))
    u = 20.0 * scale
    body = {
        0: (0, 0.5), 1: (0, 2), 2: (-2, 2.2), 3: (-3.5, 4), 4: (-4.5, 6), 5: (2, 2.2), 6: (3.5, 4), 7: (4.5, 6),
        8: (-1.2, 7), 9: (-1.4, 10), 10: (-1.5, 13), 11: (1.2, 7), 12: (1.4, 10), 13: (1.5, 13),
        14: (-0.4, 0.1), 15: (0.4, 0.1), 16: (-0.9, 0.3), 17: (0.9, 0.3),
    }
    for j, (x, y) in body.items():
        kp[j] = (cx + x * u, top + y * u, 0.9)
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    kp[FACE, 0] = cx + 0.6 * u * np.cos(ang)
    kp[FACE, 1] = top + 0.4 * u + 0.8 * u * np.sin(ang)
    kp[FACE, 2] = 0.8
    for part, wrist in ((LEFT_HAND, 7), (RIGHT_HAND, 4)):
        wx, wy = kp[wrist, :2]
        pts = [(wx, wy)] + [(wx + (f - 2) * 0.5 * u, wy + (1 + s) * 0.5 * u) for f in range(5) for s in range(4)]
        kp[part, :2] = pts
        kp[part, 2] = 0.7
    return kp


def as_tracks(kps, height=512, width=512):
    """[M, T, 128, 3] numpy -> PoseTracks (boxes = keypoint extent)."""
    kp = torch.as_tensor(np.asarray(kps), dtype=torch.float32)
    present = (kp[..., 2] > 0).any(-1)
    v = kp[..., 2:3] > 0
    big = torch.tensor(1e9)
    x0 = torch.where(v[..., 0], kp[..., 0], big).amin(-1)
    y0 = torch.where(v[..., 0], kp[..., 1], big).amin(-1)
    x1 = torch.where(v[..., 0], kp[..., 0], -big).amax(-1)
    y1 = torch.where(v[..., 0], kp[..., 1], -big).amax(-1)
    boxes = torch.stack([x0, y0, x1, y1], -1)
    boxes[~present] = float("nan")
    return PoseTracks(kp, boxes, present, height, width, list(range(kp.shape[0])))


def px(img, x, y):
    return tuple(int(round(v)) for v in (img[int(round(y)), int(round(x))] * 255).tolist())


def test_body_joints_have_openpose_colours_and_limbs_are_dimmed():
    kp = person()
    img = render_pose_frame(kp[None], 512, 512, draw_hands=False, draw_face=False)
    assert img.shape == (512, 512, 3) and img.dtype == torch.float32
    for j in (1, 2, 3, 5, 6, 8, 9, 10, 11, 12, 13):
        assert px(img, *kp[j, :2]) == OPENPOSE_COLORS[j]
    for i, (a, b) in enumerate(OPENPOSE_LIMBS[:12]):  # body limbs (head limbs are short)
        mid = (kp[a, :2] + kp[b, :2]) / 2
        assert px(img, *mid) == tuple(int(c * 0.6) for c in OPENPOSE_COLORS[i])
    assert float(img[:20, :20].abs().max()) == 0.0  # black canvas


def test_points_with_zero_confidence_are_skipped():
    kp = person()
    kp[4, 2] = 0.0  # right wrist missing
    img = render_pose_frame(kp[None], 512, 512, draw_hands=False, draw_face=False)
    assert px(img, *kp[4, :2]) == (0, 0, 0)
    mid = (kp[3, :2] + kp[4, :2]) / 2  # the forearm is not drawn either
    assert px(img, *mid) == (0, 0, 0)


def test_stroke_sizes_scale_with_the_short_side():
    assert stroke_sizes(512, 512) == {"stick": 4, "joint": 4, "hand_line": 2, "hand_joint": 4, "face": 3}
    assert stroke_sizes(480, 832)["stick"] == 4
    assert stroke_sizes(1024, 2048) == {"stick": 8, "joint": 8, "hand_line": 4, "hand_joint": 8, "face": 6}
    assert stroke_sizes(64, 64) == {"stick": 1, "joint": 1, "hand_line": 1, "hand_joint": 1, "face": 1}


def test_limb_thickness_doubles_with_resolution():
    def thickness(size):
        kp = np.zeros((NUM_KEYPOINTS, 3))
        kp[1] = (size * 0.2, size * 0.5, 1)  # neck -> right shoulder, horizontal
        kp[2] = (size * 0.8, size * 0.5, 1)
        img = render_pose_frame(kp[None], size, size, draw_hands=False, draw_face=False)
        return int((img[:, size // 2].sum(-1) > 0).sum())

    t512, t1024 = thickness(512), thickness(1024)
    assert t512 in (8, 9) and t1024 in (16, 17)


def test_hands_and_face_use_controlnet_aux_styles():
    kp = person()
    img = render_pose_frame(kp[None], 512, 512)
    for part in (LEFT_HAND, RIGHT_HAND):
        pts = kp[part]
        assert px(img, *pts[20, :2]) == HAND_JOINT_COLOR  # fingertip: blue joint
        e = 3  # edge (3, 4): between two finger points
        a, b = HAND_EDGES[e]
        mid = (pts[a, :2] + pts[b, :2]) / 2
        col = px(img, *mid)
        assert col in (HAND_EDGE_COLORS[e], HAND_JOINT_COLOR)
    assert px(img, *kp[FACE][17, :2]) == FACE_COLOR


def test_part_switches():
    kp = person()
    body_only = render_pose_frame(kp[None], 512, 512, draw_hands=False, draw_face=False)
    assert px(body_only, *kp[FACE][17, :2]) != FACE_COLOR
    assert px(body_only, *kp[LEFT_HAND][20, :2]) == (0, 0, 0)
    no_body = render_pose_frame(kp[None], 512, 512, draw_body=False)
    assert px(no_body, *kp[9, :2]) == (0, 0, 0)
    assert px(no_body, *kp[LEFT_HAND][20, :2]) == HAND_JOINT_COLOR


def test_light_head_dims_head_limbs_blanks_head_joints_and_grays_the_face():
    kp = person(scale=2.0, top=40)
    img = render_pose_frame(kp[None], 512, 512, draw_hands=False, draw_face=False, light_head=True)
    normal = render_pose_frame(kp[None], 512, 512, draw_hands=False, draw_face=False)
    neck_nose = OPENPOSE_LIMBS.index((1, 0))
    mid = (kp[1, :2] + kp[0, :2]) / 2
    assert px(normal, *mid) == tuple(int(c * 0.6) for c in OPENPOSE_COLORS[neck_nose])
    assert px(img, *mid) == tuple(int(c * 0.6 * LIGHT_FACTOR) for c in OPENPOSE_COLORS[neck_nose])
    for j in (0, 14, 15, 16, 17):
        assert px(img, *kp[j, :2]) == (0, 0, 0)
    for j in (1, 2, 8):  # the rest of the body is untouched
        assert px(img, *kp[j, :2]) == OPENPOSE_COLORS[j]
    face = render_pose_frame(kp[None], 512, 512, draw_body=False, draw_hands=False, light_head=True)
    g = int(255 * LIGHT_FACTOR)
    assert px(face, *kp[FACE][40, :2]) == (g, g, g)


def test_video_draws_present_tracks_and_leaves_absent_frames_black():
    a = np.stack([person(120), person(120), np.zeros((NUM_KEYPOINTS, 3))])
    b = np.stack([person(380), np.zeros((NUM_KEYPOINTS, 3)), np.zeros((NUM_KEYPOINTS, 3))])
    tracks = as_tracks(np.stack([a, b]))
    video = render_pose_video(tracks)
    assert video.shape == (3, 512, 512, 3)
    assert px(video[0], *b[0, 1, :2]) == OPENPOSE_COLORS[1]
    assert px(video[1], *b[0, 1, :2]) == (0, 0, 0)
    assert float(video[2].max()) == 0.0
    # a track marked absent is not drawn even if it has keypoints
    tracks.present[0, 1] = False
    assert px(render_pose_video(tracks)[1], *a[1, 1, :2]) == (0, 0, 0)


def test_frame_sequence_and_video_renderers_agree():
    kps = np.stack([person(120), person(380)])
    tracks = as_tracks(kps[:, None])
    video = render_pose_video(tracks)[0]
    frame = FramePoses(torch.as_tensor(kps).float(), torch.zeros(2, 4), torch.ones(2))
    assert torch.equal(render_frame_poses(frame, 512, 512), video)
    seq = PoseSequence([frame, FramePoses.empty()], 512, 512)
    both = render_pose_sequence(seq)
    assert torch.equal(both[0], video) and float(both[1].max()) == 0.0


def test_body_only_18_point_input_is_accepted_and_bad_shapes_raise():
    kp = person()[:18]
    img = render_pose_frame(kp[None], 512, 512)
    assert px(img, *kp[1, :2]) == OPENPOSE_COLORS[1]
    with pytest.raises(AnyCrowdError, match="18 or 128"):
        render_pose_frame(np.zeros((1, 17, 3)), 64, 64)


def test_points_far_outside_the_frame_do_not_break_drawing():
    kp = person()
    kp[4, :2] = (-1e7, 3e9)
    img = render_pose_frame(kp[None], 512, 512)
    assert px(img, *kp[1, :2]) == OPENPOSE_COLORS[1]


def test_scene_pose_video_is_drawn_by_this_renderer():
    s = make_scene(num_characters=3, num_frames=5, height=128, width=192, seed=3)
    kp = torch.zeros(3, 5, NUM_KEYPOINTS, 3)
    kp[:, :, :18] = s.keypoints
    tracks = PoseTracks(kp, s.track_boxes, torch.ones(3, 5, dtype=torch.bool), 128, 192)
    assert torch.equal(render_pose_video(tracks), s.pose_video)


def test_identity_preview_colours_tracks_and_dims_the_video():
    kps = np.stack([person(120), person(380)])[:, None]
    tracks = as_tracks(kps)
    video = torch.full((1, 512, 512, 3), 0.8)
    prev = render_identity_preview(video, tracks, dim=0.5)[0]
    assert prev.shape == (512, 512, 3)
    assert px(prev, 500, 500) == (102, 102, 102)  # 0.8 * 0.5 * 255
    cols = identity_colors(2)
    assert px(prev, *kps[0, 0, 9, :2]) == cols[0] and px(prev, *kps[1, 0, 9, :2]) == cols[1]
    assert cols[0] != cols[1]
    # a label is written above each box
    x0, y0 = tracks.boxes[0, 0, :2].tolist()
    assert (prev[int(y0) - 12:int(y0) - 2, int(x0):int(x0) + 20] != 0.4).any()
    black = render_identity_preview(None, tracks)
    assert float(black[0, 500, 500].max()) == 0.0


def test_identity_preview_with_binding_colours_by_identity_and_grays_unbound_tracks():
    kps = np.stack([person(80, scale=0.6), person(250, scale=0.6), person(420, scale=0.6)])[:, None]
    tracks = as_tracks(kps)
    b = parse_binding("A=0+2", tracks, 1)
    prev = render_identity_preview(None, tracks, b)[0]
    a = identity_colors(1)[0]
    assert px(prev, *kps[0, 0, 9, :2]) == a and px(prev, *kps[2, 0, 9, :2]) == a
    assert px(prev, *kps[1, 0, 9, :2]) == (150, 150, 150)


def test_preview_rejects_a_video_of_another_size():
    tracks = as_tracks(person()[None, None])
    with pytest.raises(AnyCrowdError, match="same driving video"):
        render_identity_preview(torch.zeros(1, 256, 256, 3), tracks)


def test_nine_people_render_fast_enough():
    from anycrowd_core.bench.pose_render import synthetic_tracks

    tracks = synthetic_tracks(9, 9, 480, 832)
    render_pose_video(tracks)
    start = time.perf_counter()
    render_pose_video(tracks)
    fps = 9 / (time.perf_counter() - start)
    assert fps > 15, f"{fps:.1f} fps (target >= 30 on a quiet core)"


def test_benchmark_cli_prints_json(capsys):
    from anycrowd_core.bench import pose_render

    pose_render.main(["--json", "--people", "2", "--frames", "5", "--height", "128", "--width", "192",
                      "--repeats", "1"])
    row = json.loads(capsys.readouterr().out)["results"][0]
    assert row["people"] == 2 and row["control_fps"] > 0 and row["preview_fps"] > 0
