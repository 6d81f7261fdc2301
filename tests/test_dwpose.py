"""DWPose inference on onnxruntime, run end to end on tiny ONNX graphs that have the real
files' signatures and emit planted boxes and SimCC maps (tests/onnx_graphs.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx_graphs as g  # noqa: E402

from anycrowd_core.errors import AnyCrowdError  # noqa: E402
from anycrowd_core.pose.dwpose import DWPoseEstimator, letterbox, to_openpose_layout  # noqa: E402
from anycrowd_core.pose.onnx_sessions import (  # noqa: E402
    cached_sessions, find_model_file, get_session, release_sessions, resolve_providers,
)
from anycrowd_core.pose.types import NUM_KEYPOINTS, FramePoses, PoseSequence  # noqa: E402
from anycrowd_core.errors import SamplingCancelled  # noqa: E402

H, W = 480, 832
R = min(640 / H, 640 / W)  # letterbox ratio of the test frames
# three people, highest score first; crops far enough apart that no dot enters another's crop
BOXES = np.array([[100, 80, 260, 450], [400, 60, 560, 470], [650, 100, 790, 440]], np.float32)
SCORES = (0.9, 0.8, 0.7)
STRIDES = (32, 16, 8)
DOTS = np.array([[170, 200], [481, 251], [722, 305]], np.float32)

# OpenPose-18 body point <- COCO-17 index, written out by name (independent of the module)
COCO = ["nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_sho", "r_sho", "l_elb", "r_elb", "l_wri",
        "r_wri", "l_hip", "r_hip", "l_knee", "r_knee", "l_ank", "r_ank"]
OPENPOSE = ["nose", "neck", "r_sho", "r_elb", "r_wri", "l_sho", "l_elb", "l_wri", "r_hip", "r_knee",
            "r_ank", "l_hip", "l_knee", "l_ank", "r_eye", "l_eye", "r_ear", "l_ear"]


@pytest.fixture(autouse=True)
def fresh_sessions():
    release_sessions()
    yield
    release_sessions()


def detector_table(boxes=BOXES, scores=SCORES, strides=STRIDES):
    table = g.empty_yolox_table()
    for box, s, stride in zip(boxes, scores, strides):
        g.plant_box(table, np.asarray(box) * R, obj=s, cls=1.0, stride=stride)
    return table


@pytest.fixture
def det_path(tmp_path):
    return g.yolox_graph(tmp_path / "yolox_l.onnx", detector_table())


def count_runs(path):
    """Wrap the cached session's run() to record the input shape of every call."""
    session = get_session(path, "cpu")
    calls, original = [], session.run

    def run(names, feed, *args, **kwargs):
        calls.append(next(iter(feed.values())).shape)
        return original(names, feed, *args, **kwargs)

    session.run = run
    return calls


def crop_box(box):
    """The crop (centre, size) the pose model sees: box padded x1.25, fixed to w/h = 288/384."""
    c = (box[:2] + box[2:]) / 2
    w, h = (box[2:] - box[:2]) * 1.25
    if w > h * 0.75:
        h = w / 0.75
    else:
        w = h * 0.75
    return c, np.array([w, h])


def gray_frame():
    return np.full((H, W, 3), 128, np.uint8)


# ----------------------------------------------------------------------------- detector


def test_letterbox_keeps_aspect_places_top_left_pads_114_and_gives_bgr_0_255():
    frame = np.zeros((H, W, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 20, 30  # R, G, B
    x, r = letterbox(frame)
    assert x.shape == (1, 3, 640, 640) and x.dtype == np.float32
    assert r == pytest.approx(R)
    nh = int(H * R)  # 369 rows of content, then padding
    assert np.all(x[0, :, :nh] == np.array([30, 20, 10])[:, None, None])  # BGR, not normalised
    assert np.all(x[0, :, nh:] == 114)


def test_detector_decodes_planted_boxes_within_one_pixel(det_path, tmp_path):
    est = DWPoseEstimator(det_path, g.pose_blob_graph(tmp_path / "p.onnx"), providers="cpu")
    boxes, scores = est.detect_people(gray_frame())
    assert boxes.shape == (3, 4)
    np.testing.assert_allclose(boxes, BOXES, atol=1.0)
    np.testing.assert_allclose(scores, SCORES, rtol=1e-5)


def test_nms_drops_duplicates_and_keeps_overlapping_distinct_people(tmp_path):
    a = BOXES[0]
    duplicate = a + np.array([6, 4, 6, 4])  # IoU ~0.9 with a, lower score
    neighbour = a + np.array([110, 0, 110, 0])  # IoU ~0.2 with a: another person
    table = detector_table([a, duplicate, neighbour], (0.9, 0.85, 0.6), (16, 8, 32))
    est = DWPoseEstimator(g.yolox_graph(tmp_path / "d.onnx", table),
                          g.pose_blob_graph(tmp_path / "p.onnx"), providers="cpu")
    boxes, scores = est.detect_people(gray_frame())
    np.testing.assert_allclose(boxes, [a, neighbour], atol=1.0)
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-5)


def test_only_person_scores_above_threshold_are_kept(tmp_path):
    table = g.empty_yolox_table()
    g.plant_box(table, BOXES[0] * R, obj=0.31, cls=1.0, stride=16)  # kept
    g.plant_box(table, BOXES[1] * R, obj=0.29, cls=1.0, stride=16)  # below 0.3
    g.plant_box(table, BOXES[2] * R, obj=0.9, cls=0.3, stride=16)  # 0.27 = obj * cls
    g.plant_box(table, [20, 20, 90, 200], obj=0.95, cls=0.95, label=2, stride=8)  # a car
    est = DWPoseEstimator(g.yolox_graph(tmp_path / "d.onnx", table),
                          g.pose_blob_graph(tmp_path / "p.onnx"), providers="cpu")
    boxes, scores = est.detect_people(gray_frame())
    np.testing.assert_allclose(boxes, BOXES[:1], atol=1.0)
    assert scores == pytest.approx([0.31])
    est.det_threshold = 0.25
    assert len(est.detect_people(gray_frame())[0]) == 3


def pixel_objectness_estimator(folder, pixel):
    """An estimator whose detector sees one person (BOXES[0]) with objectness = input pixel
    `pixel` (channel, row, column of the 640x640 letterboxed input) / 255."""
    table = g.empty_yolox_table()
    row = g.plant_box(table, BOXES[0] * R, obj=0.0, cls=1.0)
    gain = np.zeros_like(table)
    gain[row, 4] = 1.0
    return DWPoseEstimator(g.yolox_graph(folder / "d.onnx", table, gain, pixel=pixel),
                           g.pose_blob_graph(folder / "p.onnx"), providers="cpu")


def test_detector_sees_bgr_pixels_on_0_255(tmp_path):
    # the planted box's objectness is channel 0 of input pixel (5, 5) / 255
    est = pixel_objectness_estimator(tmp_path, pixel=(0, 5, 5))
    frame = np.zeros((H, W, 3), np.uint8)
    frame[...] = (40, 90, 240)  # RGB: blue dominates
    _, scores = est.detect_people(frame)
    assert scores == pytest.approx([240 / 255], rel=1e-5)  # channel 0 is blue: BGR order
    frame[...] = (240, 90, 40)
    assert len(est.detect_people(frame)[0]) == 0  # 40 / 255 < 0.3


def test_letterbox_padding_reaches_the_model_bottom_right(tmp_path):
    est = pixel_objectness_estimator(tmp_path, pixel=(1, 639, 639))
    _, scores = est.detect_people(np.zeros((H, W, 3), np.uint8))  # wide frame: padded below
    assert scores == pytest.approx([114 / 255], rel=1e-5)
    _, scores = est.detect_people(np.zeros((W, H, 3), np.uint8))  # tall frame: padded right
    assert scores == pytest.approx([114 / 255], rel=1e-5)


# ----------------------------------------------------------------------------- pose


def planted_people(rng):
    """Per person: 133 COCO-WholeBody keypoints in frame px inside its crop, and their
    SimCC maps; returns points [3,133,2] and tables [3,133,576], [3,133,768]."""
    points, tx, ty = [], [], []
    for box in BOXES:
        c, size = crop_box(box)
        p = c + (rng.uniform(0.05, 0.95, (133, 2)) - 0.5) * size
        u = (p - c) / size * np.array([288, 384]) + np.array([144, 192])
        sx, sy = g.plant_simcc(u, np.full(133, 0.9, np.float32))
        points.append(p), tx.append(sx), ty.append(sy)
    return np.stack(points), np.stack(tx), np.stack(ty)


def test_planted_keypoints_of_every_person_come_back_within_one_pixel_in_one_run(det_path, tmp_path):
    points, tx, ty = planted_people(np.random.default_rng(0))
    pose_path = g.pose_table_graph(tmp_path / "p.onnx", tx, ty)
    est = DWPoseEstimator(det_path, pose_path, providers="cpu")
    det_runs, pose_runs = count_runs(det_path), count_runs(pose_path)

    poses = est(gray_frame())

    assert det_runs == [(1, 3, 640, 640)]
    assert pose_runs == [(3, 3, 384, 288)]  # all people batched in one session run
    assert isinstance(poses, FramePoses) and poses.num_people == 3
    kp = poses.keypoints.numpy()
    assert kp.shape == (3, NUM_KEYPOINTS, 3) and poses.keypoints.dtype == torch.float32
    for op, name in enumerate(OPENPOSE):
        if name == "neck":
            expected = (points[:, COCO.index("l_sho")] + points[:, COCO.index("r_sho")]) / 2
        else:
            expected = points[:, COCO.index(name)]
        np.testing.assert_allclose(kp[:, op, :2], expected, atol=1.0, err_msg=name)
    np.testing.assert_allclose(kp[:, 18:86, :2], points[:, 23:91], atol=1.0)  # face
    np.testing.assert_allclose(kp[:, 86:107, :2], points[:, 91:112], atol=1.0)  # left hand
    np.testing.assert_allclose(kp[:, 107:128, :2], points[:, 112:133], atol=1.0)  # right hand
    np.testing.assert_allclose(kp[..., 2], 0.9, rtol=1e-6)
    np.testing.assert_allclose(poses.boxes.numpy(), BOXES, atol=1.0)
    np.testing.assert_allclose(poses.scores.numpy(), SCORES, rtol=1e-5)


def test_keypoint_score_is_the_smaller_axis_peak_and_low_scores_are_missing(tmp_path):
    box = BOXES[:1]
    c, size = crop_box(box[0])
    u = np.tile([[144.0, 192.0]], (133, 1))  # everything at the crop centre = box centre
    sx_peak = np.full(133, 0.9, np.float32)
    sy_peak = np.full(133, 0.5, np.float32)
    sy_peak[9] = 0.2  # COCO l_wri -> OpenPose 7
    sy_peak[6] = 0.25  # COCO r_sho: the neck needs both shoulders
    sy_peak[100] = 0.0  # a left-hand point with no response at all
    tx, ty = g.plant_simcc(u, sx_peak, sy_peak)
    est = DWPoseEstimator(g.yolox_graph(tmp_path / "d.onnx", detector_table(box, (0.9,), (16,))),
                          g.pose_table_graph(tmp_path / "p.onnx", tx[None], ty[None]), providers="cpu")
    kp = est(gray_frame()).keypoints[0].numpy()
    present = kp[:, 2] > 0
    assert kp[0, 2] == pytest.approx(0.5)  # min(0.9, 0.5)
    np.testing.assert_allclose(kp[0, :2], c, atol=1.0)
    assert not present[7] and not present[2] and not present[1]  # l_wri, r_sho, neck
    assert np.all(kp[[1, 2, 7]] == 0)
    assert not present[86 + 100 - 91]
    assert present.sum() == NUM_KEYPOINTS - 4


def test_neck_is_the_shoulders_midpoint_with_the_weaker_score():
    pts = np.zeros((1, 133, 2), np.float32)
    scores = np.full((1, 133), 0.8, np.float32)
    pts[0, 5], pts[0, 6] = (100, 50), (60, 54)  # l_sho, r_sho
    scores[0, 6] = 0.6
    kp = to_openpose_layout(pts, scores, 0.3)
    np.testing.assert_allclose(kp[0, 1], [80, 52, 0.6])
    np.testing.assert_allclose(kp[0, 5], [100, 50, 0.8])  # OpenPose 5 = left shoulder
    np.testing.assert_allclose(kp[0, 2], [60, 54, 0.6])  # OpenPose 2 = right shoulder


def test_keypoints_follow_the_image_through_the_crop_warp_and_back(det_path, tmp_path):
    # The blob graph puts every keypoint where the crop's red channel is brightest: one red
    # pixel per person must come back at its frame position, so the warp, the RGB order and
    # the inverse mapping all agree.
    frame = gray_frame()
    for x, y in DOTS.astype(int):
        frame[y, x] = (255, 0, 0)
    est = DWPoseEstimator(det_path, g.pose_blob_graph(tmp_path / "p.onnx", gain=1.0),
                          providers="cpu", kpt_threshold=0.05)
    poses = est(frame)
    kp = poses.keypoints.numpy()
    assert np.all(kp[..., 2] > 0)
    for person, dot in enumerate(DOTS):
        err = np.abs(kp[person, :, :2] - dot).max()
        assert err <= 1.0, (person, err)
    # ComfyUI IMAGE floats 0..1 give the same result
    same = est(torch.from_numpy(frame).float() / 255)
    torch.testing.assert_close(same.keypoints, poses.keypoints)


def test_fixed_batch_model_is_run_once_per_person(det_path, tmp_path):
    frame = gray_frame()
    for x, y in DOTS.astype(int):
        frame[y, x] = (255, 0, 0)
    pose_path = g.pose_blob_graph(tmp_path / "p1.onnx", gain=1.0, batch=1)
    est = DWPoseEstimator(det_path, pose_path, providers="cpu", kpt_threshold=0.05)
    runs = count_runs(pose_path)
    kp = est(frame).keypoints.numpy()
    assert runs == [(1, 3, 384, 288)] * 3
    for person, dot in enumerate(DOTS):
        assert np.abs(kp[person, :, :2] - dot).max() <= 1.0


def test_no_person_gives_an_empty_frame_without_running_the_pose_model(tmp_path):
    pose_path = g.pose_blob_graph(tmp_path / "p.onnx")
    est = DWPoseEstimator(g.yolox_graph(tmp_path / "d.onnx", g.empty_yolox_table()), pose_path,
                          providers="cpu")
    runs = count_runs(pose_path)
    poses = est(gray_frame())
    assert poses.num_people == 0 and poses.keypoints.shape == (0, NUM_KEYPOINTS, 3)
    assert runs == []


def test_estimate_video_reports_progress_and_stops_on_cancel(det_path, tmp_path):
    est = DWPoseEstimator(det_path, g.pose_blob_graph(tmp_path / "p.onnx"), providers="cpu")
    video = torch.full((3, H, W, 3), 0.5)
    seen = []
    seq = est.estimate_video(video, progress=lambda t, n: seen.append((t, n)))
    assert isinstance(seq, PoseSequence) and (seq.height, seq.width) == (H, W)
    assert [f.num_people for f in seq.frames] == [3, 3, 3]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(SamplingCancelled):
        est.estimate_video(video, progress=lambda t, n: seen.append(t), cancel=lambda: len(seen) >= 4)
    assert seen[-1] == 1  # cancelled before the second frame


def test_bad_frames_and_wrong_models_raise_readable_errors(det_path, tmp_path):
    pose_path = g.pose_blob_graph(tmp_path / "p.onnx")
    est = DWPoseEstimator(det_path, pose_path, providers="cpu")
    with pytest.raises(AnyCrowdError, match="estimate_video"):
        est(np.zeros((2, H, W, 3), np.uint8))
    with pytest.raises(AnyCrowdError, match=r"\[H, W, 3\]"):
        est(np.zeros((H, W, 4), np.uint8))
    swapped = DWPoseEstimator(pose_path, det_path, providers="cpu")
    with pytest.raises(AnyCrowdError, match="yolox_l.onnx"):
        swapped(gray_frame())
    with pytest.raises(AnyCrowdError, match="nms_iou"):
        DWPoseEstimator(det_path, pose_path, nms_iou=0)


# ----------------------------------------------------------------------------- sessions


@pytest.mark.parametrize("gpu", ["CUDAExecutionProvider", "ROCMExecutionProvider",
                                 "DmlExecutionProvider", "CoreMLExecutionProvider"])
def test_auto_picks_the_available_gpu_provider_then_cpu(monkeypatch, gpu):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", gpu, "CPUExecutionProvider"])
    assert resolve_providers("auto") == [gpu, "CPUExecutionProvider"]
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]


def test_auto_falls_back_to_cpu_and_explicit_lists_are_checked(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert resolve_providers("auto") == ["CPUExecutionProvider"]
    assert resolve_providers(["AzureExecutionProvider"]) == ["AzureExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(AnyCrowdError, match="onnxruntime-gpu"):
        resolve_providers(["CUDAExecutionProvider"])


def test_one_cached_session_per_file_until_released(det_path, tmp_path):
    pose_path = g.pose_blob_graph(tmp_path / "p.onnx")
    a = get_session(det_path, "cpu")
    assert get_session(det_path, ["CPUExecutionProvider"]) is a
    assert a.get_providers() == ["CPUExecutionProvider"]
    est = DWPoseEstimator(det_path, pose_path, providers="cpu")
    est(gray_frame())
    assert cached_sessions() == 2  # the estimator reused the detector session
    assert get_session(det_path, "cpu") is a
    assert release_sessions() == 2 and cached_sessions() == 0
    assert get_session(det_path, "cpu") is not a
    assert est(gray_frame()).num_people == 3  # estimators reopen sessions after a release


# ----------------------------------------------------------------------------- model files


def test_missing_model_names_the_folders_and_expected_files(tmp_path):
    with pytest.raises(AnyCrowdError) as e:
        DWPoseEstimator.from_folders([tmp_path / "dwpose", tmp_path / "other"])
    msg = str(e.value)
    assert "yolox_l.onnx" in msg and str(tmp_path / "dwpose") in msg and str(tmp_path / "other") in msg
    (tmp_path / "yolox_l.onnx").write_bytes(b"")
    with pytest.raises(AnyCrowdError, match="dw-ll_ucoco_384.onnx"):
        DWPoseEstimator.from_folders([tmp_path])


def test_model_files_are_found_in_subfolders(det_path, tmp_path):
    sub = tmp_path / "models" / "yzd-v" / "DWPose"
    sub.mkdir(parents=True)
    pose = g.pose_blob_graph(sub / "dw-ll_ucoco_384.onnx")
    det = g.yolox_graph(sub / "yolox_l.onnx", detector_table())
    est = DWPoseEstimator.from_folders([tmp_path / "nowhere", tmp_path / "models"], providers="cpu")
    assert (est.detector_path, est.pose_path) == (str(det), str(pose))
    assert est(gray_frame()).num_people == 3
    assert find_model_file([str(det_path)], [], "detector") == det_path  # explicit path


def test_torchscript_files_are_refused_with_a_hint(tmp_path):
    (tmp_path / "dw-ll_ucoco_384_bs5.torchscript.pt").write_bytes(b"")
    (tmp_path / "yolox_l.onnx").write_bytes(b"")
    with pytest.raises(AnyCrowdError, match=r"only \.onnx"):
        DWPoseEstimator.from_folders([tmp_path])
    with pytest.raises(AnyCrowdError, match="not an ONNX file"):
        DWPoseEstimator.from_folders([tmp_path], pose="dw-ll_ucoco_384_bs5.torchscript.pt")


def test_missing_explicit_path_and_broken_file_raise(tmp_path, det_path):
    with pytest.raises(AnyCrowdError, match="not found"):
        DWPoseEstimator(det_path, tmp_path / "dw-ll_ucoco_384.onnx")
    broken = tmp_path / "dw-ll_ucoco_384.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(AnyCrowdError, match="download it again"):
        DWPoseEstimator(det_path, broken, providers="cpu")(gray_frame())
