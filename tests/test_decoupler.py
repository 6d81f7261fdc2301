"""Specification of the Instance Decoupler (AnyCrowd §3.2)."""

import cv2
import numpy as np
import pytest
import torch

from anycrowd_core.decoupler import decouple_instances, preview
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.scenes import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=3, num_frames=5, seed=0)


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_identity_images_hold_one_character_on_gray(scene):
    d = decouple_instances(scene.reference_image, scene.reference_masks)
    assert d.identity_images.shape == (3, 128, 192, 3) and d.masks.shape == (3, 128, 192)
    for k in range(3):
        m = scene.reference_masks[k]
        assert torch.equal(d.identity_images[k][m], scene.reference_image[m])
        assert (d.identity_images[k][~m] == 0.5).all()
    assert torch.equal(d.masks, scene.reference_masks)
    assert torch.equal(d.offsets, torch.zeros(3, 2)) and torch.equal(d.scales, torch.ones(3))


def test_background_removes_all_characters(scene):
    d = decouple_instances(scene.reference_image, scene.reference_masks, gray=0.25)
    union = scene.reference_masks.any(0)
    assert (d.background[union] == 0.25).all()
    assert torch.equal(d.background[~union], scene.reference_image[~union])


def test_inpaint_fill_restores_background_near_the_holes(scene):
    d = decouple_instances(scene.reference_image, scene.reference_masks, fill="inpaint")
    union = scene.reference_masks.any(0)
    err_inpaint = (d.background[union] - scene.background[union]).abs().mean()
    err_gray = (0.5 - scene.background[union]).abs().mean()
    assert err_inpaint < 0.5 * err_gray
    far = ~torch.from_numpy(cv2.dilate(union.numpy().astype(np.uint8), np.ones((7, 7), np.uint8)) > 0)
    assert torch.allclose(d.background[far], scene.reference_image[far], atol=0.5 / 255 + 1e-6)


def test_boxes_are_xyxy_of_masks(scene):
    d = decouple_instances(scene.reference_image, scene.reference_masks)
    for k in range(3):
        ys, xs = torch.nonzero(d.masks[k], as_tuple=True)
        assert d.boxes[k].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_reassignment_moves_characters_without_overlap(scene):
    d = decouple_instances(scene.reference_image, scene.reference_masks, reassign=True, seed=7)
    boxes = d.boxes.tolist()
    for i in range(3):
        for j in range(i + 1, 3):
            assert not _overlap(boxes[i], boxes[j])
    for k in range(3):
        dx, dy = (int(v) for v in d.offsets[k])
        moved = torch.roll(scene.reference_masks[k], shifts=(dy, dx), dims=(0, 1))
        assert torch.equal(d.masks[k], moved)
        # same pixels, same raster order: a pure translation of the character
        assert torch.equal(d.identity_images[k][d.masks[k]], scene.reference_image[scene.reference_masks[k]])
        assert (d.identity_images[k][~d.masks[k]] == 0.5).all()
    # the background stays in place
    assert torch.equal(d.background, decouple_instances(scene.reference_image, scene.reference_masks).background)


def test_reassignment_is_seeded(scene):
    a = decouple_instances(scene.reference_image, scene.reference_masks, reassign=True, seed=3)
    b = decouple_instances(scene.reference_image, scene.reference_masks, reassign=True, seed=3)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.identity_images, b.identity_images)
    layouts = {
        tuple(decouple_instances(scene.reference_image, scene.reference_masks, reassign=True, seed=s).boxes.flatten().tolist())
        for s in range(4)
    }
    assert len(layouts) == 4


def test_row_fallback_shrinks_characters_that_cannot_be_scattered():
    h, w = 64, 96
    img = torch.rand(h, w, 3, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, 2:60, 0:50] = True  # three wide characters: never fit side by side unscaled
    masks[1, 4:62, 30:80] = True
    masks[2, 0:64, 46:96] = True
    d = decouple_instances(img, masks, reassign=True, seed=0)
    assert float(d.scales[0]) == pytest.approx(96 / 150) and torch.equal(d.scales, d.scales[:1].expand(3))
    boxes = d.boxes.tolist()
    for i in range(3):
        assert d.masks[i].any()
        assert boxes[i][2] - boxes[i][0] == int(50 * 96 / 150)
        for j in range(i + 1, 3):
            assert not _overlap(boxes[i], boxes[j])
        assert boxes[i][3] == h  # bottoms aligned on the canvas floor


def test_accepts_numpy_float_masks_and_image_batch(scene):
    img = scene.reference_image.numpy()[None]  # [1, H, W, 3]
    soft = scene.reference_masks.numpy().astype(np.float32) * 0.6 + 0.2  # 0.8 inside, 0.2 outside
    d = decouple_instances(img, soft)
    assert torch.equal(d.masks, scene.reference_masks)


def test_input_errors_name_the_problem(scene):
    img, m = scene.reference_image, scene.reference_masks
    with pytest.raises(AnyCrowdError, match="No instance masks"):
        decouple_instances(img, m[:0])
    empty = m.clone()
    empty[1] = False
    with pytest.raises(AnyCrowdError, match=r"\[1\].*empty"):
        decouple_instances(img, empty)
    with pytest.raises(AnyCrowdError, match=r"96x64.*192x128"):
        decouple_instances(img, m[:, :64, :96])
    with pytest.raises(AnyCrowdError, match=r"\[H, W, 3\]"):
        decouple_instances(img[..., 0], m)
    with pytest.raises(AnyCrowdError, match="fill"):
        decouple_instances(img, m, fill="blur")


def test_preview_tiles_identities_and_background(scene):
    d = decouple_instances(scene.reference_image, scene.reference_masks)
    p = preview(d)
    assert p.shape == (128, 4 * 192 + 3 * 2, 3)
    assert torch.equal(p[:, :192], d.identity_images[0])
    assert (p[:, 192:194] == 1.0).all()
    assert torch.equal(p[:, 2 * 194 : 2 * 194 + 192], d.identity_images[2])
    assert torch.equal(p[:, -192:], d.background)
