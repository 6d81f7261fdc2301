"""Specification of One-to-All "pose" alignment of isolated identities onto their tracks."""

import cv2
import numpy as np
import pytest
import torch

from anycrowd_core.decoupler import decouple_instances
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.align import align_identities, alignment_scale, pick_anchor_frame
from anycrowd_core.pose.binding import parse_binding
from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks
from anycrowd_core.scenes import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=2, num_frames=5, height=256, width=384, seed=1, scenario="static")


@pytest.fixture(scope="module")
def decoupled(scene):
    return decouple_instances(scene.reference_image, scene.reference_masks)


def tracks_from(kp18, height, width):
    """PoseTracks `[M, T]` from COCO-18 keypoints `[M, T, 18, 3]` (boxes = keypoint extent)."""
    kp18 = torch.as_tensor(kp18, dtype=torch.float32)
    m, t = kp18.shape[:2]
    kp = torch.zeros(m, t, NUM_KEYPOINTS, 3)
    kp[:, :, :18] = kp18
    xy = kp18[..., :2]
    boxes = torch.cat([xy.amin(2), xy.amax(2) + 1], -1)
    return PoseTracks(kp, boxes, torch.ones(m, t, dtype=torch.bool), height, width, list(range(m)))


def transformed(kp, s, dx, dy):
    out = kp.clone()
    out[..., 0] = kp[..., 0] * s + dx
    out[..., 1] = kp[..., 1] * s + dy
    return out


def test_matching_pose_leaves_the_identity_in_place(scene, decoupled):
    ref = scene.reference_keypoints
    tracks = tracks_from(ref[:, None].expand(2, 3, 18, 3), 256, 384)
    out = align_identities(decoupled.identity_images, decoupled.masks, ref, tracks)
    assert out.rules == ["shoulder+torso"] * 2
    assert torch.allclose(out.scales, torch.ones(2))
    assert torch.allclose(out.matrices, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3), atol=1e-5)
    assert torch.equal(out.masks, decoupled.masks)
    assert torch.allclose(out.images, decoupled.identity_images, atol=1e-5)
    assert not out.padding.any()


def test_scaled_and_moved_track_gives_the_scale_and_places_the_neck(scene, decoupled):
    ref = scene.reference_keypoints
    drv = transformed(ref, 0.6, 40.0, 60.0)
    tracks = tracks_from(drv[:, None], 256, 384)
    out = align_identities(decoupled.identity_images, decoupled.masks, ref, tracks)
    assert torch.allclose(out.scales, torch.full((2,), 0.6), atol=1e-5)
    # aligned reference keypoints land on the driving ones (neck anchor + uniform scale)
    assert torch.allclose(out.keypoints[..., :2], drv[..., :2], atol=1e-3)
    for k in range(2):
        m = out.matrices[k].double().numpy()
        expect = cv2.warpAffine(decoupled.masks[k].numpy().astype(np.float32), m, (384, 256)) >= 0.5
        assert np.array_equal(out.masks[k].numpy(), expect)
        # padding: the output region the shrunk reference canvas does not reach
        cover = cv2.warpAffine(np.ones((256, 384), np.float32), m, (384, 256), flags=cv2.INTER_NEAREST) > 0.5
        assert np.array_equal(out.padding[k].numpy(), ~cover)
        assert abs(out.padding[k].float().mean().item() - (1 - 0.36)) < 0.03
        assert not (out.padding[k] & out.masks[k]).any()
        # gray outside the identity
        assert torch.allclose(out.images[k][~out.masks[k]], torch.tensor(0.5))


def test_scale_rules_fall_back_in_one_to_all_order():
    ref = np.zeros((18, 3))
    ref[[2, 5, 8, 11, 16, 17]] = [(90, 50, 1), (110, 50, 1), (95, 90, 1), (105, 90, 1), (96, 30, 1), (104, 30, 1)]
    drv = ref.copy()
    drv[:, :2] *= 2
    assert alignment_scale(ref, drv) == (pytest.approx(2.0), "shoulder+torso")
    no_hips = drv.copy()
    no_hips[8, 2] = 0
    assert alignment_scale(ref, no_hips) == (pytest.approx(2.0), "shoulder")
    no_sh = no_hips.copy()
    no_sh[2, 2] = 0
    assert alignment_scale(ref, no_sh) == (pytest.approx(2.0), "ear")
    nothing = np.zeros((18, 3))
    assert alignment_scale(ref, nothing, ref_box=(0, 0, 10, 50), drv_box=(0, 0, 10, 75)) == (1.5, "box")
    with pytest.raises(AnyCrowdError, match="Cannot measure"):
        alignment_scale(ref, nothing)
    # shoulder width and torso height are averaged (One-to-All's shoulder+torso rule)
    wide = ref.copy()
    wide[5, 0] = 130  # driving shoulders twice as wide, same torso height
    assert alignment_scale(ref, wide)[0] == pytest.approx(0.5 * (40 / 20 + 1.0))


def test_anchor_frame_prefers_usable_ratios_then_matching_orientation():
    ref = np.zeros((18, 3))
    ref[[0, 1, 2, 5, 8, 11, 16, 17]] = [(100, 20, 1), (100, 40, 1), (90, 42, 1), (110, 42, 1),
                                         (95, 90, 1), (105, 90, 1), (96, 20, 1), (104, 20, 1)]
    frames = np.repeat(ref[None], 4, 0)
    frames[0, 8, 2] = 0  # hips missing: fewer usable ratios
    frames[1, 5, 1] = 80  # tilted shoulders (1.09 rad)
    frames[3, 0, 0] = 120  # head leaning (0.79 rad)
    present = np.ones(4, bool)
    assert pick_anchor_frame(ref, frames, present) == 2
    present[2] = False
    assert pick_anchor_frame(ref, frames, present) == 3  # smaller orientation difference


def test_binding_decides_which_track_each_identity_follows(scene, decoupled):
    ref = scene.reference_keypoints
    drv = torch.stack([transformed(ref[0], 0.8, 0, 30), transformed(ref[1], 0.8, 0, 30)])[:, None]
    tracks = tracks_from(drv, 256, 384)
    b = parse_binding("A=1, B=0", tracks, 2)  # recast: A follows track 1, B track 0
    out = align_identities(decoupled.identity_images, decoupled.masks, ref, b)
    assert out.track_indices == [0, 1]  # A is the first output track (source 1)
    assert torch.allclose(out.keypoints[0, 1, :2], drv[1, 0, 1, :2], atol=1e-3)
    assert torch.allclose(out.keypoints[1, 1, :2], drv[0, 0, 1, :2], atol=1e-3)


def test_explicit_anchor_frame_uses_the_nearest_visible_frame(scene, decoupled):
    ref = scene.reference_keypoints
    drv = torch.stack([transformed(ref, 1.0, float(10 * f), 0.0) for f in range(3)], 1)  # [2, 3, 18, 3]
    tracks = tracks_from(drv, 256, 384)
    tracks.present[0, 2] = False
    tracks.keypoints[0, 2] = 0
    out = align_identities(decoupled.identity_images, decoupled.masks, ref, tracks, anchor_frame=2)
    assert out.anchor_frames == [1, 2]
    assert out.matrices[0, 0, 2].item() == pytest.approx(10.0) and out.matrices[1, 0, 2].item() == pytest.approx(20.0)


def test_bad_inputs_raise_readable_errors(scene, decoupled):
    ref = scene.reference_keypoints
    tracks = tracks_from(ref[:, None], 256, 384)
    with pytest.raises(AnyCrowdError, match="reference_keypoints"):
        align_identities(decoupled.identity_images, decoupled.masks, ref[:1], tracks)
    with pytest.raises(AnyCrowdError, match="must match"):
        align_identities(decoupled.identity_images, decoupled.masks[:, :100], ref, tracks)
    with pytest.raises(AnyCrowdError, match="Binding or PoseTracks"):
        align_identities(decoupled.identity_images, decoupled.masks, ref, "A=0")
    far = tracks_from(transformed(ref, 1.0, 5000.0, 0.0)[:, None], 256, 384)
    with pytest.raises(AnyCrowdError, match="outside the frame"):
        align_identities(decoupled.identity_images, decoupled.masks, ref, far)


def test_mask_only_tracks_are_refused_naming_the_pose_extractor(scene, decoupled):
    """Tracks with boxes but no keypoints (AnyCrowd Identity Masks) cannot drive the alignment:
    the error says so instead of calling a visible track 'never visible'."""
    ref = scene.reference_keypoints
    tracks = tracks_from(ref[:, None].expand(2, 3, 18, 3), 256, 384)
    mask_only = PoseTracks(torch.zeros_like(tracks.keypoints), tracks.boxes, tracks.present, 256, 384, [0, 1])
    for anchor in (None, 1):
        with pytest.raises(AnyCrowdError, match="boxes but no keypoints.*Pose Extractor"):
            align_identities(decoupled.identity_images, decoupled.masks, ref, mask_only, anchor_frame=anchor)
    absent = PoseTracks(torch.zeros_like(tracks.keypoints), tracks.boxes, torch.zeros_like(tracks.present), 256, 384, [0, 1])
    with pytest.raises(AnyCrowdError, match="never visible"):
        align_identities(decoupled.identity_images, decoupled.masks, ref, absent)
