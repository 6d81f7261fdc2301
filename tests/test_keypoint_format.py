"""Specification of POSE_KEYPOINT (comfyui_controlnet_aux / OpenPose JSON) interop."""

import json

import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.keypoint_format import (
    keypoint_boxes, pose_keypoint_to_sequence, pose_keypoint_to_tracks, tracks_to_pose_keypoint,
)
from anycrowd_core.pose.types import BODY, FACE, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND, PoseTracks

H, W = 480, 832


def make_tracks():
    """3 tracks x 4 frames: whole-body, one absent frame, a body-only person, a point outside the frame."""
    rng = np.random.default_rng(0)
    kp = np.zeros((3, 4, NUM_KEYPOINTS, 3))
    for i in range(3):
        kp[i, :, :, 0] = rng.uniform(50 + 250 * i, 200 + 250 * i, (4, NUM_KEYPOINTS))
        kp[i, :, :, 1] = rng.uniform(60, 420, (4, NUM_KEYPOINTS))
        kp[i, :, :, 2] = rng.uniform(0.3, 1.0, (4, NUM_KEYPOINTS))
    kp[1, :, 18:, :] = 0.0  # body only: no face, no hands
    kp[0, :, 5, 2] = 0.0  # a missing body point
    kp[2, 1] = 0.0  # track 2 absent in frame 1
    kp[0, 2, 7, :2] = (-25.0, 500.0)  # left wrist outside the frame (still confident)
    kp[kp[..., 2] == 0] = 0.0
    present = (kp[..., 2] > 0).any(-1)
    boxes = torch.from_numpy(keypoint_boxes(kp, H, W)).float()
    return PoseTracks(torch.from_numpy(kp).float(), boxes, torch.from_numpy(present), H, W, [4, 7, 9])


def test_writes_the_controlnet_aux_layout():
    data = tracks_to_pose_keypoint(make_tracks())
    assert len(data) == 4
    frame = data[0]
    assert frame["canvas_width"] == W and frame["canvas_height"] == H
    p0, p1 = frame["people"][0], frame["people"][1]
    assert len(p0["pose_keypoints_2d"]) == 18 * 3
    assert len(p0["face_keypoints_2d"]) == 70 * 3
    assert len(p0["hand_left_keypoints_2d"]) == 21 * 3 and len(p0["hand_right_keypoints_2d"]) == 21 * 3
    assert p1["face_keypoints_2d"] is None and p1["hand_left_keypoints_2d"] is None
    assert all(isinstance(v, float) for v in p0["pose_keypoints_2d"])
    # present points are written with c = 1.0 (controlnet_aux readers drop c < 1), missing as zeros
    assert p0["pose_keypoints_2d"][5 * 3: 5 * 3 + 3] == [0.0, 0.0, 0.0]
    assert p0["pose_keypoints_2d"][2] == 1.0
    # pupils = body eyes (14, 15), as controlnet_aux pads DWPose's 68-point face
    face = np.array(p0["face_keypoints_2d"]).reshape(70, 3)
    body = np.array(p0["pose_keypoints_2d"]).reshape(18, 3)
    assert np.allclose(face[68], body[14]) and np.allclose(face[69], body[15])
    assert [p["track_id"] for p in frame["people"]] == [4, 7, 9]
    json.dumps(data)  # serialisable


def test_absent_tracks_stay_as_zero_people_or_are_dropped():
    tr = make_tracks()
    kept = tracks_to_pose_keypoint(tr)[1]["people"]
    assert len(kept) == 3 and set(kept[2]["pose_keypoints_2d"]) == {0.0} and kept[2]["face_keypoints_2d"] is None
    dropped = tracks_to_pose_keypoint(tr, keep_absent=False)[1]["people"]
    assert [p["track_id"] for p in dropped] == [4, 7]


@pytest.mark.parametrize("normalized", [False, True])
def test_round_trip_in_both_conventions(normalized):
    tr = make_tracks()
    data = tracks_to_pose_keypoint(tr, normalized=normalized, keep_confidence=True)
    if normalized:
        xs = [v for p in data[0]["people"] for v in p["pose_keypoints_2d"][0::3]]
        assert max(abs(x) for x in xs) <= 1.0
    back = pose_keypoint_to_tracks(json.loads(json.dumps(data)))
    assert back.track_ids == [4, 7, 9] and (back.height, back.width) == (H, W)
    assert torch.equal(back.present, tr.present)
    assert torch.allclose(back.keypoints, tr.keypoints, atol=1e-3)
    assert float(back.keypoints[0, 2, 7, 0]) == pytest.approx(-25.0, abs=1e-3)  # outside the frame kept


def test_default_export_binarises_confidence():
    tr = make_tracks()
    back = pose_keypoint_to_tracks(tracks_to_pose_keypoint(tr))
    assert torch.equal(back.keypoints[..., 2] > 0, tr.keypoints[..., 2] > 0)
    assert set(back.keypoints[..., 2].unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(back.keypoints[..., :2], tr.keypoints[..., :2], atol=1e-3)


def test_list_order_gives_identity_when_there_are_no_track_ids():
    data = tracks_to_pose_keypoint(make_tracks())
    for frame in data:
        for p in frame["people"]:
            del p["track_id"]
    back = pose_keypoint_to_tracks(data)
    assert back.track_ids == [0, 1, 2] and bool(back.present[1, 0])


def test_controlnet_aux_dwpose_frame_is_read_as_detections():
    """A frame as controlnet_aux writes it: pixels, 70-point face, None parts, c = 1.0."""
    body = [0.0] * 54
    body[1 * 3: 1 * 3 + 3] = [100.0, 80.0, 1.0]   # neck
    body[2 * 3: 2 * 3 + 3] = [80.0, 82.0, 1.0]    # right shoulder
    face = [v for j in range(70) for v in (90.0 + j * 0.1, 60.0, 1.0)]
    frame = {"people": [{"pose_keypoints_2d": body, "face_keypoints_2d": face,
                         "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": []},
                        {"pose_keypoints_2d": [0.0] * 54, "face_keypoints_2d": None,
                         "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}],
             "canvas_width": 512, "canvas_height": 384}
    seq = pose_keypoint_to_sequence([frame])
    assert (seq.height, seq.width) == (384, 512) and len(seq.frames) == 1
    f = seq.frames[0]
    assert f.num_people == 1  # the all-zero person is not a detection
    kp = f.keypoints[0]
    assert kp.shape == (NUM_KEYPOINTS, 3)
    assert kp[1].tolist() == [100.0, 80.0, 1.0]
    assert float(kp[FACE][67, 0]) == pytest.approx(96.7, abs=1e-4)  # 68 landmarks, pupils dropped
    assert float(kp[LEFT_HAND][:, 2].max()) == 0.0 and float(kp[RIGHT_HAND][:, 2].max()) == 0.0
    assert float(f.scores[0]) == 1.0
    x0, y0, x1, y1 = f.boxes[0].tolist()
    assert x0 <= 80 and x1 > 100 and y0 <= 60 and y1 > 82


def test_normalised_input_is_detected_and_scaled_to_the_requested_size():
    body = [0.0] * 54
    body[3:6] = [0.5, 0.25, 1.0]
    frame = {"people": [{"pose_keypoints_2d": body}], "canvas_width": 512, "canvas_height": 512}
    seq = pose_keypoint_to_sequence(frame, height=480, width=832)
    assert seq.frames[0].keypoints[0, 1].tolist() == [416.0, 120.0, 1.0]
    # pixel input is rescaled from each frame's canvas to the requested size
    body[3:6] = [256.0, 128.0, 1.0]
    seq = pose_keypoint_to_sequence(frame, height=480, width=832)
    assert seq.frames[0].keypoints[0, 1].tolist() == [416.0, 120.0, 1.0]


def test_coordinate_override_and_missing_canvas():
    body = [0.0] * 54
    body[3:6] = [0.5, 0.75, 1.0]  # looks normalised, but the user says pixels
    frame = {"people": [{"pose_keypoints_2d": body}], "canvas_width": 64, "canvas_height": 64}
    assert pose_keypoint_to_sequence(frame, coords="pixel").frames[0].keypoints[0, 1, :2].tolist() == [0.5, 0.75]
    assert pose_keypoint_to_sequence(frame).frames[0].keypoints[0, 1, :2].tolist() == [32.0, 48.0]
    with pytest.raises(AnyCrowdError, match="height and width"):
        pose_keypoint_to_sequence({"people": [{"pose_keypoints_2d": body}]})
    seq = pose_keypoint_to_sequence({"people": [{"pose_keypoints_2d": body}]}, height=100, width=200)
    assert seq.frames[0].keypoints[0, 1, :2].tolist() == [100.0, 75.0]
    with pytest.raises(AnyCrowdError, match="coordinate convention"):
        pose_keypoint_to_sequence(frame, coords="meters")


def test_body25_is_mapped_to_coco18():
    b25 = np.zeros((25, 3))
    b25[8] = (50, 50, 1)    # MidHip: dropped
    b25[9] = (40, 60, 1)    # RHip -> COCO 8
    b25[18] = (30, 10, 1)   # LEar -> COCO 17
    frame = {"people": [{"pose_keypoints_2d": b25.reshape(-1).tolist()}], "canvas_width": 100, "canvas_height": 100}
    kp = pose_keypoint_to_sequence(frame).frames[0].keypoints[0]
    assert kp[8].tolist() == [40.0, 60.0, 1.0] and kp[17].tolist() == [30.0, 10.0, 1.0]
    assert int((kp[BODY, 2] > 0).sum()) == 2


def test_json_text_nested_triples_and_empty_frames_are_accepted():
    text = json.dumps([{"people": [{"pose_keypoints_2d": [[10, 20, 1]] + [[0, 0, 0]] * 17}],
                        "canvas_width": 100, "canvas_height": 100},
                       {"people": [], "canvas_width": 100, "canvas_height": 100}])
    seq = pose_keypoint_to_sequence(text)
    assert seq.frames[0].keypoints[0, 0].tolist() == [10.0, 20.0, 1.0]
    assert seq.frames[1].num_people == 0 and seq.frames[1].keypoints.shape == (0, NUM_KEYPOINTS, 3)


def test_bad_input_names_the_frame_person_and_part():
    frame = {"people": [{"pose_keypoints_2d": [1.0] * 53}], "canvas_width": 10, "canvas_height": 10}
    with pytest.raises(AnyCrowdError, match="frame 0 person 0 pose_keypoints_2d"):
        pose_keypoint_to_sequence(frame)
    frame = {"people": [{"pose_keypoints_2d": [0.0] * 54, "hand_left_keypoints_2d": [1.0] * 60}],
             "canvas_width": 10, "canvas_height": 10}
    with pytest.raises(AnyCrowdError, match="hand_left_keypoints_2d: 20 points"):
        pose_keypoint_to_sequence(frame)
    with pytest.raises(AnyCrowdError, match="one dict per frame"):
        pose_keypoint_to_sequence(42)
    with pytest.raises(AnyCrowdError, match="empty"):
        pose_keypoint_to_sequence([])
    with pytest.raises(AnyCrowdError, match="not valid JSON"):
        pose_keypoint_to_sequence("{oops")


def test_duplicate_track_ids_in_a_frame_are_rejected():
    data = tracks_to_pose_keypoint(make_tracks())
    data[0]["people"][1]["track_id"] = 4
    with pytest.raises(AnyCrowdError, match="share a track_id"):
        pose_keypoint_to_tracks(data)


def test_keypoint_boxes_pad_clip_and_mark_empty():
    kp = np.zeros((2, 18, 3))
    kp[0, :2] = [(100, 100, 1), (120, 200, 1)]
    b = keypoint_boxes(kp, 220, 300, padding=0.1)
    assert b[0].tolist() == [90.0, 90.0, 131.0, 211.0]
    assert np.isnan(b[1]).all()
    assert keypoint_boxes(kp, 205, 300, 0.1)[0, 3] == 205.0  # clipped to the frame
