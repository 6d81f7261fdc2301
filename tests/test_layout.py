"""Token layout: reference pooling, box/patch rule, latent-frame union, candidates, soft
labels and the errors a user can hit (anycrowd_core/layout.py, docs/tsda.md)."""

import math

import pytest
import torch

from anycrowd_core.boxes import boxes_from_masks
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout

NAN = float("nan")


def full_masks(n, h=32, w=48):
    return torch.ones(n, h, w, dtype=torch.bool)


def still_boxes(box, frames=5):
    return torch.tensor([box], dtype=torch.float32).expand(frames, 4).clone()[None]


def test_reference_token_is_in_from_half_patch_occupancy():
    masks = torch.zeros(1, 32, 48, dtype=torch.bool)
    masks[0, :16, :8] = True  # token (0, 0): exactly half
    masks[0, :16, 16:23] = True  # token (0, 1): 7/16 < half
    layout = build_token_layout(masks, still_boxes([0, 0, 1, 1]), [0])
    assert layout.ref_tokens[0].tolist() == [0]
    assert layout.void_tokens[0].tolist() == [1, 2, 3, 4, 5]


def test_tiny_reference_mask_keeps_its_most_covered_token():
    masks = torch.zeros(1, 32, 48, dtype=torch.bool)
    masks[0, 20:22, 40:41] = True  # 2 px in token (1, 2)
    masks[0, 0, 0] = True  # 1 px in token (0, 0)
    layout = build_token_layout(masks, still_boxes([0, 0, 1, 1]), [0])
    assert layout.ref_tokens[0].tolist() == [5]


def test_reference_frames_are_laid_out_identities_then_background_then_video():
    layout = build_token_layout(full_masks(2), torch.full((2, 5, 4), NAN), [0, 1])
    assert layout.grid == (2, 3) and layout.video_frames == 2 and layout.num_ref_frames == 3
    assert layout.ref_tokens[1].tolist() == list(range(6, 12))
    assert layout.bg_ref_tokens.tolist() == list(range(12, 18))
    assert layout.video_start == 18 and layout.num_tokens == 30


def test_box_includes_patches_it_overlaps_with_positive_area():
    # x 16..33 touches column 1 fully and column 2 by one pixel; y 0..16 ends on a patch edge
    layout = build_token_layout(full_masks(1), still_boxes([16, 0, 33, 16], frames=1), [0])
    assert (layout.vid_tokens[0] - layout.video_start).tolist() == [1, 2]


def test_boxes_are_clipped_and_boxes_outside_the_frame_are_absent():
    boxes = torch.tensor([[[-30.0, -5, 10, 20], [100, 0, 130, 10], [0, 0, 0, 32],
                           [47.5, 31.5, 80, 90], [NAN, 0, 10, 10]]])
    layout = build_token_layout(full_masks(1), boxes, [0])
    tok = layout.vid_tokens[0] - layout.video_start
    # latent frame 0 = pixel frame 0: clipped box covers columns 0, rows 0..1
    assert tok[tok < 6].tolist() == [0, 3]
    # latent frame 1 = pixel frames 1..4: only the corner box of frame 3 is present
    assert tok[tok >= 6].tolist() == [6 + 5]


def test_latent_frame_is_the_union_of_the_pixel_frames_it_covers():
    boxes = torch.full((1, 9, 4), NAN)
    boxes[0, 4] = torch.tensor([0.0, 0, 8, 8])  # last pixel frame of latent frame 1
    boxes[0, 5] = torch.tensor([40.0, 20, 48, 32])  # first pixel frame of latent frame 2
    layout = build_token_layout(full_masks(1), boxes, [0])
    tok = layout.vid_tokens[0] - layout.video_start
    assert tok.tolist() == [6 + 0, 12 + 5]


def test_identity_tokens_are_the_union_of_its_tracks():
    boxes = torch.cat([still_boxes([0, 0, 16, 16], 1), still_boxes([32, 16, 48, 32], 1),
                       still_boxes([16, 0, 32, 16], 1)])
    layout = build_token_layout(full_masks(3), boxes, [0, 0, 1])
    vs = layout.video_start
    assert (layout.vid_tokens[0] - vs).tolist() == [0, 5]
    assert (layout.vid_tokens[1] - vs).tolist() == [1]
    assert layout.vid_tokens[2].numel() == 0  # identity without a track
    assert layout.identity_tracks == ((0, 1), (2,), ())


def test_candidates_list_identities_ascending_then_background():
    boxes = torch.cat([still_boxes([0, 0, 32, 16], 1), still_boxes([16, 0, 48, 32], 1)])
    layout = build_token_layout(full_masks(3), boxes, [2, 0])
    assert layout.candidates.tolist() == [
        [2, 3, -1], [0, 2, 3], [0, 3, -1], [3, -1, -1], [0, 3, -1], [0, 3, -1]
    ]
    assert layout.candidate_count.tolist() == [2, 3, 2, 1, 2, 2]


def test_video_groups_partition_the_video_by_candidate_set():
    boxes = torch.cat([still_boxes([0, 0, 32, 16], 1), still_boxes([16, 0, 48, 32], 1)])
    layout = build_token_layout(full_masks(2), boxes, [0, 1])
    vs = layout.video_start
    groups = {ids: (tok - vs).tolist() for ids, tok in layout.video_groups}
    assert groups == {(): [3], (0,): [0], (0, 1): [1], (1,): [2, 4, 5]}


def test_background_false_drops_the_reference_frame_but_keeps_the_video_background():
    layout = build_token_layout(full_masks(2), still_boxes([0, 0, 16, 16], 1).repeat(2, 1, 1),
                                [0, 1], background=False)
    assert layout.bg_ref_tokens.numel() == 0
    assert layout.video_start == 12 and layout.num_tokens == 18
    assert layout.candidates[0].tolist() == [0, 1, 2]
    assert layout.candidates[1].tolist() == [2, -1, -1]


def test_soft_labels_are_occupancies_renormalised_over_candidates():
    masks = torch.zeros(2, 5, 32, 48, dtype=torch.bool)
    masks[0, 0, 0:16, 0:4] = True  # a quarter of token (0, 0) in frame 0
    masks[1, 0, 0:16, 0:8] = True  # half of it, overlapping the first
    masks[0, 1:, 0:16, 16:20] = True  # token (0, 1) in 4 pixel frames of latent frame 1
    boxes = torch.tensor([[0.0, 0, 32, 16]]).expand(2, 5, 4).clone()
    layout = build_token_layout(full_masks(2), boxes, [0, 1], track_masks=masks)
    # frame 0, token 0: id0 1/4, id1 1/2, background 1 - 1/2
    assert layout.soft_labels[0].tolist() == pytest.approx([0.2, 0.4, 0.4], abs=1e-6)
    # latent frame 1, token 1: id0 1/4, id1 0, background 3/4
    assert layout.soft_labels[6 + 1].tolist() == pytest.approx([0.25, 0.0, 0.75], abs=1e-6)
    sums = (layout.soft_labels * (layout.candidates >= 0)).sum(1)
    assert torch.allclose(sums, torch.ones_like(sums))


def test_soft_labels_are_uniform_when_no_candidate_occupies_the_patch():
    masks = torch.ones(1, 1, 32, 48, dtype=torch.bool)  # background occupancy 0 everywhere
    layout = build_token_layout(full_masks(2), still_boxes([0, 0, 16, 16], 1), [1], track_masks=masks)
    # token 1 has candidates {background} only; its occupancy is 0 -> uniform = 1
    assert layout.soft_labels[1].tolist() == [1.0, 0.0]
    assert layout.soft_labels[0].tolist() == [1.0, 0.0]  # identity 1 fully occupies token 0


def test_boxes_from_masks_gives_tight_xyxy_and_nan_for_empty():
    masks = torch.zeros(1, 2, 32, 48, dtype=torch.bool)
    masks[0, 0, 3:7, 10:21] = True
    boxes = boxes_from_masks(masks)
    assert boxes[0, 0].tolist() == [10.0, 3.0, 21.0, 7.0]
    assert all(math.isnan(v) for v in boxes[0, 1].tolist())


def test_layout_moves_to_a_device_and_summarises_its_groups():
    boxes = still_boxes([0, 0, 32, 16], 5)
    layout = build_token_layout(full_masks(1), boxes, [0]).to("cpu")
    text = repr(layout)
    assert "identity 0: tracks [0], ref 6 (+0 void), video 4" in text
    assert "L=24 tokens" in text


@pytest.mark.parametrize("frames", [4, 6, 8])
def test_frame_count_not_4n_plus_1_is_rejected_with_the_fix(frames):
    with pytest.raises(AnyCrowdError, match="4n\\+1"):
        build_token_layout(full_masks(1), torch.zeros(1, frames, 4), [0])


def test_size_not_multiple_of_16_is_rejected_with_a_size_to_use():
    with pytest.raises(AnyCrowdError, match="48x32"):
        build_token_layout(full_masks(1, 40, 50), torch.zeros(1, 5, 4), [0])


def test_binding_length_mismatch_suggests_a_binding():
    with pytest.raises(AnyCrowdError, match=r"binding=\[0, 1, 2\]"):
        build_token_layout(full_masks(3), torch.zeros(3, 5, 4), [0, 1])


def test_binding_to_a_missing_identity_is_rejected():
    with pytest.raises(AnyCrowdError, match="identities \\[2\\]"):
        build_token_layout(full_masks(2), torch.zeros(2, 5, 4), [0, 2])


def test_empty_reference_mask_is_rejected():
    masks = full_masks(2)
    masks[1] = False
    with pytest.raises(AnyCrowdError, match="identities \\[1\\] are empty"):
        build_token_layout(masks, torch.zeros(2, 5, 4), [0, 1])


def test_track_masks_must_match_boxes_frames_and_frame_size():
    boxes = still_boxes([0, 0, 16, 16], 5)
    with pytest.raises(AnyCrowdError, match="like track_boxes"):
        build_token_layout(full_masks(1), boxes, [0], track_masks=torch.ones(1, 9, 32, 48, dtype=torch.bool))
    with pytest.raises(AnyCrowdError, match="resize the driving video"):
        build_token_layout(full_masks(1), boxes, [0], track_masks=torch.ones(1, 5, 64, 48, dtype=torch.bool))


def test_xywh_looking_boxes_are_rejected():
    with pytest.raises(AnyCrowdError, match="xyxy"):
        build_token_layout(full_masks(1), still_boxes([30, 20, 10, 10], 1), [0])
