"""AnyCrowd pose nodes without ComfyUI: declarations, the extractor on tiny ONNX graphs (real
onnxruntime sessions, tests/onnx_graphs.py) given as explicit paths, POSE_KEYPOINT -> tracks ->
POSE_KEYPOINT, GrabCut masks, IILR Encode with tracks + binding, decoupler alignment."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx_graphs as g  # noqa: E402
from test_nodes import decouple, encode  # noqa: E402

from anycrowd_core.errors import AnyCrowdError  # noqa: E402
from anycrowd_core.layout import build_token_layout  # noqa: E402
from anycrowd_core.pose.align import align_identities  # noqa: E402
from anycrowd_core.pose.binding import resolve_binding  # noqa: E402
from anycrowd_core.pose.keypoint_format import pose_keypoint_to_tracks, tracks_to_pose_keypoint  # noqa: E402
from anycrowd_core.pose.onnx_sessions import cached_sessions, release_sessions  # noqa: E402
from anycrowd_core.pose.render import render_pose_video  # noqa: E402
from anycrowd_core.pose.track_boxes import padded_track_boxes  # noqa: E402
from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks  # noqa: E402
from anycrowd_core.scenes import make_scene  # noqa: E402
from pack import load_pack  # noqa: E402

pack = load_pack()
nodes = pack.nodes
node_pose = nodes.node_pose
POSE_KEYS = ("AnyCrowdPoseExtractor", "AnyCrowdPoseFromKeypoints", "AnyCrowdMasksFromPoses")

H, W, T = 240, 416, 5
R = min(640 / H, 640 / W)
BOXES = np.array([[230, 30, 370, 225], [40, 20, 180, 230]], np.float32)  # right person scores higher
SCORES = (0.9, 0.8)
# COCO-17 body of a person standing in its box, as (x, y) fractions of the box
BODY = [(0.5, 0.1), (0.55, 0.08), (0.45, 0.08), (0.6, 0.1), (0.4, 0.1), (0.7, 0.25), (0.3, 0.25),
        (0.8, 0.4), (0.2, 0.4), (0.85, 0.55), (0.15, 0.55), (0.62, 0.55), (0.38, 0.55), (0.62, 0.75),
        (0.38, 0.75), (0.62, 0.95), (0.38, 0.95)]


@pytest.fixture(autouse=True)
def fresh_sessions():
    release_sessions()
    yield
    release_sessions()


def standing_points(box) -> np.ndarray:
    """133 COCO-WholeBody points px: body by BODY, feet at the ankles, face around the nose,
    hands at the wrists."""
    x0, y0, x1, y1 = box
    rel = np.zeros((133, 2))
    rel[:17] = BODY
    rel[17:20], rel[20:23] = BODY[15], BODY[16]
    rng = np.random.default_rng(0)
    rel[23:91] = np.array(BODY[0]) + rng.uniform(-0.05, 0.05, (68, 2))
    rel[91:112] = np.array(BODY[9]) + rng.uniform(-0.03, 0.03, (21, 2))
    rel[112:133] = np.array(BODY[10]) + rng.uniform(-0.03, 0.03, (21, 2))
    return np.stack([x0 + rel[:, 0] * (x1 - x0), y0 + rel[:, 1] * (y1 - y0)], 1)


def crop(box):
    """The crop (centre, size) the pose model sees: box x1.25, fixed to w/h = 288/384."""
    c = (box[:2] + box[2:]) / 2
    w, h = (box[2:] - box[:2]) * 1.25
    return c, (np.array([w, w / 0.75]) if w > h * 0.75 else np.array([h * 0.75, h]))


@pytest.fixture
def models(tmp_path):
    return write_models(tmp_path)


def write_models(folder):
    """Tiny yolox_l.onnx / dw-ll_ucoco_384.onnx in `folder` planting the two people of BOXES:
    (detector path, pose path, planted points [2, 133, 2] in detector-score order)."""
    table = g.empty_yolox_table()
    for box, s, stride in zip(BOXES, SCORES, (16, 32)):
        g.plant_box(table, box * R, obj=s, cls=1.0, stride=stride)
    det = g.yolox_graph(folder / "yolox_l.onnx", table)
    points, tx, ty = [], [], []
    for box in BOXES:
        c, size = crop(box)
        p = standing_points(box)
        u = (p - c) / size * np.array([288, 384]) + np.array([144, 192])
        sx, sy = g.plant_simcc(u, np.full(133, 0.9, np.float32))
        points.append(p), tx.append(sx), ty.append(sy)
    pose = g.pose_table_graph(folder / "dw-ll_ucoco_384.onnx", np.stack(tx), np.stack(ty))
    return det, pose, np.stack(points)


def people_video(frames: int = T) -> torch.Tensor:
    """Gray frames with each planted person as a coloured block (GrabCut has something to cut)."""
    v = torch.full((frames, H, W, 3), 0.5)
    for (x0, y0, x1, y1), color in zip(BOXES.astype(int), ((0.9, 0.2, 0.2), (0.2, 0.3, 0.9))):
        v[:, y0 + 10:y1 - 5, x0 + 20:x1 - 20] = torch.tensor(color)
    return v


def extract(models, **overrides):
    det, pose, _ = models
    args = dict(images=people_video(), detector_model=str(det), pose_model=str(pose), providers="cpu")
    args.update(overrides)
    return node_pose.AnyCrowdPoseExtractor().extract(**args)


def scene_tracks(scene) -> PoseTracks:
    n, t = scene.keypoints.shape[:2]
    kp = torch.zeros(n, t, NUM_KEYPOINTS, 3)
    kp[:, :, :18] = scene.keypoints
    present = ~torch.isnan(scene.track_boxes).any(-1)
    kp[~present] = 0
    return PoseTracks(kp, scene.track_boxes.clone(), present, scene.video.shape[1], scene.video.shape[2], list(range(n)))


def pose_keypoint_of(keypoints, height, width, shuffle_seed=None):
    """POSE_KEYPOINT frames of people `[P, T, 18, 3]` px (list order shuffled per frame if asked)."""
    rng = np.random.default_rng(shuffle_seed)
    frames = []
    for t in range(keypoints.shape[1]):
        order = rng.permutation(keypoints.shape[0]) if shuffle_seed is not None else range(keypoints.shape[0])
        people = [{"pose_keypoints_2d": [float(v) for v in keypoints[p, t].reshape(-1)]} for p in order
                  if (keypoints[p, t, :, 2] > 0).any()]
        frames.append({"people": people, "canvas_width": width, "canvas_height": height})
    return frames


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=2, num_frames=9, height=64, width=96, seed=0, scenario="crossing")


# --- declarations ------------------------------------------------------------------------

def test_pose_nodes_are_registered_and_real():
    for key in POSE_KEYS:
        cls = pack.NODE_CLASS_MAPPINGS[key]
        assert cls.__name__ == key and not hasattr(cls, "MISSING_DEPENDENCY")
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[key].startswith("AnyCrowd")


@pytest.mark.parametrize("key", POSE_KEYS)
def test_pose_node_declarations_are_consistent(key):
    cls = pack.NODE_CLASS_MAPPINGS[key]
    spec = {s.key: s for s in nodes.NODE_SPECS}[key]
    assert cls.CATEGORY == spec.category == "AnyCrowd/pose" and len(cls.DESCRIPTION) > 40
    assert tuple(cls.RETURN_TYPES) == spec.return_types and tuple(cls.RETURN_NAMES) == spec.return_names
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, decl in types.get(section, {}).items():
            assert name in params and decl[1].get("tooltip"), name
            if section == "optional":
                assert params[name].default is None
            if isinstance(decl[0], list) and "default" in decl[1]:
                assert decl[1]["default"] in decl[0]
    declared = set(types["required"]) | set(types.get("optional", {}))
    assert {p for p in params if p != "self"} == declared


def test_model_choices_offer_the_usual_file_names_without_comfyui():
    types = node_pose.AnyCrowdPoseExtractor.INPUT_TYPES()["required"]
    assert types["detector_model"][0][0] == "yolox_l.onnx"
    assert types["pose_model"][0][0] == "dw-ll_ucoco_384.onnx"
    assert node_pose.POSE_KEYPOINT == "POSE_KEYPOINT" and nodes.node_types.TRACKS == "ANYCROWD_TRACKS"


def test_new_inputs_of_encode_and_decoupler_are_optional_and_appended():
    enc = nodes.node_iilr_encode.AnyCrowdIILREncode.INPUT_TYPES()
    assert list(enc["optional"])[-1] == "tracks" and enc["optional"]["tracks"][0] == "ANYCROWD_TRACKS"
    dec = nodes.node_decoupler.AnyCrowdInstanceDecoupler.INPUT_TYPES()
    assert list(dec["optional"]) == ["align_to", "reference_pose", "anchor_frame", "align_binding"]
    assert dec["optional"]["anchor_frame"][1]["default"] == -1 and dec["optional"]["align_binding"][1]["default"] == ""


# --- Pose Extractor ----------------------------------------------------------------------

def test_extractor_tracks_the_planted_people_left_to_right_within_one_pixel(models):
    tracks, pose_video, pose_keypoint, preview = extract(models)
    points = models[2]
    assert isinstance(tracks, PoseTracks) and tracks.num_tracks == 2 and tracks.num_frames == T
    assert bool(tracks.present.all())
    # track 0 is the left person (planted second, lower score)
    left, right = points[1], points[0]
    for m, p in enumerate((left, right)):
        np.testing.assert_allclose(tracks.keypoints[m, :, 2, :2].numpy(), np.repeat(p[None, 6], T, 0), atol=1.0)  # r_shoulder
        np.testing.assert_allclose(tracks.keypoints[m, :, 107:128, :2].numpy(), np.repeat(p[None, 112:133], T, 0), atol=1.0)
    np.testing.assert_allclose(tracks.boxes[:, 0].numpy(), BOXES[[1, 0]], atol=1.0)
    assert pose_video.shape == (T, H, W, 3) and preview.shape == (T, H, W, 3)
    assert torch.equal(pose_video, render_pose_video(tracks))
    assert len(pose_keypoint) == T and [p["track_id"] for p in pose_keypoint[0]["people"]] == tracks.track_ids


def test_extractor_pose_keypoint_round_trips_to_the_same_tracks(models):
    tracks, _, pose_keypoint, _ = extract(models)
    back = pose_keypoint_to_tracks(pose_keypoint)
    assert back.track_ids == tracks.track_ids
    valid = tracks.keypoints[..., 2] > 0
    assert torch.equal(valid, back.keypoints[..., 2] > 0)
    torch.testing.assert_close(back.keypoints[..., :2][valid], tracks.keypoints[..., :2][valid], atol=1e-4, rtol=0)


def test_extractor_render_options_and_max_people(models):
    full = extract(models)[1]
    body = extract(models, draw_hands=False, draw_face=False)[1]
    assert body.sum() < full.sum()
    assert torch.equal(body, render_pose_video(extract(models)[0], draw_hands=False, draw_face=False))
    assert extract(models, max_people=1)[0].num_tracks == 1


def test_extractor_reports_progress_per_frame(models, monkeypatch):
    calls = []

    class Bar:
        def __init__(self, total):
            calls.append(("new", total))

        def update_absolute(self, value, total=None, preview=None):
            calls.append((value, total))

    monkeypatch.setattr(node_pose, "progress_bar", Bar)
    extract(models)
    assert calls == [("new", T)] + [(t, T) for t in range(1, T + 1)]


def test_extractor_cancel_raises_the_hosts_interruption_before_the_next_frame(models, monkeypatch):
    class Interrupted(Exception):
        pass

    checks = []

    def check():
        checks.append(1)
        if len(checks) == 3:
            raise Interrupted

    monkeypatch.setattr(node_pose, "check_interrupted", check)
    with pytest.raises(Interrupted):
        extract(models)
    assert len(checks) == 3


def test_extractor_keeps_sessions_unless_asked_to_release(models):
    extract(models)
    assert cached_sessions() == 2
    extract(models, release_models=True)
    assert cached_sessions() == 0


def test_extractor_missing_model_names_the_folder_and_the_files(models):
    with pytest.raises(AnyCrowdError, match=r"yolox_l\.onnx.*models/dwpose"):
        extract(models, detector_model="yolox_l.onnx")
    with pytest.raises(AnyCrowdError, match=r"nowhere\.onnx"):
        extract(models, pose_model="nowhere.onnx")


def test_extractor_finds_models_in_a_folder_given_by_name(models, monkeypatch):
    # outside ComfyUI the search folder is models/dwpose relative to the working directory
    det, pose, _ = models
    root = det.parent
    (root / "models" / "dwpose" / "yzd-v").mkdir(parents=True)
    for f in (det, pose):
        (root / "models" / "dwpose" / "yzd-v" / f.name).write_bytes(f.read_bytes())
    monkeypatch.chdir(root)
    tracks = extract(models, detector_model="yolox_l.onnx", pose_model="dw-ll_ucoco_384.onnx")[0]
    assert tracks.num_tracks == 2


def test_extractor_with_nobody_in_the_video_gives_empty_tracks(tmp_path, models):
    det = g.yolox_graph(tmp_path / "empty.onnx", g.empty_yolox_table())
    tracks, pose_video, pose_keypoint, preview = extract(models, detector_model=str(det))
    assert tracks.num_tracks == 0 and float(pose_video.abs().sum()) == 0
    assert all(f["people"] == [] for f in pose_keypoint) and preview.shape == (T, H, W, 3)


# --- Pose From Keypoints -----------------------------------------------------------------

def test_from_keypoints_retracks_shuffled_people_into_stable_ids(scene):
    data = pose_keypoint_of(scene.keypoints.numpy(), 64, 96, shuffle_seed=1)
    tracks, pose_video, preview = node_pose.AnyCrowdPoseFromKeypoints().convert(data, min_track_length=1)
    truth = scene_tracks(scene)
    assert tracks.num_tracks == 2 and pose_video.shape == (9, 64, 96, 3)
    # each track follows one character through the crossing (no identity switch)
    for m in range(2):
        d = [(tracks.keypoints[m, :, :18, :2] - truth.keypoints[k, :, :18, :2]).abs().amax().item() for k in range(2)]
        assert min(d) < 1e-3


def test_from_keypoints_normalised_coordinates_and_images_size(scene):
    kp = scene.keypoints.numpy().copy()
    kp[..., 0] /= 96
    kp[..., 1] /= 64
    data = pose_keypoint_of(kp, 64, 96)
    video = scene.video
    tracks, _, preview = node_pose.AnyCrowdPoseFromKeypoints().convert(data, identities="as_given", images=video)
    assert (tracks.height, tracks.width) == (64, 96) and preview.shape == video.shape
    ok = tracks.keypoints[..., 2] > 0
    torch.testing.assert_close(tracks.keypoints[:, :, :18][ok[:, :, :18]][:, :2],
                               scene_tracks(scene).keypoints[:, :, :18][ok[:, :, :18]][:, :2], atol=1e-3, rtol=0)


def test_from_keypoints_refuses_a_video_of_another_length(scene):
    data = pose_keypoint_of(scene.keypoints.numpy(), 64, 96)
    with pytest.raises(AnyCrowdError, match="images has 5 frames but the poses have 9"):
        node_pose.AnyCrowdPoseFromKeypoints().convert(data, images=scene.video[:5])


def test_tracks_to_pose_keypoint_to_tracks_round_trip_through_the_nodes(models):
    tracks, _, pose_keypoint, _ = extract(models)
    again = node_pose.AnyCrowdPoseFromKeypoints().convert(pose_keypoint, identities="as_given")[0]
    assert again.track_ids == tracks.track_ids
    v = tracks.keypoints[..., 2] > 0
    torch.testing.assert_close(again.keypoints[..., :2][v], tracks.keypoints[..., :2][v], atol=1e-4, rtol=0)


def test_extractor_edits_swap_drop_and_split_the_tracks_it_outputs(models):
    tracks = extract(models)[0]
    swapped, pose_video, pose_keypoint, preview = extract(models, edits="swap 0 1 @2")
    assert torch.equal(swapped.keypoints[0, :2], tracks.keypoints[0, :2])
    assert torch.equal(swapped.keypoints[0, 2:], tracks.keypoints[1, 2:])
    assert torch.equal(pose_video, render_pose_video(swapped))  # outputs follow the edited tracks
    assert [p["track_id"] for p in pose_keypoint[3]["people"]] == [0, 1]
    dropped = extract(models, edits="drop 0\nsplit 1 @3")[0]
    assert dropped.track_ids == [1, 2] and dropped.present.sum(1).tolist() == [3, 2]


def test_extractor_refuses_bad_edits_with_a_caret_before_loading_models(models):
    with pytest.raises(AnyCrowdError, match=r"Track edit error on line 2(.|\n)*swap 0 @3\n {8}\^"):
        extract(models, detector_model="missing.onnx", edits="drop 0\nswap 0 @3")
    with pytest.raises(AnyCrowdError, match="there is no track 7"):
        extract(models, edits="drop 7")


def test_extractor_appearance_cue_uses_the_video_and_can_be_switched_off(models):
    on, off = extract(models)[0], extract(models, appearance=False)[0]
    assert on.track_ids == off.track_ids and torch.equal(on.keypoints, off.keypoints)  # easy clip: same result


def test_from_keypoints_as_given_gives_back_saved_tracks_exactly(models):
    tracks = extract(models, edits="split 1 @2")[0]
    pose_keypoint = tracks_to_pose_keypoint(tracks)
    back = node_pose.AnyCrowdPoseFromKeypoints().convert(pose_keypoint, identities="as_given")[0]
    assert back.track_ids == tracks.track_ids == [0, 1, 2]
    assert torch.equal(back.present, tracks.present)
    torch.testing.assert_close(back.boxes, tracks.boxes, equal_nan=True)
    edited = node_pose.AnyCrowdPoseFromKeypoints().convert(pose_keypoint, identities="as_given",
                                                           edits="merge 2 into 1")[0]
    assert edited.track_ids == [0, 1] and bool(edited.present.all())


def test_from_keypoints_retrack_with_images_uses_the_colour_cue(scene):
    data = pose_keypoint_of(scene.keypoints.numpy(), 64, 96, shuffle_seed=1)
    with_colour = node_pose.AnyCrowdPoseFromKeypoints().convert(data, min_track_length=1, images=scene.video)[0]
    pose_only = node_pose.AnyCrowdPoseFromKeypoints().convert(data, min_track_length=1, images=scene.video,
                                                              appearance=False)[0]
    assert with_colour.num_tracks == pose_only.num_tracks == 2
    assert torch.equal(with_colour.keypoints, pose_only.keypoints)


# --- Masks From Poses --------------------------------------------------------------------

@pytest.fixture(scope="module")
def ref_scene():
    return make_scene(num_characters=2, num_frames=1, height=128, width=192, seed=3, scenario="crossing")


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum()) / float((a | b).sum())


def order_left_to_right(masks):
    xs = [torch.nonzero(m)[:, 1].float().mean().item() for m in masks]
    return list(np.argsort(xs))


def test_masks_from_tracks_follow_the_people_left_to_right(ref_scene):
    s = ref_scene
    tracks = PoseTracks(
        torch.cat([s.reference_keypoints, torch.zeros(2, NUM_KEYPOINTS - 18, 3)], 1)[:, None],
        torch.stack([torch.tensor([*torch.nonzero(m)[:, 1].aminmax(), *torch.nonzero(m)[:, 0].aminmax()])[[0, 2, 1, 3]].float()
                     + torch.tensor([0, 0, 1, 1]) for m in s.reference_masks])[:, None],
        torch.ones(2, 1, dtype=torch.bool), 128, 192, [0, 1])
    masks, preview = node_pose.AnyCrowdMasksFromPoses().make_masks(
        s.reference_image[None], "yolox_l.onnx", "dw-ll_ucoco_384.onnx", tracks=tracks)
    assert masks.shape == (2, 128, 192) and masks.dtype == torch.float32 and preview.shape == (1, 128, 192, 3)
    assert order_left_to_right(masks) == [0, 1]
    truth = [s.reference_masks[k] for k in order_left_to_right(s.reference_masks.float())]
    assert min(iou(masks[k], truth[k].float()) for k in range(2)) > 0.6


def test_masks_from_pose_keypoint_match_the_tracks_path(ref_scene):
    s = ref_scene
    data = pose_keypoint_of(s.reference_keypoints[:, None].numpy(), 128, 192)
    masks = node_pose.AnyCrowdMasksFromPoses().make_masks(
        s.reference_image[None], "yolox_l.onnx", "dw-ll_ucoco_384.onnx", pose_keypoint=data)[0]
    truth = [s.reference_masks[k] for k in order_left_to_right(s.reference_masks.float())]
    assert min(iou(masks[k], truth[k].float()) for k in range(2)) > 0.6


def test_masks_by_detection_on_the_image(models):
    det, pose, _ = models
    image = people_video(1)
    masks, _ = node_pose.AnyCrowdMasksFromPoses().make_masks(image, str(det), str(pose), providers="cpu")
    assert masks.shape == (2, H, W)
    for k, box in enumerate(BOXES[[1, 0]].astype(int)):  # left person first
        block = torch.zeros(H, W)
        x0, y0, x1, y1 = box
        block[y0 + 10:y1 - 5, x0 + 20:x1 - 20] = 1
        assert iou(masks[k], block) > 0.7


def test_masks_errors(ref_scene, models):
    s = ref_scene
    node = node_pose.AnyCrowdMasksFromPoses()
    data = pose_keypoint_of(s.reference_keypoints[:, None].numpy(), 128, 192)
    with pytest.raises(AnyCrowdError, match="Both tracks and pose_keypoint"):
        node.make_masks(s.reference_image[None], "a", "b", tracks=scene_tracks(make_scene(2, 5, 64, 96)), pose_keypoint=data)
    with pytest.raises(AnyCrowdError, match="frame 3 is outside"):
        node.make_masks(s.reference_image[None], "a", "b", frame=3, pose_keypoint=data)
    with pytest.raises(AnyCrowdError, match="another shape"):
        node.make_masks(s.reference_image[None], "a", "b", tracks=scene_tracks(make_scene(2, 5, 64, 64)))
    det, pose, _ = models
    with pytest.raises(AnyCrowdError, match="No person found"):
        node.make_masks(torch.full((1, 64, 64, 3), 0.5), str(g.yolox_graph(det.parent / "e.onnx", g.empty_yolox_table())), str(pose))


# --- IILR Encode with tracks + binding ---------------------------------------------------

def expected_layout(scene, tracks, text):
    inst = decouple(scene)[0]
    bound = resolve_binding(text, tracks, 2, reference_boxes=inst.masks)
    return build_token_layout(inst.instances.masks, padded_track_boxes(bound.tracks), bound.identities)


def same_layout(a, b):
    assert a.identity_tracks == b.identity_tracks
    for x, y in zip(a.vid_tokens, b.vid_tokens):
        assert torch.equal(x, y)


@pytest.mark.parametrize("text,canonical", [("", None), ("auto", None), ("A=1, B=0", "A=1, B=0"),
                                            ("1,0", "B=0, A=1"), ("0,1", "A=0, B=1")])
def test_encode_with_tracks_binds_with_the_pose_syntax_or_the_index_form(scene, text, canonical):
    tracks = scene_tracks(scene)
    layout = encode(scene, boxes="", tracks=tracks, binding=text)[4]
    same_layout(layout, expected_layout(scene, tracks, canonical))


def test_encode_with_tracks_one_to_many(scene):
    tracks = scene_tracks(scene)
    three = PoseTracks(torch.cat([tracks.keypoints, tracks.keypoints[:1]]), torch.cat([tracks.boxes, tracks.boxes[:1]]),
                       torch.cat([tracks.present, tracks.present[:1]]), 64, 96, [0, 1, 2])
    layout = encode(scene, boxes="", tracks=three, binding="A=0+2, B=1")[4]
    assert layout.identity_tracks == ((0, 1), (2,))


def test_encode_with_a_shifted_copy_redraws_the_control_video_from_the_bound_tracks(scene):
    tracks = scene_tracks(scene)
    one = PoseTracks(tracks.keypoints[:1], tracks.boxes[:1], tracks.present[:1], 64, 96, [0])
    text = "A=0, B=0@+0.3w"
    out = encode(scene, boxes="", tracks=one, binding=text)
    bound = resolve_binding(text, one, 2)
    ref = encode(scene, boxes="", tracks=one, binding="A=0, B=0@+0.3w", control_video=render_pose_video(bound.tracks))
    assert torch.equal(out[0][0][1]["vace_frames"][-1], ref[0][0][1]["vace_frames"][-1])
    plain = encode(scene)  # the scene's own pose video: two people, not these
    assert not torch.equal(out[0][0][1]["vace_frames"][-1], plain[0][0][1]["vace_frames"][-1])
    assert out[4].identity_tracks == ((0,), (1,))


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (dict(binding=""), r"1 motion tracks but 2 reference identities: bind them explicitly, e.g. \"A=0, B=0@\+0.25w\""),
        (dict(binding="0"), "has 1 entries but there are 2"),
        (dict(binding="A=0"), "Identity B is not bound"),
        (dict(binding="A=0, B=7"), "track 7 does not exist"),
    ],
)
def test_encode_with_tracks_counts_that_cannot_be_bound_suggest_a_binding(scene, overrides, fragment):
    tracks = scene_tracks(scene)
    if "motion tracks" in fragment:
        tracks = PoseTracks(tracks.keypoints[:1], tracks.boxes[:1], tracks.present[:1], 64, 96, [0])
    with pytest.raises(AnyCrowdError, match=fragment):
        encode(scene, boxes="", tracks=tracks, **overrides)


def test_encode_with_tracks_refuses_boxes_too_and_other_lengths(scene):
    tracks = scene_tracks(scene)
    with pytest.raises(AnyCrowdError, match="Both tracks and boxes"):
        encode(scene, tracks=tracks)
    short = PoseTracks(tracks.keypoints[:, :5], tracks.boxes[:, :5], tracks.present[:, :5], 64, 96, [0, 1])
    with pytest.raises(AnyCrowdError, match="tracks have 5 frames but length is 9"):
        encode(scene, boxes="", tracks=short)
    wide = PoseTracks(tracks.keypoints, tracks.boxes, tracks.present, 64, 192, [0, 1])
    with pytest.raises(AnyCrowdError, match="another shape"):
        encode(scene, boxes="", tracks=wide)


def test_encode_boxes_accept_the_pose_syntax_without_offsets(scene):
    import json

    from test_nodes import boxes_text

    recast = encode(scene, binding="A=1, B=0")[4]
    swapped = json.dumps([json.loads(boxes_text(scene.track_boxes))[i] for i in (1, 0)])
    same_layout(recast, encode(scene, boxes=swapped, binding="0,1")[4])
    with pytest.raises(AnyCrowdError, match="needs pose tracks"):
        encode(scene, binding="A=0, B=0@+0.3w")


def test_validate_inputs_accepts_both_binding_forms():
    validate = nodes.node_iilr_encode.AnyCrowdIILREncode.VALIDATE_INPUTS
    for text in ("0,1,2", "A=0, B=1", "A=0+1, B=0@+0.3w", "auto", ""):
        assert validate(binding=text) is True, text
    assert "not a list" in validate(binding="A=") and "Binding syntax error" in validate(binding="A=")


# --- Instance Decoupler alignment --------------------------------------------------------

def test_decoupler_aligns_identities_onto_their_tracks_like_the_core(scene):
    tracks = scene_tracks(scene)
    data = pose_keypoint_of(scene.reference_keypoints[:, None].numpy(), 64, 96)
    node = nodes.node_decoupler.AnyCrowdInstanceDecoupler()
    ref, preview = node.decouple(scene.reference_image[None], scene.reference_masks.float(), align_to=tracks,
                                 reference_pose=data, anchor_frame=0)
    plain = decouple(scene)[0]
    bound = resolve_binding(None, tracks, 2, reference_boxes=plain.masks)
    kp = torch.cat([scene.reference_keypoints, torch.zeros(2, NUM_KEYPOINTS - 18, 3)], 1)
    core = align_identities(plain.instances.identity_images, plain.instances.masks, kp, bound, anchor_frame=0)
    assert torch.equal(ref.instances.identity_images, core.images) and torch.equal(ref.instances.masks, core.masks)
    assert ref.alignment.rules == core.rules and ref.instances.size == (tracks.height, tracks.width)
    assert ref.num_identities == 2 and preview.shape[0] == 1
    layout = encode(scene, instances=ref, boxes="", tracks=tracks)[4]  # aligned instances encode
    assert layout.num_identities == 2


def test_decoupler_alignment_without_reference_pose_uses_boxes(scene):
    node = nodes.node_decoupler.AnyCrowdInstanceDecoupler()
    ref = node.decouple(scene.reference_image[None], scene.reference_masks.float(), align_to=scene_tracks(scene))[0]
    assert ref.alignment.rules == ["box", "box"]


def test_decoupler_alignment_errors(scene):
    node = nodes.node_decoupler.AnyCrowdInstanceDecoupler()
    data = pose_keypoint_of(scene.reference_keypoints[:, None].numpy(), 64, 96)
    with pytest.raises(AnyCrowdError, match="connect align_to too"):
        node.decouple(scene.reference_image[None], scene.reference_masks.float(), reference_pose=data)
    with pytest.raises(AnyCrowdError, match="exclude each other"):
        node.decouple(scene.reference_image[None], scene.reference_masks.float(), reassign=True, align_to=scene_tracks(scene))
