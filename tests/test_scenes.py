"""Specification of the procedural scenes used as ground truth by tests and the demo."""

import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.scenes import KEYPOINT_NAMES, OPENPOSE_COLORS, UPPER, make_scene


@pytest.fixture(scope="module")
def crossing():
    return make_scene(num_characters=3, num_frames=17, height=128, width=192, seed=0)


@pytest.fixture(scope="module")
def exit_scene():
    return make_scene(num_characters=3, num_frames=17, seed=3, scenario="exit_reenter")


def test_shapes_and_dtypes(crossing):
    s = crossing
    assert s.reference_image.shape == (128, 192, 3) and s.reference_image.dtype == torch.float32
    assert s.reference_masks.shape == (3, 128, 192) and s.reference_masks.dtype == torch.bool
    assert s.video.shape == (17, 128, 192, 3)
    assert s.track_masks.shape == (3, 17, 128, 192) and s.track_masks.dtype == torch.bool
    assert s.track_boxes.shape == (3, 17, 4)
    assert s.keypoints.shape == (3, 17, 18, 3)
    assert s.pose_video.shape == (17, 128, 192, 3)
    assert s.depth_order.shape == (17, 3)
    assert len(KEYPOINT_NAMES) == 18 and KEYPOINT_NAMES[1] == "neck" and KEYPOINT_NAMES[17] == "l_ear"
    for t in (s.reference_image, s.video, s.pose_video):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_same_seed_same_scene_and_other_seed_differs():
    a, b, c = make_scene(seed=5), make_scene(seed=5), make_scene(seed=6)
    assert torch.equal(a.video, b.video) and torch.equal(a.track_masks, b.track_masks)
    assert not torch.equal(a.video, c.video)


def test_reference_is_a_group_photo_of_separate_characters(crossing):
    s = crossing
    m = s.reference_masks
    assert m.flatten(1).any(1).all()
    assert int(m.sum(0).max()) == 1  # no two characters overlap in the reference
    outside = ~m.any(0)
    assert torch.equal(s.reference_image[outside], s.background[outside])


def test_reference_keypoints_lie_on_their_own_character(crossing):
    s = crossing
    for k in range(3):
        for j in range(18):
            x, y, c = s.reference_keypoints[k, j].tolist()
            assert c == 1.0
            assert bool(s.reference_masks[k, round(y), round(x)]), (k, KEYPOINT_NAMES[j])


def test_track_masks_are_disjoint_and_explain_every_changed_pixel(crossing):
    s = crossing
    assert int(s.track_masks.sum(0).max()) == 1
    union = s.track_masks.any(0)  # [T, H, W]
    bg = s.background.expand_as(s.video)
    assert torch.equal(s.video[~union], bg[~union])
    for k in range(3):
        pixels = s.video[s.track_masks[k]]  # [P, 3]
        dist = (pixels[:, None, :] - s.colors[k][None]).abs().sum(-1).min(1).values
        assert float(dist.max()) < 1e-6, f"pixels of track {k} not in its own colours"


def test_front_character_hides_the_one_behind(crossing):
    s = crossing
    covered_joints = 0
    for f in range(s.num_frames):
        order = s.depth_order[f].tolist()
        feet = s.keypoints[order, f][:, [10, 13], 1].max(1).values
        assert (feet[1:] >= feet[:-1]).all()  # back to front = feet lower in the image
        for rank, k in enumerate(order):
            for x, y, c in s.keypoints[k, f].tolist():
                if c == 0:
                    continue
                owner = s.track_masks[:, f, round(y), round(x)]
                if rank == len(order) - 1:
                    assert bool(owner[k])  # the front character is never covered
                elif not owner[k]:
                    assert owner.any()  # a hidden joint is covered by another character
                    covered_joints += 1
    assert covered_joints > 0, "crossing scenario never overlaps"


def test_crossing_characters_swap_sides(crossing):
    s = crossing
    cx = (s.track_boxes[..., 0] + s.track_boxes[..., 2]) / 2  # [N, T]
    assert cx[0, 0] < cx[2, 0] and cx[0, -1] > cx[2, -1]


def test_boxes_match_visible_masks_and_frame(crossing):
    s = crossing
    b = s.track_boxes
    assert not torch.isnan(b).any()
    assert float(b[..., 0].min()) >= 0 and float(b[..., 2].max()) <= 192
    assert float(b[..., 1].min()) >= 0 and float(b[..., 3].max()) <= 128
    for k in range(3):
        for f in range(s.num_frames):
            x0, y0, x1, y1 = (int(v) for v in b[k, f])
            inside = torch.zeros(128, 192, dtype=torch.bool)
            inside[y0:y1, x0:x1] = True
            assert not (s.track_masks[k, f] & ~inside).any()


def test_exit_reenter_character_leaves_and_returns(exit_scene):
    s = exit_scene
    absent = torch.isnan(s.track_boxes[0, :, 0])
    assert not absent[0] and not absent[-1]
    assert absent[8] and int(absent.sum()) >= 3
    assert torch.equal(s.keypoints[0][absent][..., 2], torch.zeros(int(absent.sum()), 18))
    assert not s.track_masks[0][absent].any()
    assert not torch.isnan(s.track_boxes[1:]).any()
    # partly out of frame before leaving: boxes are clipped to the frame
    partial = (~absent) & (s.track_boxes[0, :, 0] == 0)
    assert partial.any()


def test_keypoint_confidence_marks_in_frame_points(exit_scene):
    kp = exit_scene.keypoints
    vis = kp[..., 2] == 1
    assert ((kp[..., 0][vis] >= 0) & (kp[..., 0][vis] <= 191) & (kp[..., 1][vis] <= 127)).all()
    assert (kp[..., :2][~vis] == 0).all()
    assert set(kp[..., 2].unique().tolist()) == {0.0, 1.0}


def test_pose_video_uses_openpose_colors_at_joints():
    s = make_scene(scenario="static", seed=1)
    for f in (0, 8, 16):
        for k in range(3):
            for j in (1, 2, 5, 8, 11):  # neck, shoulders, hips: never covered by another joint
                x, y, _ = s.keypoints[k, f, j].tolist()
                expected = torch.tensor(OPENPOSE_COLORS[j], dtype=torch.float32) / 255
                assert torch.allclose(s.pose_video[f, round(y), round(x)], expected, atol=1e-6)
    assert float(s.pose_video[:, :4, :4].abs().max()) == 0.0  # black canvas


def test_static_scenario_keeps_positions_but_moves_limbs():
    s = make_scene(scenario="static", seed=2)
    neck = s.keypoints[:, :, 1, :2]
    assert torch.allclose(neck, neck[:, :1].expand_as(neck))
    assert not torch.equal(s.keypoints[:, 0, 4], s.keypoints[:, 4, 4])  # wrists move


def test_invalid_geometry_raises_with_fix():
    with pytest.raises(AnyCrowdError, match=r"13 or 17"):
        make_scene(num_frames=16)
    with pytest.raises(AnyCrowdError, match=r"multiples of 16"):
        make_scene(height=120)
    with pytest.raises(AnyCrowdError, match=r"crossing"):
        make_scene(scenario="spiral")
    with pytest.raises(AnyCrowdError, match=r"wider scene"):
        make_scene(num_characters=12, width=64, height=64)


def test_many_characters():
    s = make_scene(num_characters=3, num_frames=17, height=128, width=192)
    s6 = make_scene(num_characters=6, num_frames=5, height=128, width=384, seed=4)
    assert s6.reference_masks.shape[0] == 6 and int(s6.reference_masks.sum(0).max()) == 1
    assert np.isfinite(s.track_boxes.numpy()).all()


@pytest.mark.parametrize("scenario", ["crossing", "exit_reenter", "static", "swap", "group_crossing", "occlusion"])
def test_every_scenario_keeps_parts_masks_and_video_consistent(scenario):
    s = make_scene(num_characters=4, num_frames=9, seed=11, scenario=scenario)
    assert torch.equal(s.track_masks, s.track_parts > 0)
    assert torch.equal(s.reference_masks, s.reference_parts > 0)
    assert torch.equal(s.video_for_binding(range(4)), s.video)
    visible = s.track_masks.flatten(2).sum(-1).float()
    assert (visible <= s.body_area).all() and (s.body_area[visible > 0] > 0).all()


def test_every_character_wears_two_distinct_tones_that_no_other_character_shares():
    s = make_scene(num_characters=9, num_frames=5, width=576, seed=3)
    upper, lower = s.colors[:, 0], s.colors[:, 1]
    assert float((upper - lower).abs().sum(-1).min()) > 0.3  # upper and lower differ for everyone
    tones = torch.cat([upper, lower])
    dist = (tones[:, None] - tones[None]).abs().sum(-1) + torch.eye(18) * 9
    assert float(dist.min()) > 0.1  # no tone is shared between characters or parts


def test_video_for_binding_repaints_each_track_in_its_identity_colours():
    s = make_scene(num_characters=3, num_frames=9, seed=4, scenario="swap")
    v = s.video_for_binding([2, 0, 1])
    for track, identity in ((0, 2), (1, 0), (2, 1)):
        upper = s.track_parts[track] == UPPER
        assert torch.equal(v[upper], s.colors[identity, 0].expand(int(upper.sum()), 3))
    outside = ~s.track_masks.any(0)
    assert torch.equal(v[outside], s.video[outside])
    with pytest.raises(AnyCrowdError, match="one identity index"):
        s.video_for_binding([0, 1])


def test_swap_scenario_pairs_trade_places():
    s = make_scene(num_characters=4, num_frames=17, seed=2, scenario="swap")
    cx = (s.track_boxes[..., 0] + s.track_boxes[..., 2]) / 2
    assert cx[0, 0] < cx[1, 0] and cx[0, -1] > cx[1, -1]
    assert cx[2, 0] < cx[3, 0] and cx[2, -1] > cx[3, -1]

