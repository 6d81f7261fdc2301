"""Specification of GrabCut reference instance masks from boxes + keypoints."""

import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.grabcut_masks import grabcut_instance_masks
from anycrowd_core.scenes import make_scene


def iou(a, b):
    return float((a & b).sum()) / float((a | b).sum())


def loose_boxes(masks, pad=0.05):
    """Detector-like boxes: the true mask boxes grown by `pad` x height, clipped."""
    n, h, w = masks.shape
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        x0, y0, x1, y1 = xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1
        p = pad * (y1 - y0)
        out.append([max(0, x0 - p), max(0, y0 - p), min(w, x1 + p), min(h, y1 + p)])
    return torch.tensor(out)


@pytest.mark.parametrize("n, height, width, seed", [(3, 128, 192, 0), (4, 256, 512, 2), (2, 256, 384, 3)])
def test_masks_match_the_true_reference_masks(n, height, width, seed):
    s = make_scene(num_characters=n, num_frames=5, height=height, width=width, seed=seed, scenario="static")
    for boxes in (None, loose_boxes(s.reference_masks)):  # keypoint-extent boxes, detector-like boxes
        masks = grabcut_instance_masks(s.reference_image, s.reference_keypoints, boxes)
        assert masks.shape == (n, height, width) and masks.dtype == torch.bool
        scores = [iou(masks[k], s.reference_masks[k]) for k in range(n)]
        assert min(scores) >= 0.7, scores
        assert int(masks.sum(0).max()) <= 1  # one owner per pixel


def test_batch_of_one_image_and_128_point_keypoints_are_accepted():
    s = make_scene(num_characters=2, num_frames=5, height=128, width=192, seed=5, scenario="static")
    kp = torch.zeros(2, 128, 3)
    kp[:, :18] = s.reference_keypoints
    masks = grabcut_instance_masks(s.reference_image[None], kp)
    assert min(iou(masks[k], s.reference_masks[k]) for k in range(2)) >= 0.7


def test_bad_inputs_raise_readable_errors():
    s = make_scene(num_characters=2, num_frames=5, height=128, width=192, seed=5, scenario="static")
    with pytest.raises(AnyCrowdError, match=r"boxes must be \[N, 4\]"):
        grabcut_instance_masks(s.reference_image, s.reference_keypoints, torch.zeros(3, 4))
    kp = s.reference_keypoints.clone()
    kp[1, :, 2] = 0
    with pytest.raises(AnyCrowdError, match=r"People \[1\] have no box"):
        grabcut_instance_masks(s.reference_image, kp)
    with pytest.raises(AnyCrowdError, match="18 or 128"):
        grabcut_instance_masks(s.reference_image, s.reference_keypoints[:, :10])
